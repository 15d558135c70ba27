"""The per-shard sidecar (see FORMAT.md): what a reader knows before opening a shard.

A sidecar lives in a hidden folder beside its shard, ``DIR/.tarstream/NAME.idx`` for
``DIR/NAME`` (``sidecar_url``), where tools that read a directory of shards (Hugging Face
``datasets``, Ray Data) do not look and where Megatron-Energon's own ``NAME.idx`` cannot
collide with it; before, it sat beside the shard (``legacy_sidecar_url``), where readers still
find it. It is a msgpack map holding
the shard's byte size and SHA-256, its samples' keys and header offsets, and for every
member its field, data offset and size, so a reader can know the epoch length without
opening tars, seek to sample *i*, slice members without parsing headers, and detect a
truncated or swapped shard. Version 1 describes plain shards; version 2 shards with packed
members (``tarstream.format.packed``), where a sample in a block has its element as its one
member and need not start on a 512-byte block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from operator import lt
from typing import Any

import msgpack
import numpy as np

from ..errors import SidecarError
from .keys import unsafe_key
from .layout import layout_problem
from .packed import BLOCK_FIELD, RESERVED_FIELDS

__all__ = [
    "SIDECAR_DIR",
    "SIDECAR_SUFFIX",
    "ShardIndex",
    "block_spans",
    "legacy_sidecar_url",
    "sidecar_url",
]

SIDECAR_SUFFIX = ".idx"
#: The folder beside the shards that holds their sidecars.
SIDECAR_DIR = ".tarstream"
FORMAT_NAME = "tarstream.shard-index"
FORMAT_VERSION = 2
#: Sidecars of shards without packed members keep version 1 (readers before packing read them).
PLAIN_VERSION = 1

_BLOCK = 512
_U64 = np.dtype("<u8")
_U32 = np.dtype("<u4")
_U16 = np.dtype("<u2")


def sidecar_url(shard_url: str, folder: str = SIDECAR_DIR, suffix: str = SIDECAR_SUFFIX) -> str:
    """Return where the sidecar of ``shard_url`` (a path or URL) lives: in ``folder`` beside
    it ("": beside it, as before the folder).

    >>> sidecar_url("s3://b/d/train-000001.tar"), sidecar_url("x.tar", "")
    ('s3://b/d/.tarstream/train-000001.tar.idx', 'x.tar.idx')
    """
    if not folder:
        return shard_url + suffix
    head, slash, name = shard_url.rpartition("/")
    return f"{head}{slash}{folder}/{name}{suffix}"


def legacy_sidecar_url(shard_url: str) -> str:
    """Where sidecars were written before ``SIDECAR_DIR``: beside the shard."""
    return sidecar_url(shard_url, "")


@dataclass(frozen=True, eq=False)
class ShardIndex:
    """What a sidecar records about one shard.

    ``offsets[i]`` is the byte offset of sample *i*'s first header (an extended header
    where the sample starts with one) and ``offsets[count]`` the offset of the
    end-of-archive marker. Sample *i* owns members ``member_start[i]:member_start[i+1]``;
    member *m* is field ``fields[member_field[m]]`` with ``member_size[m]`` bytes of data
    at ``member_offset[m]``. ``checksums[i]`` (where recorded) is the CRC-32 of every byte
    of sample *i*, ``offsets[i]:offsets[i+1]``: its headers, data and padding.
    """

    shard: str
    size: int
    sha256: str
    keys: list[str]
    fields: list[str]
    offsets: np.ndarray
    member_start: np.ndarray
    member_field: np.ndarray
    member_offset: np.ndarray
    member_size: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    checksums: np.ndarray | None = None
    #: The fields held in packed members (``tarstream.format.packed``), sorted.
    packed_fields: list[str] = field(default_factory=list)
    #: Where recorded, the CRC-32 of each block member's bytes (header, data, padding), in
    #: shard order: its samples' bytes at once (``blocks`` says which samples each holds).
    block_checksums: np.ndarray | None = None
    #: Where recorded (shards without blocks), the CRC-32 of the shard's bytes from its
    #: start to ``offsets[i]``, for each *i* to ``count``: any run of samples is checked in
    #: one piece against two of them (``checksum.crc32_combine``).
    running_checksums: np.ndarray | None = None

    @property
    def count(self) -> int:
        """Number of samples in the shard."""
        return len(self.keys)

    @property
    def packed(self) -> bool:
        """Whether the shard has packed members (a version 2 sidecar)."""
        return not RESERVED_FIELDS.isdisjoint(self.fields)

    @cached_property
    def blocks(self) -> list[tuple[int, int]]:
        """Each block member's samples, ``(first, after the last)`` (``block_spans``)."""
        return block_spans(self)

    @property
    def sample_fields(self) -> list[str]:
        """The fields its samples have, sorted: its members' and those packed in them."""
        if not self.packed:
            return list(self.fields)
        return sorted(set(self.fields).difference(RESERVED_FIELDS).union(self.packed_fields))

    @classmethod
    def build(
        cls,
        shard: str,
        size: int,
        sha256: str,
        samples: Sequence[tuple[str, int, Sequence[tuple[str, int, int]]]],
        end_offset: int,
        checksums: Sequence[int] | None = None,
        packed_fields: Iterable[str] = (),
        block_checksums: Sequence[int] | None = None,
        running_checksums: Sequence[int] | None = None,
    ) -> ShardIndex:
        """Build a sidecar from ``(key, header_offset, [(field, data_offset, size), ...])``
        and, where known, each sample's CRC-32 (and the fields in its packed members, each
        block member's CRC-32: none recorded where there are no blocks, and the running
        CRC-32 at each offset: recorded only where there are none)."""
        fields = sorted({f for _, _, members in samples for f, _, _ in members})
        field_no = {f: i for i, f in enumerate(fields)}
        starts = [0]
        mfield: list[int] = []
        moff: list[int] = []
        msize: list[int] = []
        for _, _, members in samples:
            for f, off, n in members:
                mfield.append(field_no[f])
                moff.append(off)
                msize.append(n)
            starts.append(len(mfield))
        return cls(
            shard=shard,
            size=size,
            sha256=sha256,
            keys=[k for k, _, _ in samples],
            fields=fields,
            offsets=np.array([o for _, o, _ in samples] + [end_offset], dtype=_U64),
            member_start=np.array(starts, dtype=_U64),
            member_field=np.array(mfield, dtype=_U16),
            member_offset=np.array(moff, dtype=_U64),
            member_size=np.array(msize, dtype=_U64),
            checksums=None if checksums is None else np.array(checksums, dtype=_U32),
            packed_fields=sorted(packed_fields),
            block_checksums=(np.array(block_checksums, dtype=_U32) if block_checksums else None),
            running_checksums=(
                np.array(running_checksums, dtype=_U32)
                if running_checksums is not None and not block_checksums
                else None
            ),
        )

    def to_bytes(self) -> bytes:
        """Serialize to the sidecar's msgpack bytes: positions as 8-byte integers, or in a
        version 2 sidecar of a shard under 4 GiB as 4-byte ones (``width``)."""
        wide = _U64 if not self.packed or self.size >= 1 << 32 else _U32
        doc = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION if self.packed else PLAIN_VERSION,
            "shard": self.shard,
            "size": self.size,
            "sha256": self.sha256,
            "count": self.count,
            "fields": self.fields,
            "keys": self.keys,
            "offsets": self.offsets.astype(wide).tobytes(),
            "member_start": self.member_start.astype(wide).tobytes(),
            "member_field": self.member_field.astype(_U16).tobytes(),
            "member_offset": self.member_offset.astype(wide).tobytes(),
            "member_size": self.member_size.astype(wide).tobytes(),
            **({"extra": self.extra} if self.extra else {}),
            **(
                {"sample_crc32": self.checksums.astype(_U32).tobytes()}
                if self.checksums is not None
                else {}
            ),
            **(
                {"packed_fields": self.packed_fields, "width": wide.itemsize} if self.packed else {}
            ),
            **(
                {"block_crc32": self.block_checksums.astype(_U32).tobytes()}
                if self.block_checksums is not None
                else {}
            ),
            **(
                {"running_crc32": self.running_checksums.astype(_U32).tobytes()}
                if self.running_checksums is not None
                else {}
            ),
        }
        return bytes(msgpack.packb(doc, use_bin_type=True))

    @staticmethod
    def is_sidecar(data: bytes) -> bool:
        """Whether ``data`` claims to be a tarstream sidecar (its format field, which
        ``to_bytes`` writes first); another tool's file of the same name does not."""
        return FORMAT_NAME.encode() in data[:64]

    @classmethod
    def from_bytes(cls, data: bytes, *, url: str) -> ShardIndex:
        """Parse sidecar bytes; ``url`` (the sidecar's) is named in errors."""
        try:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several unrelated types on bad input
            raise SidecarError(f"not a valid sidecar (msgpack: {e})", shard=url) from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise SidecarError("not a tarstream sidecar (format field missing)", shard=url)
        if doc.get("version") not in (PLAIN_VERSION, FORMAT_VERSION):
            raise SidecarError(
                f"sidecar format version {doc.get('version')!r} is not supported "
                f"(this tarstream reads versions {PLAIN_VERSION} and {FORMAT_VERSION})",
                shard=url,
            )
        width = doc.get("width", 8)
        widths: dict[object, np.dtype[Any]] = {4: _U32, 8: _U64}
        wide = widths.get(width) if type(width) is int else None
        if wide is None:
            raise SidecarError(f"sidecar has integers of width {width!r}", shard=url)
        try:
            index = cls(
                shard=str(doc["shard"]),
                size=int(doc["size"]),
                sha256=str(doc["sha256"]),
                keys=list(doc["keys"]),
                fields=list(doc["fields"]),
                offsets=np.frombuffer(doc["offsets"], dtype=wide),
                member_start=np.frombuffer(doc["member_start"], dtype=wide),
                member_field=np.frombuffer(doc["member_field"], dtype=_U16),
                member_offset=np.frombuffer(doc["member_offset"], dtype=wide),
                member_size=np.frombuffer(doc["member_size"], dtype=wide),
                extra=dict(doc.get("extra", {})),
                checksums=(
                    np.frombuffer(doc["sample_crc32"], dtype=_U32)
                    if "sample_crc32" in doc
                    else None
                ),
                packed_fields=[str(f) for f in doc.get("packed_fields", ())],
                block_checksums=(
                    np.frombuffer(doc["block_crc32"], dtype=_U32) if "block_crc32" in doc else None
                ),
                running_checksums=(
                    np.frombuffer(doc["running_crc32"], dtype=_U32)
                    if "running_crc32" in doc
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SidecarError(f"sidecar is missing or has a bad entry: {e}", shard=url) from e
        index.check(url)
        return index

    def check(self, url: str) -> None:
        """Raise SidecarError unless the sidecar describes a possible shard: arrays that
        agree with the sample count, samples and members in order inside the shard, no
        member overlapping a header or another member, and unique keys that are safe as
        paths. A sidecar is input, like the shard: it may be stale, damaged or made up."""
        n = self.count
        members = len(self.member_field)
        consistent = (
            len(self.offsets) == n + 1
            and len(self.member_start) == n + 1
            and int(self.member_start[-1]) == members
            and len(self.member_offset) == members
            and len(self.member_size) == members
            and (members == 0 or int(self.member_field.max()) < len(self.fields))
            and (self.checksums is None or len(self.checksums) == n)
            and (self.running_checksums is None or len(self.running_checksums) == n + 1)
        )
        if not consistent:
            raise SidecarError("sidecar arrays are inconsistent with its sample count", shard=url)
        arrays = (self.offsets, self.member_start, self.member_offset, self.member_size)
        problem = layout_problem(self.size, *arrays, _block_elements(self))
        problem = problem or _key_problem(self.keys)
        blocks = self.block_checksums
        if problem is None and blocks is not None and len(blocks) != len(self.blocks):
            problem = f"{len(blocks)} block checksums for {len(self.blocks)} blocks"
        if problem is not None:
            raise SidecarError(f"sidecar does not describe a valid shard: {problem}", shard=url)


def block_spans(index: ShardIndex) -> list[tuple[int, int]]:
    """Each block member's samples, ``(first, after the last)``, in order: a block starts
    with a sample whose element follows the block's header, and holds the samples after it
    that start at their element (``ShardIndex.blocks`` keeps them)."""
    first = index.member_start[:-1]
    if BLOCK_FIELD not in index.fields or not len(first):
        return []
    in_block = index.member_field[first] == index.fields.index(BLOCK_FIELD)
    headed = index.offsets[:-1] + _BLOCK <= index.member_offset[first]
    starts = np.flatnonzero(in_block & headed)
    others = np.append(np.flatnonzero(~in_block | headed), index.count)
    ends = others[np.searchsorted(others, starts, side="right")]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _block_elements(index: ShardIndex) -> np.ndarray:
    """Whether each member is an element of a block (``tarstream.format.packed``)."""
    if BLOCK_FIELD not in index.fields:
        return np.zeros(len(index.member_field), dtype=bool)
    return np.asarray(index.member_field == index.fields.index(BLOCK_FIELD))


def _key_problem(keys: list[str]) -> str | None:
    # keys in increasing order (as most writers leave them) are unique: compared in C,
    # in half the time of hashing them all
    if not all(map(lt, keys, islice(keys, 1, None))) and len(set(keys)) != len(keys):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                return f"key {key!r} appears twice"
            seen.add(key)
    joined = "\x00".join(keys)  # screened at C speed; the loop names the culprit
    if joined.count("\x00") == max(len(keys) - 1, 0) and not _unsafe_in(joined):
        return None
    for key in keys:
        unsafe = unsafe_key(key)
        if unsafe is not None:
            return f"key {key!r} is unsafe as a path: {unsafe}"
    return None


#: What ``unsafe_key`` refuses, in keys joined by NUL: a leading "/", a ".." component.
_UNSAFE = re.compile(r"(?:^|\x00)/|(?:^|\x00|/)\.\.(?:/|\x00|$)")


def _unsafe_in(joined: str) -> bool:
    """Whether keys joined by NUL hold a leading "/" or a ".." component: substring
    searches first (a tenth of the regex's time on a shard's keys; a character's search
    first of all, a hundredth of a pair's), the regex where a ".." is found at all."""
    if "/" in joined and (joined.startswith("/") or "\x00/" in joined):
        return True
    return "." in joined and ".." in joined and _UNSAFE.search(joined) is not None
