"""What a read through a sidecar finds wrong: the errors it raises, naming the shard, the
sample or member and the offset (``tarstream.format.sliced``)."""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, BinaryIO

from ..errors import ShardFormatError, SidecarError, TruncatedShardError
from .header import BLOCK, ZERO_BLOCK
from .scan import DEFAULT_READ_SIZE, read_exact
from .sidecar import ShardIndex
from .table import SliceTable

__all__ = ["check_end", "check_name", "crc_error", "raise_merged", "raise_size_mismatch"]


def crc_error(
    url: str, index: ShardIndex, offsets: list[int], s: int, field: str
) -> ShardFormatError:
    """The error of sample ``s``, whose bytes do not match the checksum its sidecar records."""
    key = index.keys[s]
    return ShardFormatError(
        f"sample {key!r} (bytes {offsets[s]}..{offsets[s + 1]}) does not match the "
        "checksum its sidecar records: the shard is corrupt, or was replaced and the "
        "sidecar is stale",
        shard=url,
        member=f"{key}.{field}",
        offset=offsets[s],
    )


def check_name(url: str, chunk: Any, header: int, base: int, name: str) -> None:
    """Check the name in the header at byte ``header`` (``chunk`` starts at ``base``)
    against the sidecar's ``name``.

    The ustar name field holds the name only when it is short ASCII; otherwise it is in a
    PAX record (checked by the sample's checksum) and the field holds a stand-in."""
    expect = f"{name}\x00".encode("utf-8", "surrogateescape")
    at = header - base
    if len(expect) <= 100 and expect.isascii() and not chunk.startswith(expect, at):
        found = bytes(chunk[at : at + 100]).split(b"\x00", 1)[0]
        raise SidecarError(
            f"shard does not match its sidecar: expected member {expect[:-1]!r}, "
            f"found {found!r} (shard replaced or sidecar stale)",
            shard=url,
            member=name,
            offset=header,
        )


def raise_merged(url: str, key: str, names: list[str]) -> None:
    """Raise for sample ``key``, whose field ``names`` become one when lower-cased."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    raise ShardFormatError(
        f"fields of sample {key!r} differ only in case and become one field {repeated} when "
        "lower-cased; read with lowercase_fields=False to keep them apart",
        shard=url,
        member=f"{key}.{repeated[0]}",
    )


def check_end(f: BinaryIO, url: str, index: ShardIndex, end: int, size_known: bool) -> None:
    """Check the end-of-archive marker at ``end`` (``f`` is there) and, where the shard's
    size was not known before, that the shard has the size its sidecar records."""
    marker = read_exact(f, BLOCK)
    if marker != ZERO_BLOCK:
        if len(marker) < BLOCK:
            raise TruncatedShardError(
                "shard ends without the end-of-archive marker its sidecar records",
                shard=url,
                offset=end + len(marker),
            )
        raise SidecarError(
            "shard does not match its sidecar: no end-of-archive marker after the last sample",
            shard=url,
            offset=end,
        )
    if size_known:
        return
    total = end + BLOCK
    while more := f.read(DEFAULT_READ_SIZE):
        total += len(more)
    if total < index.size:
        raise TruncatedShardError(
            f"shard is truncated: {total} of {index.size} bytes present", shard=url, offset=total
        )
    if total != index.size:
        raise SidecarError(
            f"shard is {total} bytes, its sidecar says {index.size}", shard=url, offset=total
        )


def raise_size_mismatch(url: str, index: ShardIndex, size: int, table: SliceTable) -> None:
    """Raise for a shard of ``size`` bytes whose sidecar records another size: truncated
    (naming the first sample and member not whole), or replaced."""
    if size > index.size:
        raise SidecarError(
            f"shard is {size} bytes, its sidecar says {index.size} (shard replaced or sidecar "
            "stale)",
            shard=url,
            offset=index.size,
        )
    s = max(bisect_right(table.offsets, size) - 1, 0)
    if s >= index.count:
        member = None
    else:
        m0, m1 = table.mstart[s], table.mstart[s + 1]
        m = max(m0, bisect_right(table.moff, size + BLOCK, m0, m1) - 1)
        member = f"{index.keys[s]}.{index.fields[table.mfield[m]]}"
    raise TruncatedShardError(
        f"shard is truncated: {size} of {index.size} bytes present "
        f"({s} of {index.count} samples complete)",
        shard=url,
        member=member,
        offset=size,
    )
