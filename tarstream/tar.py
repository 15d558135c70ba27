"""The tar reader: the only code in tarstream that parses tar.

Python's ``tarfile`` parses about 12k members/s in stream mode; this reader parses headers
from large buffered reads and reaches several hundred thousand. It verifies each header's
checksum, handles ustar prefixes, GNU long names and PAX headers, yields only regular
files (directories, links, devices and FIFOs are counted in ``ReadStats`` and skipped, never
followed), bounds member sizes before reading, and raises a typed error naming shard,
member and byte offset for a shard that is truncated, corrupt, or not a tar. With a sidecar
index it slices members at known offsets without parsing headers, still checking that the
shard matches the sidecar.

Each field is yielded as ``bytes``: one copy out of the large read buffer, so holding a
sample never pins a read buffer.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import BinaryIO

import numpy as np

from .errors import MemberTooLargeError, ShardFormatError, SidecarError, TruncatedShardError
from .index import ShardIndex
from .keys import split_member_name

__all__ = [
    "DEFAULT_MAX_MEMBER_SIZE",
    "DEFAULT_READ_SIZE",
    "ReadStats",
    "Run",
    "Sample",
    "build_index",
    "read_indexed_samples",
    "read_samples",
    "scan_members",
]

Sample = dict[str, object]
#: (name, offset of its first header, offset of its data, data)
Member = tuple[str, int, int, bytes]

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
DEFAULT_READ_SIZE = 2 << 20  # measured best on the small workload (cache-sized buffers)
DEFAULT_MAX_MEMBER_SIZE = 4 << 30

_REGULAR = frozenset({0, ord("0"), ord("7")})
_PAX = ord("x")
_PAX_GLOBAL = ord("g")
_GNU_LONGNAME = ord("L")
_GNU_LONGLINK = ord("K")
_SKIPPED_TYPES = {
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("3"): "char_device",
    ord("4"): "block_device",
    ord("5"): "directory",
    ord("6"): "fifo",
}
_POSIX_MAGIC = b"ustar\x00"


@dataclass
class ReadStats:
    """Counts of what a reader saw; ``skipped`` maps a reason to a member count."""

    shards: int = 0
    samples: int = 0
    members: int = 0
    bytes_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """Read ``n`` bytes, fewer only at end of file."""
    data = f.read(n)
    if len(data) >= n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _checksum_ok(hdr: bytes) -> bool:
    field_bytes = hdr[148:156]
    try:
        stored = int(field_bytes.split(b"\x00", 1)[0].strip() or b"0", 8)
    except ValueError:
        return False
    # adler32's low half is (1 + sum of bytes) mod 65521: a C-speed sum. Header sums are
    # below 2 * 65521, so a mismatch is exact and a match is wrong only for a corruption
    # that shifts the sum by exactly 65521.
    unsigned = (zlib.adler32(hdr) & 0xFFFF) - 1 - sum(field_bytes) + 8 * 32
    if (unsigned - stored) % 65521 == 0:
        return True
    exact = sum(hdr) - sum(field_bytes) + 8 * 32
    signed = exact - 256 * sum(1 for b in hdr if b > 127)
    return stored in (exact, signed)


def _parse_number(raw: bytes) -> int:
    if raw[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        value = int.from_bytes(raw[1:], "big")
        return -value if raw[0] & 0x40 else value
    return int(raw.split(b"\x00", 1)[0].strip() or b"0", 8)


def _parse_name(hdr: bytes) -> str:
    name = hdr[:100].split(b"\x00", 1)[0]
    if hdr[257:263] == _POSIX_MAGIC and hdr[345]:
        name = hdr[345:500].split(b"\x00", 1)[0] + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _parse_pax(data: bytes) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos]:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= space - pos or not data[pos + length - 1 : pos + length] == b"\n":
            raise ValueError("record length does not end at a newline")
        key, eq, value = data[space + 1 : pos + length - 1].partition(b"=")
        if not eq:
            raise ValueError("record without '='")
        records[key.decode("utf-8")] = value
        pos += length
    return records


_OCT11 = 8 ** np.arange(10, -1, -1, dtype=np.int64)
_OCT6 = 8 ** np.arange(5, -1, -1, dtype=np.int64)
_FAST_MIN_BLOCKS = 64
_FAST_COOLDOWN = 32  # members parsed one by one after a run could not be parsed in bulk
_POSITIONS = np.arange(100)
_USTAR = np.frombuffer(b"ustar", np.uint8)
#: PAX records the bulk path cannot pass over (they change the member or its data).
_PAX_NEEDS_CARE = re.compile(rb"(?:^|\n)\d+ (?:path|size|linkpath|GNU\.sparse[.\w]*)=")
_MTIME_RECORD = np.frombuffer(b"mtime=", np.uint8).astype(np.int64)


@dataclass(frozen=True)
class Run:
    """Regular members parsed in bulk from one read buffer (see ``_bulk_run``).

    Member *i*'s header is at ``buf[header[i]]`` with a name of ``name_len[i]`` bytes whose
    key is the first ``key_len[i]``; its first header (a PAX header where it has one) is
    at ``start[i]``; its ``size[i]`` bytes of data follow the header; its field is
    ``fields[field_id[i]]``, its data ``buf[data_start[i]:data_end[i]]``. Members
    ``bounds[j]:bounds[j+1]`` share a key. Every member
    of a run has a field and none is reserved. Offsets are in ``buf``; ``base`` is the
    file offset of ``buf[0]``.
    """

    buf: bytes
    base: int
    header: list[int]
    start: list[int]
    size: list[int]
    name_len: list[int]
    key_len: list[int]
    field_id: list[int]
    fields: list[str]
    bounds: list[int]
    data_start: list[int]
    data_end: list[int]

    def members(self) -> list[Member]:
        buf, base = self.buf, self.base
        return [
            (
                buf[h : h + n].decode("utf-8", "surrogateescape"),
                base + s,
                base + h + BLOCK,
                buf[h + BLOCK : h + BLOCK + z],
            )
            for h, s, z, n in zip(self.header, self.start, self.size, self.name_len, strict=True)
        ]


def _first_false(flags: np.ndarray) -> int:
    return len(flags) if flags.all() else int(np.argmin(flags))


def _bulk_run(buf: bytes, pos: int, base: int, max_member_size: int) -> tuple[Run | None, int]:
    """Parse the run of plain members at ``buf[pos:]`` with numpy; return it and the new pos.

    Headers are found by their ustar magic and each must link to the next by its size, so
    a data block that happens to look like a header ends the run instead of misleading it.
    The run handles the common case only, checked for every header: a regular file (or a
    PAX header whose records leave the member's name and size alone, as webdataset writes
    for float mtimes) with an 11-digit octal size within ``max_member_size``, no ustar
    prefix, a 6-digit octal checksum equal to the header's unsigned byte sum, a name with a
    field that is not reserved, and data that ends inside ``buf``. It stops before the first
    header that is anything else; the per-header parser handles or reports that one.
    """
    n = (len(buf) - pos) // BLOCK
    if n < _FAST_MIN_BLOCKS:
        return None, pos
    blocks = np.frombuffer(buf, np.uint8, count=n * BLOCK, offset=pos).reshape(n, BLOCK)
    at = np.flatnonzero(blocks[:, 257] == _USTAR[0])
    at = at[(blocks[at, 258:262] == _USTAR[1:]).all(1)]
    if not len(at) or at[0] != 0:
        return None, pos
    rows = blocks[at]
    digits = rows[:, 124:135] - np.uint8(48)  # wraps below '0', so one test checks the range
    sizes = digits @ _OCT11
    nxt = at + 1 + (sizes + BLOCK - 1) // BLOCK
    typeflag = rows[:, 156]
    is_pax = typeflag == _PAX
    check = rows[:, 148:154] - np.uint8(48)
    ok = (digits <= 7).all(1) & ((rows[:, 135] == 0) | (rows[:, 135] == 32))
    ok &= (typeflag == 48) | (typeflag == 0) | is_pax
    ok &= (rows[:, 345] == 0) & (sizes <= max_member_size) & (nxt <= n)
    ok &= (check <= 7).all(1) & (rows[:, 154] == 0)
    # uint32 sums: no large temporaries (they cost page faults, which dominate here)
    sums = rows.sum(1, dtype=np.uint32).astype(np.int64)
    ok &= check @ _OCT6 == sums - rows[:, 148:156].sum(1, dtype=np.int64) + 256
    # a PAX header must be small and be followed by the regular member it describes
    ok &= ~is_pax | ((sizes <= BLOCK) & ~np.append(is_pax[1:], True))
    # Names are examined on the regular rows only, and only as wide as the longest name.
    regular_rows = np.flatnonzero(~is_pax)
    names = rows[regular_rows, :100]
    nul = names == 0
    name_len = np.where(nul.any(1), nul.argmax(1), 100)
    width = int(name_len.max()) if len(name_len) else 1
    names = names[:, :width]
    positions = _POSITIONS[:width]
    slash = np.where((names == 47).any(1), width - 1 - (names[:, ::-1] == 47).argmax(1), -1)
    dots = (names == 46) & (positions > slash[:, None])
    dot = np.where(dots.any(1), dots.argmax(1), -1)
    lines = np.arange(len(regular_rows))
    after_dot = (
        names[lines, np.minimum(dot + 1, width - 1)],
        names[lines, np.minimum(dot + 2, width - 1)],
    )
    reserved = (after_dot[0] == 95) & (after_dot[1] == 95)
    ok[regular_rows] &= (dot > slash + 1) & (dot < name_len - 1) & ~reserved
    linked = np.append(nxt[:-1] == at[1:], True)
    keep = min(_first_false(ok), _first_false(linked) + 1)
    pax_rows = np.flatnonzero(is_pax[:keep])
    if len(pax_rows):
        # Common case in bulk: a single "NN mtime=..." record (webdataset's float mtimes).
        head = blocks[at[pax_rows] + 1, :9].astype(np.int64)
        only_mtime = (head[:, 2] == 32) & (head[:, 3:9] == _MTIME_RECORD).all(1)
        only_mtime &= (head[:, 0] - 48) * 10 + head[:, 1] - 48 == sizes[pax_rows]
        for row in pax_rows[~only_mtime].tolist():
            o = pos + int(at[row]) * BLOCK + BLOCK
            if _PAX_NEEDS_CARE.search(buf[o : o + int(sizes[row])]):
                keep = row
                break
    if keep and is_pax[keep - 1]:
        keep -= 1
    if keep == 0:
        return None, pos
    kept = int(np.searchsorted(regular_rows, keep))
    regular = regular_rows[:kept]
    header = pos + at[regular] * BLOCK
    preceded = np.zeros(kept, dtype=bool)
    preceded[regular > 0] = is_pax[regular[regular > 0] - 1]
    key_len, name_len, names = dot[:kept], name_len[:kept], names[:kept]
    keyed = np.where(positions < key_len[:, None], names, 0)
    new_key = np.ones(kept, dtype=bool)
    new_key[1:] = (keyed[1:] != keyed[:-1]).any(1)
    field_width = int((name_len - key_len - 1).max())
    columns = np.minimum(key_len[:, None] + 1 + np.arange(field_width), width - 1)
    field_bytes = np.where(
        columns < name_len[:, None], names[np.arange(kept)[:, None], columns], 0
    ).astype(np.uint8)
    unique, field_id = np.unique(
        np.ascontiguousarray(field_bytes).view(np.dtype((np.void, field_width))).ravel(),
        return_inverse=True,
    )
    last = int(at[keep - 1])
    run = Run(
        buf=buf,
        base=base,
        header=header.tolist(),
        start=np.where(preceded, header - 2 * BLOCK, header).tolist(),
        size=sizes[regular].tolist(),
        name_len=name_len.tolist(),
        key_len=key_len.tolist(),
        field_id=field_id.ravel().tolist(),
        fields=[u.tobytes().rstrip(b"\x00").decode("utf-8", "surrogateescape") for u in unique],
        bounds=[*np.flatnonzero(new_key).tolist(), kept],
        data_start=(header + BLOCK).tolist(),
        data_end=(header + BLOCK + sizes[regular]).tolist(),
    )
    return run, pos + int(nxt[keep - 1] - at[keep - 1] + last) * BLOCK


def _refill(
    f: BinaryIO, buf: bytes, base: int, pos: int, need: int, read_size: int, stats: ReadStats
) -> tuple[bytes, int, int]:
    """Return ``(buf, base, pos)`` with at least ``need`` bytes from ``pos`` unless at EOF.

    With nothing left over, one large read becomes the new buffer as it is. With a partial
    header or member left over, only the bytes that complete it are read and joined to it,
    so large buffers are never copied; the next refill starts a fresh large read.
    """
    rest = len(buf) - pos
    if rest == 0:
        more = _read_exact(f, max(read_size, need))
        stats.bytes_read += len(more)
        return more, base + pos, 0
    more = _read_exact(f, need - rest)
    stats.bytes_read += len(more)
    return buf[pos:] + more, base + pos, 0


def scan_members(
    f: BinaryIO,
    shard: str,
    *,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    read_size: int = DEFAULT_READ_SIZE,
    stats: ReadStats | None = None,
) -> Generator[Run | list[Member], None, int]:
    """Yield the regular files of a tar stream, in order, as bulk-parsed runs or lists.

    A list holds ``(name, start, data_offset, data)`` tuples; a ``Run`` gives the same
    through ``Run.members()`` and, for speed, as arrays over its read buffer.

    ``start`` is the offset of the member's first header (an extended header where it has
    one). Stops at the end-of-archive marker after checking that only zeros follow it, and
    returns the marker's offset.

    Raises:
        ShardFormatError: not a tar, a corrupt header, data after the end marker.
        TruncatedShardError: the stream ends inside a header or member, or without the
            end-of-archive marker.
        MemberTooLargeError: a member declares more than ``max_member_size`` bytes.
    """
    stats = stats if stats is not None else ReadStats()
    buf = b""
    pos = 0
    base = 0  # file offset of buf[0]
    start: int | None = None
    pax: dict[str, bytes] = {}
    long_name: str | None = None
    last_name: str | None = None
    cooldown = 0
    while True:
        if len(buf) - pos < BLOCK:
            buf, base, pos = _refill(f, buf, base, pos, BLOCK, read_size, stats)
            if len(buf) < BLOCK:
                offset = base + len(buf)
                what = "inside a header" if buf else "without the end-of-archive marker"
                raise TruncatedShardError(
                    f"shard ends {what} (truncated after the previous member?)",
                    shard=shard,
                    member=last_name,
                    offset=offset,
                )
        if start is None and cooldown <= 0 and len(buf) - pos >= _FAST_MIN_BLOCKS * BLOCK:
            run, pos = _bulk_run(buf, pos, base, max_member_size)
            if run is not None:
                stats.members += len(run.header)
                h = run.header[-1]
                last_name = buf[h : h + run.name_len[-1]].decode("utf-8", "surrogateescape")
                yield run
                continue
            cooldown = _FAST_COOLDOWN
        cooldown -= 1
        hdr = buf[pos : pos + BLOCK]
        offset = base + pos
        if hdr == _ZERO_BLOCK:
            if start is not None:
                raise ShardFormatError(
                    "extended header is not followed by a member", shard=shard, offset=offset
                )
            _check_tail(f, buf[pos:], offset, shard, last_name)
            return offset
        if not _checksum_ok(hdr):
            if offset == 0:
                raise ShardFormatError(
                    "not a tar archive (header checksum mismatch)", shard=shard, offset=0
                )
            raise ShardFormatError(
                f"corrupt header (checksum mismatch; previous member {last_name!r})",
                shard=shard,
                member=hdr[:100].split(b"\x00", 1)[0].decode("utf-8", "replace"),
                offset=offset,
            )
        typeflag = hdr[156]
        name = long_name if long_name is not None else _parse_name(hdr)
        try:
            size = _parse_number(hdr[124:136])
            if "path" in pax:
                name = pax["path"].decode("utf-8", "surrogateescape")
            if "size" in pax:
                size = int(pax["size"])
        except ValueError as e:
            raise ShardFormatError(
                f"corrupt header: bad size field ({e})", shard=shard, member=name, offset=offset
            ) from e
        if size < 0 or size > max_member_size:
            raise MemberTooLargeError(
                f"member size {size} is outside the limit 0..{max_member_size} (max_member_size)",
                shard=shard,
                member=name,
                offset=offset,
            )
        if start is None:
            start = offset
        need = BLOCK + ((size + BLOCK - 1) & ~(BLOCK - 1))
        if len(buf) - pos < need:
            buf, base, pos = _refill(f, buf, base, pos, need, read_size, stats)
            if len(buf) < BLOCK + size:
                raise TruncatedShardError(
                    f"shard ends inside member data ({len(buf) - BLOCK} of {size} bytes present)",
                    shard=shard,
                    member=name,
                    offset=base + len(buf),
                )
            if len(buf) < need:
                raise TruncatedShardError(
                    "shard ends inside the padding after member data",
                    shard=shard,
                    member=name,
                    offset=base + len(buf),
                )
        data = buf[pos + BLOCK : pos + BLOCK + size]
        pos += need
        if typeflag in _REGULAR and not name.endswith("/"):
            stats.members += 1
            yield [(name, start, offset + BLOCK, data)]
            last_name, start, pax, long_name = name, None, {}, None
        elif typeflag == _PAX:
            try:
                pax = _parse_pax(data)
            except (ValueError, UnicodeDecodeError) as e:
                raise ShardFormatError(
                    f"corrupt PAX header ({e})", shard=shard, member=name, offset=offset
                ) from e
        elif typeflag == _GNU_LONGNAME:
            long_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
        elif typeflag == _GNU_LONGLINK:
            pass  # the link target of a link member that follows; the link is skipped
        else:
            reason = _SKIPPED_TYPES.get(typeflag, "directory" if typeflag in _REGULAR else "other")
            reason = "pax_global" if typeflag == _PAX_GLOBAL else reason
            stats.skipped[reason] += 1
            last_name, start, pax, long_name = name, None, {}, None


def _check_tail(f: BinaryIO, tail: bytes, offset: int, shard: str, last_name: str | None) -> None:
    """Check that only zero bytes follow the end-of-archive marker at ``offset``."""
    position = offset
    while tail:
        if tail.count(0) != len(tail):
            bad = position + next(i for i, b in enumerate(tail) if b)
            raise ShardFormatError(
                f"zero block at byte {offset} is followed by data (a zero block in the middle "
                "of the archive, or data appended after its end)",
                shard=shard,
                member=last_name,
                offset=bad,
            )
        position += len(tail)
        tail = f.read(DEFAULT_READ_SIZE)


def read_samples(
    f: BinaryIO,
    url: str,
    *,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    read_size: int = DEFAULT_READ_SIZE,
    stats: ReadStats | None = None,
) -> Iterator[Sample]:
    """Yield one dict per sample (``__key__``, ``__url__``, one bytes value per field).

    A sample is a run of adjacent members sharing a key. Members whose last component has
    no dot, or whose field is a reserved ``__x__`` name, are skipped and counted.
    """
    stats = stats if stats is not None else ReadStats()
    key: str | None = None
    sample: Sample | None = None
    for part in scan_members(
        f, url, max_member_size=max_member_size, read_size=read_size, stats=stats
    ):
        if isinstance(part, Run):
            # The hot loop: one key decode and dict per sample, one slice per member.
            buf, header, key_len = part.buf, part.header, part.key_len
            starts, ends = part.data_start, part.data_end
            names = [part.fields[i] for i in part.field_id]
            for b0, b1 in pairwise(part.bounds):
                h = header[b0]
                member_key = buf[h : h + key_len[b0]].decode("utf-8", "surrogateescape")
                if member_key != key:
                    if sample is not None:
                        stats.samples += 1
                        yield sample
                    key = member_key
                    sample = {"__key__": member_key, "__url__": url}
                expected = len(sample) + b1 - b0  # type: ignore[arg-type]
                for i in range(b0, b1):
                    sample[names[i]] = buf[starts[i] : ends[i]]  # type: ignore[index]
                if len(sample) != expected:  # type: ignore[arg-type]
                    _raise_repeated_field(url, part, b0, b1)
            continue
        for name, start, _, data in part:
            parts = split_member_name(name)
            if parts is None:
                stats.skipped["no_field"] += 1
                continue
            member_key, member_field = parts
            if member_key != key:
                if sample is not None:
                    stats.samples += 1
                    yield sample
                key = member_key
                sample = {"__key__": member_key, "__url__": url}
            if member_field.startswith("__"):
                stats.skipped["reserved_field"] += 1
                continue
            if member_field in sample:  # type: ignore[operator]
                raise repeated_field_error(url, member_key, member_field, start)
            sample[member_field] = data  # type: ignore[index]
    if sample is not None:
        stats.samples += 1
        yield sample
    stats.shards += 1


def _raise_repeated_field(url: str, run: Run, b0: int, b1: int) -> None:
    seen: set[int] = set()
    for i in range(b0, b1):
        if run.field_id[i] in seen:
            field = run.fields[run.field_id[i]]
            key = run.buf[run.header[i] : run.header[i] + run.key_len[i]].decode(
                "utf-8", "surrogateescape"
            )
            raise repeated_field_error(url, key, field, run.base + run.start[i])
        seen.add(run.field_id[i])


def repeated_field_error(url: str, key: str, field: str, offset: int) -> ShardFormatError:
    """The error for a field that appears twice in one sample."""
    return ShardFormatError(
        f"field {field!r} appears twice in sample {key!r}",
        shard=url,
        member=f"{key}.{field}",
        offset=offset,
    )


def read_indexed_samples(
    f: BinaryIO,
    url: str,
    index: ShardIndex,
    *,
    first: int = 0,
    stop: int | None = None,
    only: Sequence[int] | None = None,
    file_size: int | None = None,
    read_size: int = DEFAULT_READ_SIZE,
    stats: ReadStats | None = None,
) -> Iterator[Sample]:
    """Yield samples ``first:stop`` of a shard by slicing at the offsets its sidecar records.

    Headers are not parsed. The shard is checked against the sidecar instead: its size
    (``file_size`` when known, else by reading to the end), the name in the header of each
    sample's first member, and, when read to its end, the zero end-of-archive marker. ``f``
    must be positioned at the start of the shard; it is read from sample ``first`` on
    (seeking when possible).

    ``only``: yield just these samples (sorted sample numbers); reading seeks over gaps
    longer than ``read_size`` and stops after the last of them.

    Raises:
        TruncatedShardError: the shard is shorter than the sidecar says.
        SidecarError: the shard does not match its sidecar.
    """
    stats = stats if stats is not None else ReadStats()
    count = index.count
    n = count if stop is None else min(stop, count)
    if only is not None and len(only):
        first, n = only[0], only[-1] + 1
        if not 0 <= first < n <= count:
            raise ValueError(f"samples {first}..{n - 1} asked for, the shard has {count}")
    if not 0 <= first <= n:
        raise ValueError(f"first must be in 0..{n}, got {first}")
    offsets: list[int] = index.offsets.tolist()
    mstart: list[int] = index.member_start.tolist()
    mfield: list[int] = index.member_field.tolist()
    moff: list[int] = index.member_offset.tolist()
    msize: list[int] = index.member_size.tolist()
    keys, fields = index.keys, index.fields
    if file_size is not None and file_size != index.size:
        _raise_size_mismatch(url, index, file_size, offsets, mstart, mfield, moff)
    position = offsets[first]
    if position:
        _skip_to(f, position)
    i = first
    k = 0  # the next of ``only``
    while i < n:
        if only is not None and offsets[only[k]] - offsets[i] > read_size:
            i = only[k]
            _skip_to(f, offsets[i])
        j = max(bisect_right(offsets, offsets[i] + read_size, i + 1, n + 1) - 1, i + 1)
        chunk = _read_exact(f, offsets[j] - offsets[i])
        stats.bytes_read += len(chunk)
        base = offsets[i]
        if len(chunk) < offsets[j] - base:
            _raise_size_mismatch(url, index, base + len(chunk), offsets, mstart, mfield, moff)
        chosen: Sequence[int] = range(i, j)
        if only is not None:
            k, start = bisect_left(only, j, k), k
            chosen = only[start:k]
        for s in chosen:
            m0 = mstart[s]
            key = keys[s]
            expect = f"{key}.{fields[mfield[m0]]}\x00".encode("utf-8", "surrogateescape")
            header = moff[m0] - BLOCK - base
            if len(expect) <= 100 and not chunk.startswith(expect, header):
                found = chunk[header : header + 100].split(b"\x00", 1)[0]
                raise SidecarError(
                    f"shard does not match its sidecar: expected member {expect[:-1]!r}, "
                    f"found {found!r} (shard replaced or sidecar stale)",
                    shard=url,
                    member=expect[:-1].decode("utf-8", "surrogateescape"),
                    offset=moff[m0] - BLOCK,
                )
            sample: Sample = {"__key__": key, "__url__": url}
            for m in range(m0, mstart[s + 1]):
                o = moff[m] - base
                sample[fields[mfield[m]]] = chunk[o : o + msize[m]]
            yield sample
        stats.samples += len(chosen)
        stats.members += mstart[j] - mstart[i]
        i = j
    if n == count:
        _check_indexed_end(f, url, index, offsets[n], file_size is not None)
        stats.shards += 1


def _skip_to(f: BinaryIO, position: int) -> None:
    try:
        f.seek(position)
    except (OSError, ValueError, AttributeError):
        while position > 0:
            skipped = len(f.read(min(position, DEFAULT_READ_SIZE)))
            if not skipped:
                return
            position -= skipped


def _check_indexed_end(
    f: BinaryIO, url: str, index: ShardIndex, end: int, size_known: bool
) -> None:
    marker = _read_exact(f, BLOCK)
    if marker != _ZERO_BLOCK:
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


def _raise_size_mismatch(
    url: str,
    index: ShardIndex,
    size: int,
    offsets: list[int],
    mstart: list[int],
    mfield: list[int],
    moff: list[int],
) -> None:
    if size > index.size:
        raise SidecarError(
            f"shard is {size} bytes, its sidecar says {index.size} (shard replaced or sidecar "
            "stale)",
            shard=url,
            offset=index.size,
        )
    s = max(bisect_right(offsets, size) - 1, 0)
    if s >= index.count:
        member = None
    else:
        m = max(mstart[s], bisect_right(moff, size + BLOCK, mstart[s], mstart[s + 1]) - 1)
        member = f"{index.keys[s]}.{index.fields[mfield[m]]}"
    raise TruncatedShardError(
        f"shard is truncated: {size} of {index.size} bytes present "
        f"({s} of {index.count} samples complete)",
        shard=url,
        member=member,
        offset=size,
    )


def build_index(
    f: BinaryIO,
    url: str,
    *,
    name: str,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
) -> ShardIndex:
    """Scan a whole shard and return its sidecar index, checksum and size included.

    Raises what ``scan_members`` raises, and ShardFormatError for a field repeated in a
    sample (the index could not address it).
    """
    digest = hashlib.sha256()
    size = 0

    class _Hashing:
        def read(self, n: int = -1) -> bytes:
            nonlocal size
            data = f.read(n)
            digest.update(data)
            size += len(data)
            return data

    samples: list[tuple[str, int, list[tuple[str, int, int]]]] = []
    key: str | None = None
    members = scan_members(_Hashing(), url, max_member_size=max_member_size)  # type: ignore[arg-type]
    while True:
        try:
            part = next(members)
        except StopIteration as stop:
            end: int = stop.value
            break
        for member, start, data_offset, data in part.members() if isinstance(part, Run) else part:
            parts = split_member_name(member)
            if parts is None or parts[1].startswith("__"):
                continue
            if parts[0] != key:
                key = parts[0]
                samples.append((key, start, []))
            elif any(parts[1] == f for f, _, _ in samples[-1][2]):
                raise repeated_field_error(url, key, parts[1], start)
            samples[-1][2].append((parts[1], data_offset, len(data)))
    return ShardIndex.build(name, size, digest.hexdigest(), samples, end)
