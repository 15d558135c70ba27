"""Reading chosen fields of chosen samples through a shard's sidecar: only their bytes.

Random access with field selection reads, for each chosen member, its header block and its
data, nothing else (adjacent members are fetched in one read when the gap between them is
small). The sample checksum covers bytes that are not read, so each member is checked by
its header instead: the header checksum, a regular-file type, the size the sidecar records,
and the member's name where the ustar field holds it (short ASCII names; longer ones are in
a PAX record that is not read).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from ..errors import SidecarError, TruncatedShardError
from .header import BLOCK, REGULAR, checksum_ok, parse_number
from .samples import Sample
from .sidecar import ShardIndex

__all__ = ["read_members"]

#: Members closer than this are fetched in one read (the bytes between are read too).
DEFAULT_GAP = 64 << 10

#: ``read_at(start, n)``: bytes ``start:start+n`` of the shard (fewer only at its end).
ReadAt = Callable[[int, int], bytes]


def read_members(
    read_at: ReadAt,
    url: str,
    index: ShardIndex,
    samples: Sequence[int],
    fields: Collection[str],
    *,
    lowercase: bool = False,
    gap: int = DEFAULT_GAP,
) -> list[Sample]:
    """Samples ``samples`` (sample numbers, in any order, repeats allowed) of a shard with
    only the fields named in ``fields`` (``__key__`` and ``__url__`` always), each member's
    header checked as the module docstring says.

    Raises:
        TruncatedShardError: the shard ends before a member the sidecar records.
        SidecarError: a member's header does not match the sidecar.
    """
    names = [f.lower() for f in index.fields] if lowercase else list(index.fields)
    starts = index.member_start
    chosen = sorted(
        (int(m), s)
        for s in set(samples)
        for m in range(int(starts[s]), int(starts[s + 1]))
        if names[index.member_field[m]] in fields
    )
    found: dict[int, Sample] = {s: {"__key__": index.keys[s], "__url__": url} for s in samples}
    for run in _runs(index, chosen, gap):
        first = int(index.member_offset[run[0][0]]) - BLOCK
        last = run[-1][0]
        end = int(index.member_offset[last] + index.member_size[last])
        data = read_at(first, end - first)
        if len(data) < end - first:
            raise TruncatedShardError(
                f"shard is truncated: it ends at byte {first + len(data)}, its sidecar "
                f"records a member up to byte {end}",
                shard=url,
                offset=first + len(data),
            )
        for m, s in run:
            at = int(index.member_offset[m]) - first
            _check_header(url, index, m, s, data[at - BLOCK : at])
            found[s][names[index.member_field[m]]] = data[at : at + int(index.member_size[m])]
    return [found[s] for s in samples]


def _runs(
    index: ShardIndex, chosen: list[tuple[int, int]], gap: int
) -> list[list[tuple[int, int]]]:
    """``chosen`` (member, sample) pairs in runs read at once: the next member's header
    starts at most ``gap`` bytes after the previous member's data ends."""
    runs: list[list[tuple[int, int]]] = []
    end = 0
    for m, s in chosen:
        start = int(index.member_offset[m]) - BLOCK
        if runs and start - end <= gap:
            runs[-1].append((m, s))
        else:
            runs.append([(m, s)])
        end = int(index.member_offset[m] + index.member_size[m])
    return runs


def _check_header(url: str, index: ShardIndex, m: int, s: int, header: bytes) -> None:
    name = f"{index.keys[s]}.{index.fields[index.member_field[m]]}"
    expect = name.encode("utf-8", "surrogateescape")
    problem = None
    if not checksum_ok(header):
        problem = "its header's checksum does not match"
    elif header[156] not in REGULAR:
        problem = f"its header is of type {chr(header[156])!r}, not a regular file"
    elif parse_number(header[124:136]) != index.member_size[m]:
        problem = (
            f"its header says {parse_number(header[124:136])} bytes, the sidecar "
            f"{int(index.member_size[m])}"
        )
    elif len(expect) < 100 and expect.isascii() and header[:100].rstrip(b"\x00") != expect:
        problem = f"its header names {header[:100].rstrip(bytes(1))!r}"
    if problem is not None:
        raise SidecarError(
            f"shard does not match its sidecar at member {name!r}: {problem} (shard "
            "replaced or sidecar stale)",
            shard=url,
            member=name,
            offset=int(index.member_offset[m]) - BLOCK,
        )
