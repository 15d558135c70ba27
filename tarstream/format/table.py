"""A sidecar's arrays as lists, for reading a shard through it (``tarstream.format.sliced``)."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .packed import BLOCK_FIELD, FAST_BLOCK, PACKED_FIELD
from .sidecar import ShardIndex

__all__ = ["SliceTable"]


class SliceTable:
    """A sidecar's arrays as lists, for per-sample indexing at Python speed (building it
    costs a pass over the sidecar: random access keeps one per shard). The members' lists
    are made when first used: a shard whose blocks are all read whole needs none."""

    def __init__(self, index: ShardIndex, *, verify: bool, lowercase: bool = False) -> None:
        self.index, self.verify = index, verify
        self.offsets: list[int] = index.offsets.tolist()
        #: The field names samples get (lower-cased where asked), and whether two fields of
        #: the shard became one name (then each sample is checked for a repeated field).
        self.names = [f.lower() for f in index.fields] if lowercase else list(index.fields)
        self.merged = len(set(self.names)) < len(self.names)
        self.lowercase = lowercase
        #: The field number of block elements (-1: none), and the name of a packed member.
        self.block = index.fields.index(BLOCK_FIELD) if BLOCK_FIELD in index.fields else -1
        self.packed = PACKED_FIELD
        #: Whether every sample is an element of a block (``_elements`` reads them).
        self.elements_only = index.fields == [BLOCK_FIELD]
        #: The fields packed members may hold (the sidecar's ``packed_fields``).
        self.packed_fields = frozenset(index.packed_fields)
        #: Where blocks are read whole (``tarstream.format.blocks``): the samples that
        #: start them, then the sample count; each one's CRC-32, and where its elements
        #: start and end. Else empty.
        self.starts: list[int] = []
        self.block_crcs: list[int] = []
        self.elements_from: list[int] = []
        self.elements_to: list[int] = []
        if self.elements_only and verify and index.block_checksums is not None and FAST_BLOCK:
            spans = np.array(index.blocks, dtype=np.int64).reshape(-1, 2)
            self.starts = [*spans[:, 0].tolist(), index.count]
            self.block_crcs = index.block_checksums.tolist()
            self.elements_from = index.member_offset[spans[:, 0]].tolist()
            last = spans[:, 1] - 1
            self.elements_to = (index.member_offset[last] + index.member_size[last]).tolist()

    @classmethod
    def of(cls, index: ShardIndex, *, verify: bool, lowercase: bool = False) -> SliceTable:
        return cls(index, verify=verify, lowercase=lowercase)

    @cached_property
    def mstart(self) -> list[int]:
        values: list[int] = self.index.member_start.tolist()
        return values

    @cached_property
    def mfield(self) -> list[int]:
        values: list[int] = self.index.member_field.tolist()
        return values

    @cached_property
    def moff(self) -> list[int]:
        values: list[int] = self.index.member_offset.tolist()
        return values

    @cached_property
    def msize(self) -> list[int]:
        values: list[int] = self.index.member_size.tolist()
        return values

    @cached_property
    def crcs(self) -> list[int] | None:
        """Each sample's CRC-32, where recorded and verified (None: not checked)."""
        checksums = self.index.checksums
        if not self.verify or checksums is None:
            return None
        values: list[int] = checksums.tolist()
        return values
