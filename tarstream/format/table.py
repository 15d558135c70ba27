"""A sidecar's arrays as lists, for reading a shard through it (``tarstream.format.sliced``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .packed import BLOCK_FIELD, FAST_BLOCK, PACKED_FIELD
from .sidecar import ShardIndex, block_spans

__all__ = ["SliceTable", "block_table"]


@dataclass(frozen=True)
class SliceTable:
    """A sidecar's arrays as lists, for per-sample indexing at Python speed (building it
    costs a pass over the sidecar: random access keeps one per shard)."""

    offsets: list[int]
    mstart: list[int]
    mfield: list[int]
    moff: list[int]
    msize: list[int]
    crcs: list[int] | None
    #: The field names samples get (lower-cased where asked), and whether two fields of
    #: the shard became one name (then each sample is checked for a repeated field).
    names: list[str]
    merged: bool
    lowercase: bool = False
    #: The field number of block elements (-1: none), and the name of a packed member.
    block: int = -1
    packed: str = PACKED_FIELD
    #: Whether every sample is an element of a block (``_elements`` reads them).
    elements_only: bool = False
    #: The fields packed members may hold (the sidecar's ``packed_fields``).
    packed_fields: frozenset[str] = frozenset()
    #: Where blocks are read whole (``tarstream.format.blocks``): the samples that start
    #: them, then the sample count; each one's CRC-32. Else empty.
    starts: list[int] = field(default_factory=list)
    block_crcs: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, index: ShardIndex, *, verify: bool, lowercase: bool = False) -> SliceTable:
        names = [f.lower() for f in index.fields] if lowercase else list(index.fields)
        elements_only = index.fields == [BLOCK_FIELD]
        starts, block_crcs = block_table(index, verify) if elements_only else ([], [])
        return cls(
            index.offsets.tolist(),
            index.member_start.tolist(),
            index.member_field.tolist(),
            index.member_offset.tolist(),
            index.member_size.tolist(),
            index.checksums.tolist() if verify and index.checksums is not None else None,
            names,
            len(set(names)) < len(names),
            lowercase,
            index.fields.index(BLOCK_FIELD) if BLOCK_FIELD in index.fields else -1,
            elements_only=elements_only,
            packed_fields=frozenset(index.packed_fields),
            starts=starts,
            block_crcs=block_crcs,
        )


def block_table(index: ShardIndex, verify: bool) -> tuple[list[int], list[int]]:
    """(the samples that start blocks, then the shard's sample count; each block's CRC-32)
    where a shard's blocks can be read whole (``verify``, block checksums in the sidecar,
    msgspec: ``tarstream.format.blocks``), else two empty lists."""
    if not verify or index.block_checksums is None or FAST_BLOCK is None:
        return [], []
    return [b for b, _ in block_spans(index)] + [index.count], index.block_checksums.tolist()
