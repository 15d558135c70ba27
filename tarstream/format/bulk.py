"""The bulk parser: runs of plain tar headers parsed together with numpy.

Python's ``tarfile`` parses about 12k members/s; a header at a time in Python, about 370k.
Most shards are long runs of the same plain kind of member, which numpy checks and parses
a read buffer at a time. ``bulk_run`` handles the common case only, checked for every
header, and stops before the first header that is anything else: the per-header parser in
``tarstream.format.scan`` handles or reports that one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .header import BLOCK, PAX

__all__ = ["FAST_MIN_BLOCKS", "Member", "Run", "bulk_run"]

#: (name, offset of its first header, offset of its data, data)
Member = tuple[str, int, int, bytes]

#: Fewer blocks than this left in a buffer are parsed a header at a time.
FAST_MIN_BLOCKS = 64
_OCT11 = 8 ** np.arange(10, -1, -1, dtype=np.int64)
_OCT6 = 8 ** np.arange(5, -1, -1, dtype=np.int64)
_POSITIONS = np.arange(100)
_USTAR = np.frombuffer(b"ustar", np.uint8)
#: PAX records the bulk path cannot pass over (they change the member or its data).
_PAX_NEEDS_CARE = re.compile(rb"(?:^|\n)\d+ (?:path|size|linkpath|GNU\.sparse[.\w]*)=")
_MTIME_RECORD = np.frombuffer(b"mtime=", np.uint8).astype(np.int64)


@dataclass(frozen=True)
class Run:
    """Regular members parsed in bulk from one read buffer (see ``bulk_run``).

    Member *i*'s header is at ``buf[header[i]]`` with a name of ``name_len[i]`` bytes whose
    key is the first ``key_len[i]``; its first header (a PAX header where it has one) is
    at ``start[i]``; its ``size[i]`` bytes of data follow the header; its field is
    ``fields[field_id[i]]``, its data ``buf[data_start[i]:data_end[i]]``. Members
    ``bounds[j]:bounds[j+1]`` share a key. Every member of a run has a field and none is
    reserved. Offsets are in ``buf``; ``base`` is the file offset of ``buf[0]``.
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

    def name(self, i: int) -> str:
        """Member ``i``'s name."""
        h = self.header[i]
        return self.buf[h : h + self.name_len[i]].decode("utf-8", "surrogateescape")

    def key(self, i: int) -> str:
        """Member ``i``'s key."""
        h = self.header[i]
        return self.buf[h : h + self.key_len[i]].decode("utf-8", "surrogateescape")

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


def _check_headers(
    rows: np.ndarray, at: np.ndarray, n: int, max_member_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sizes, the block after each member, which rows are PAX headers, which rows pass
    the header checks) for the headers ``rows`` at blocks ``at`` of ``n``."""
    digits = rows[:, 124:135] - np.uint8(48)  # wraps below '0', so one test checks the range
    sizes = digits @ _OCT11
    nxt = at + 1 + (sizes + BLOCK - 1) // BLOCK
    typeflag = rows[:, 156]
    is_pax = typeflag == PAX
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
    return sizes, nxt, is_pax, ok


@dataclass
class _Names:
    """The names of a run's regular rows, as wide as the longest: lengths, where each key
    ends (its first dot after the last slash, -1: none) and whether each name is usable."""

    rows: np.ndarray
    names: np.ndarray
    name_len: np.ndarray
    dot: np.ndarray
    usable: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> _Names:
        names = rows[:, :100]
        nul = names == 0
        name_len = np.where(nul.any(1), nul.argmax(1), 100)
        width = int(name_len.max()) if len(name_len) else 1
        names = names[:, :width]
        positions = _POSITIONS[:width]
        slash = np.where((names == 47).any(1), width - 1 - (names[:, ::-1] == 47).argmax(1), -1)
        dots = (names == 46) & (positions > slash[:, None])
        dot = np.where(dots.any(1), dots.argmax(1), -1)
        lines = np.arange(len(names))
        after_dot = (
            names[lines, np.minimum(dot + 1, width - 1)],
            names[lines, np.minimum(dot + 2, width - 1)],
        )
        reserved = (after_dot[0] == 95) & (after_dot[1] == 95)
        # a leading '/' or any '..' (perhaps a '..' component): left to the per-header
        # parser, which checks keys exactly
        suspect = (names[:, 0] == 47) | ((names[:, :-1] == 46) & (names[:, 1:] == 46)).any(1)
        usable = (dot > slash + 1) & (dot < name_len - 1) & ~reserved & ~suspect
        return cls(rows, names, name_len, dot, usable)


def _pax_stop(
    buf: bytes,
    pos: int,
    blocks: np.ndarray,
    at: np.ndarray,
    sizes: np.ndarray,
    is_pax: np.ndarray,
    keep: int,
) -> int:
    """Where the run must stop for the PAX headers among its first ``keep`` rows: at the
    first whose records change the member (path, size, ...)."""
    pax_rows = np.flatnonzero(is_pax[:keep])
    if len(pax_rows):
        # Common case in bulk: a single "NN mtime=..." record (webdataset's float mtimes).
        head = blocks[at[pax_rows] + 1, :9].astype(np.int64)
        only_mtime = (head[:, 2] == 32) & (head[:, 3:9] == _MTIME_RECORD).all(1)
        only_mtime &= (head[:, 0] - 48) * 10 + head[:, 1] - 48 == sizes[pax_rows]
        for row in pax_rows[~only_mtime].tolist():
            o = pos + int(at[row]) * BLOCK + BLOCK
            if _PAX_NEEDS_CARE.search(buf[o : o + int(sizes[row])]):
                return int(row)
    return keep


def bulk_run(buf: bytes, pos: int, base: int, max_member_size: int) -> tuple[Run | None, int]:
    """Parse the run of plain members at ``buf[pos:]`` with numpy; return it and the new pos.

    Headers are found by their ustar magic and each must link to the next by its size, so
    a data block that happens to look like a header ends the run instead of misleading it.
    The run handles the common case only, checked for every header: a regular file (or a
    PAX header whose records leave the member's name and size alone, as webdataset writes
    for float mtimes) with an 11-digit octal size within ``max_member_size``, no ustar
    prefix, a 6-digit octal checksum equal to the header's unsigned byte sum, a name with a
    field that is not reserved, and data that ends inside ``buf``. It stops before the first
    header that is anything else. Returns ``(None, pos)`` where no run starts at ``pos``.
    """
    n = (len(buf) - pos) // BLOCK
    if n < FAST_MIN_BLOCKS:
        return None, pos
    blocks = np.frombuffer(buf, np.uint8, count=n * BLOCK, offset=pos).reshape(n, BLOCK)
    at = np.flatnonzero(blocks[:, 257] == _USTAR[0])
    at = at[(blocks[at, 258:262] == _USTAR[1:]).all(1)]
    if not len(at) or at[0] != 0:
        return None, pos
    rows = blocks[at]
    sizes, nxt, is_pax, ok = _check_headers(rows, at, n, max_member_size)
    regular_rows = np.flatnonzero(~is_pax)
    names = _Names.of(rows[regular_rows])
    ok[regular_rows] &= names.usable
    linked = np.append(nxt[:-1] == at[1:], True)
    keep = min(_first_false(ok), _first_false(linked) + 1)
    keep = _pax_stop(buf, pos, blocks, at, sizes, is_pax, keep)
    if keep and is_pax[keep - 1]:
        keep -= 1
    if keep == 0:
        return None, pos
    kept = int(np.searchsorted(regular_rows, keep))
    run = _make_run(buf, pos, base, at, sizes, is_pax, regular_rows[:kept], names, kept)
    return run, pos + int(nxt[keep - 1]) * BLOCK


def _make_run(
    buf: bytes,
    pos: int,
    base: int,
    at: np.ndarray,
    sizes: np.ndarray,
    is_pax: np.ndarray,
    regular: np.ndarray,
    names: _Names,
    kept: int,
) -> Run:
    """The ``Run`` of the first ``kept`` regular members (rows ``regular``)."""
    header = pos + at[regular] * BLOCK
    preceded = np.zeros(kept, dtype=bool)
    preceded[regular > 0] = is_pax[regular[regular > 0] - 1]
    key_len, name_len, chars = names.dot[:kept], names.name_len[:kept], names.names[:kept]
    width = chars.shape[1]
    keyed = np.where(_POSITIONS[:width] < key_len[:, None], chars, 0)
    new_key = np.ones(kept, dtype=bool)
    new_key[1:] = (keyed[1:] != keyed[:-1]).any(1)
    field_width = int((name_len - key_len - 1).max())
    columns = np.minimum(key_len[:, None] + 1 + np.arange(field_width), width - 1)
    field_bytes = np.where(
        columns < name_len[:, None], chars[np.arange(kept)[:, None], columns], 0
    ).astype(np.uint8)
    unique, field_id = np.unique(
        np.ascontiguousarray(field_bytes).view(np.dtype((np.void, field_width))).ravel(),
        return_inverse=True,
    )
    return Run(
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
