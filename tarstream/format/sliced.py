"""Reading a shard through its sidecar: members sliced at the offsets it records.

Headers are not parsed. The shard is checked against the sidecar instead: its size, every
byte of each sample against the CRC-32 the sidecar records for it (headers, data and
padding), and the end-of-archive marker. Where there is no checksum to check (sidecars
from older writers, ``verify=False``), and where a checksum fails, the name in the header
of each sample's first member is checked instead (a replaced shard is then said to be
one).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import chain
from typing import BinaryIO

from ..errors import ShardError
from .blocks import block_runs
from .checksum import crc32
from .columns import Layout, column_run, running_check
from .header import BLOCK
from .packed import (
    BLOCK_FIELD,
    FAST_UNPACK,
    lowered,
    merge_packed,
    unpack_element,
    unpacked_or_none,
)
from .rows import Unpacker
from .samples import Sample
from .scan import DEFAULT_READ_SIZE, ReadStats, read_into
from .sidecar import ShardIndex
from .sliced_checks import check_end, check_name, crc_error, raise_merged, raise_size_mismatch
from .table import SliceTable

__all__ = ["SliceTable", "read_sliced", "skip_to", "sliced_runs"]


def _span(count: int, first: int, stop: int | None, only: Sequence[int] | None) -> tuple[int, int]:
    """The first sample to read and the one after the last."""
    n = count if stop is None else min(stop, count)
    if only is not None and len(only):
        first, n = only[0], only[-1] + 1
        if not 0 <= first < n <= count:
            raise ValueError(f"samples {first}..{n - 1} asked for, the shard has {count}")
    if not 0 <= first <= n:
        raise ValueError(f"first must be in 0..{n}, got {first}")
    return first, n


def read_sliced(
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
    verify: bool = True,
    lowercase: bool = False,
    table: SliceTable | None = None,
    buffers: list[bytearray] | None = None,
) -> Iterator[Sample]:
    """Yield samples ``first:stop`` of a shard by slicing at the offsets its sidecar records;
    ``lowercase``: lower-case field names (``0001.JPG`` gives field ``jpg``). The shard is
    checked against the sidecar: its size (``file_size`` when known, else by reading to the
    end), each sample's bytes against its checksum (unless ``verify`` is false; else, and
    where it fails, the name in the header of its first member), before the sample is
    yielded, and, when read
    to its end, the zero end-of-archive marker. ``f`` must be positioned at the start of the
    shard; it is read from sample ``first`` on (seeking when possible).

    ``only``: yield just these samples (sorted sample numbers); reading seeks over gaps
    longer than ``read_size`` and stops after the last of them. ``table``: the sidecar's
    ``SliceTable`` for these ``verify`` and ``lowercase``, if the caller keeps one.
    ``buffers``: read buffers to take one from (and give it back to at the end), kept by a
    caller that reads shard after shard; samples never refer to a buffer.
    Raises:
        TruncatedShardError: the shard is shorter than the sidecar says.
        SidecarError: the shard does not match its sidecar.
        ShardFormatError: a sample's bytes do not match its checksum.
    """
    args = (first, stop, only, file_size, read_size, stats, verify, lowercase, table, buffers)
    return chain.from_iterable(sliced_runs(f, url, index, *args))


def sliced_runs(
    f: BinaryIO,
    url: str,
    index: ShardIndex,
    first: int,
    stop: int | None,
    only: Sequence[int] | None,
    file_size: int | None,
    read_size: int,
    stats: ReadStats | None,
    verify: bool,
    lowercase: bool,
    table: SliceTable | None,
    buffers: list[bytearray] | None,
    fast: Unpacker | None = None,
    runs: bool = False,
) -> Iterator[Sequence[Sample]]:
    """``read_sliced``'s samples (its arguments, in order) in runs, which it chains: each
    block read whole at once (a ``tarstream.format.blocks.Block``, or what ``fast`` unpacks
    it into: ``tarstream.format.rows``), the others one at a time, or with ``runs`` each
    read's in one list (for a reader that decodes them together); those before a bad
    sample are yielded before its error."""
    stats = stats if stats is not None else ReadStats()
    first, n = _span(index.count, first, stop, only)
    table = table or SliceTable.of(index, verify=verify, lowercase=lowercase)
    offsets = table.offsets
    if file_size is not None and file_size != index.size:
        raise_size_mismatch(url, index, file_size, table)
    if offsets[first]:
        skip_to(f, offsets[first])
    reads = _reads(f, url, index, table, first, n, only, read_size, buffers)
    whole = bool(table.starts) and only is None
    layout = Layout.of(table) if only is None else None
    for chunk, base, chosen, members in reads:
        stats.bytes_read += len(chunk)
        try:
            if whole:
                yield from _by_block(url, index, table, chunk, base, chosen, fast)
            elif layout and (run := column_run(url, table, layout, chunk, base, chosen)):
                yield run
            elif runs:
                yield from _in_one(_samples_of(url, index, table, chunk, base, chosen))
            else:
                yield from zip(_samples_of(url, index, table, chunk, base, chosen))
        except ShardError as e:  # the samples of this read before the bad one were yielded
            stats.samples += bisect_left(chosen, bisect_right(offsets, e.offset or 0) - 1)
            raise
        stats.samples += len(chosen)
        stats.members += members
    if n == index.count:
        check_end(f, url, index, offsets[n], file_size is not None)
        stats.shards += 1


def _in_one(samples: Iterator[Sample]) -> Iterator[list[Sample]]:
    """``samples`` in one run; where one fails, those before it come (as a run) first."""
    taken: list[Sample] = []
    try:
        taken.extend(samples)
    except ShardError:
        if taken:
            yield taken
        raise
    yield taken


def _reads(
    f: BinaryIO,
    url: str,
    index: ShardIndex,
    table: SliceTable,
    i: int,
    n: int,
    only: Sequence[int] | None,
    read_size: int,
    buffers: list[bytearray] | None,
) -> Iterator[tuple[memoryview, int, Sequence[int], int]]:
    """``read_sliced``'s reads from sample ``i`` to ``n``: (the bytes read, in a buffer of
    ``buffers`` kept from read to read; the shard offset they start at; the samples chosen
    among those read; the members read)."""
    offsets = table.offsets
    k = 0  # the next of ``only``
    pool = buffers if buffers is not None else []
    buffer = pool.pop() if pool else bytearray(0)
    try:
        while i < n:
            if only is not None and offsets[only[k]] - offsets[i] > read_size:
                i = only[k]
                skip_to(f, offsets[i])
            j = max(bisect_right(offsets, offsets[i] + read_size, i + 1, n + 1) - 1, i + 1)
            b = bisect_right(table.starts, j) - 1
            if j < n and b >= 0 and table.starts[b] > i:  # ended where a block starts
                j = table.starts[b]
            size = offsets[j] - offsets[i]
            if len(buffer) < size:  # replaced, never resized: a view may still hold it
                buffer = bytearray(max(size, read_size))
            chunk = read_into(f, buffer, size)
            if len(chunk) < size:
                raise_size_mismatch(url, index, offsets[i] + len(chunk), table)
            chosen: Sequence[int] = range(i, j)
            if only is not None:
                k, start = bisect_left(only, j, k), k
                chosen = only[start:k]
            members = j - i if table.elements_only else table.mstart[j] - table.mstart[i]
            yield chunk, offsets[i], chosen, members
            i = j
    finally:
        if len(buffer) <= 2 * read_size:  # one grown for a huge sample is let go
            pool.append(buffer)


def _samples_of(
    url: str,
    index: ShardIndex,
    table: SliceTable,
    view: memoryview,
    base: int,
    chosen: Sequence[int],
) -> Iterator[Sample]:
    """The samples ``chosen`` from a read (``view``, from byte ``base`` of the shard): its
    blocks' elements, or its samples sliced, each checked against its own checksum unless
    the running checksum holds for the whole read."""
    if table.elements_only:
        return _elements(url, index, table, view, base, chosen)
    whole = type(chosen) is range and running_check(table, view, chosen.start, chosen.stop)
    return _slice(url, index, table, view, base, chosen, checked=bool(whole))


def _slice(
    url: str,
    index: ShardIndex,
    table: SliceTable,
    view: memoryview,
    base: int,
    chosen: Sequence[int],
    checked: bool = False,
) -> Iterator[Sample]:
    """The samples ``chosen`` from ``view``, which starts at byte ``base`` of the shard
    (and at the start of the object it views); each value a copy of its bytes. ``checked``:
    their bytes match the running checksum (``columns.running_check``): not each alone."""
    mstart, mfield, moff, msize = table.mstart, table.mfield, table.moff, table.msize
    keys, fields, offsets, crcs = index.keys, index.fields, table.offsets, table.crcs
    names, block, packed, merged = table.names, table.block, table.packed, table.merged
    chunk = view.obj
    for s in chosen:
        m0 = mstart[s]
        key = keys[s]
        if not checked and (
            crcs is None or crc32(view[offsets[s] - base : offsets[s + 1] - base]) != crcs[s]
        ):
            # The name in the header of the sample's first member (the checksum covers it):
            # for an element of a block, the block's header where the sample starts the
            # block (the others have none of their own).
            first = fields[mfield[m0]]
            header = offsets[s] if mfield[m0] == block else moff[m0] - BLOCK
            if header + BLOCK <= moff[m0]:
                check_name(url, chunk, header, base, f"{key}.{first}")
            if crcs is not None:
                raise crc_error(url, index, offsets, s, first)
        if mfield[m0] == block:
            o = moff[m0] - base
            sample = unpack_element(view[o : o + msize[m0]], key, url, moff[m0])
            sample["__url__"] = url
            yield lowered(sample, url) if table.lowercase else sample
            continue
        sample = {"__key__": key, "__url__": url}
        for m in range(m0, mstart[s + 1]):
            o = moff[m] - base
            sample[names[mfield[m]]] = view[o : o + msize[m]].tobytes()
        if merged and len(sample) != 2 + mstart[s + 1] - m0:
            raise_merged(url, key, [names[mfield[m]] for m in range(m0, mstart[s + 1])])
        if packed in sample:
            merge_packed(sample, url, table.lowercase, table.packed_fields)
        yield sample


def _by_block(
    url: str,
    index: ShardIndex,
    table: SliceTable,
    view: memoryview,
    base: int,
    chosen: Sequence[int],
    fast: Unpacker | None,
) -> Iterator[Sequence[Sample]]:
    """``_elements`` in runs, a block at once where it can (``tarstream.format.blocks``)."""
    each = partial(_elements, url, index, table, view, base)
    span = range(chosen[0], chosen[-1] + 1)
    return block_runs(url, index, table, view, base, span, each, fast)


def _elements(
    url: str,
    index: ShardIndex,
    table: SliceTable,
    view: memoryview,
    base: int,
    chosen: Sequence[int],
) -> Iterator[Sample]:
    """``_slice`` for a shard of blocks only: sample *s* is member *s*, an element, whose
    fields must be among the sidecar's ``packed_fields`` (each field set checked once)."""
    moff, msize, offsets, crcs = table.moff, table.msize, table.offsets, table.crcs
    keys = index.keys
    chunk = view.obj
    # The field sets checked, and whether their names are lower-cased to read them.
    seen: dict[tuple[str, ...], bool] = {}
    fast = FAST_UNPACK  # msgpack for the rest of the read once it refuses an element
    for s in chosen:
        start, end = moff[s], moff[s] + msize[s]
        span = view[offsets[s] - base : offsets[s + 1] - base]
        if crcs is None or crc32(span) != crcs[s]:
            if offsets[s] + BLOCK <= start:  # the first of its block: the block's header
                check_name(url, chunk, offsets[s], base, f"{keys[s]}.{BLOCK_FIELD}")
            if crcs is not None:
                raise crc_error(url, index, offsets, s, BLOCK_FIELD)
        # a sample inside its block is its element; the first and last have more bytes
        element = (
            span
            if start == offsets[s] and end == offsets[s + 1]
            else view[start - base : end - base]
        )
        try:
            sample = fast(element) if fast is not None else unpacked_or_none(element)
        except Exception:  # bytes values, say (FAST_UNPACK)
            fast = None
            sample = unpacked_or_none(element)
        if type(sample) is not dict or sample.get("__key__") != keys[s]:
            sample = unpack_element(element, keys[s], url, start, table.packed_fields)
        names = tuple(sample)
        lower = seen.get(names)
        if lower is None:  # checked once per field set
            unpack_element(element, keys[s], url, start, table.packed_fields)
            lower = seen[names] = table.lowercase and any(n != n.lower() for n in names)
        sample["__url__"] = url
        yield lowered(sample, url) if lower else sample


def skip_to(f: BinaryIO, position: int) -> None:
    """Move ``f`` (at its start) to ``position``: a seek, or reads where it cannot seek."""
    try:
        f.seek(position)
    except (OSError, ValueError, AttributeError):
        while position > 0:
            skipped = len(f.read(min(position, DEFAULT_READ_SIZE)))
            if not skipped:
                return
            position -= skipped
