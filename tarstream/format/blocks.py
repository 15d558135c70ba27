"""Whole blocks at a time: a read's block members checked and unpacked at once.

``sliced._elements`` takes a block's samples one at a time: a CRC-32 and an unpack each.
Where the sidecar records each block member's CRC-32 (``block_crc32``, FORMAT.md), a block
that lies whole in a read is checked by one CRC-32 over its bytes (all its samples' bytes)
and its elements unpacked by one call (``FAST_BLOCK``, or an ``Unpacker`` that checks each
field's kind as it unpacks, into dicts or rows: ``tarstream.format.rows``): the same
samples, checked as strictly, in about a third of the time. What this path does not take
(a checksum that fails, values msgspec refuses, keys or field sets other than the
sidecar's, names to lower-case, the samples of a block cut by a read's start or end) it
leaves to the sample-at-a-time path, which raises for the culprit or reads them as it
always has.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np

from .checksum import crc32
from .packed import FAST_BLOCK, _is_field
from .rows import Unpacker
from .samples import Sample
from .sidecar import ShardIndex
from .table import SliceTable

__all__ = ["Block", "block_runs"]

#: The samples of a range, read one at a time (``sliced._elements`` over a read).
Each = Callable[[range], Iterator[Sample]]

_KEY = itemgetter("__key__")
_ROW_KEY = attrgetter("key")


class Block(list):  # type: ignore[type-arg]
    """A block's samples, read whole: a run of ``block_runs`` whose samples were checked
    together, with their field names where they all have the same (else None), and where
    known the types each field's values have (``rows.Unpacker``; else None)."""

    names: tuple[str, ...] | None = None
    kinds: dict[str, frozenset[type]] | None = None


def block_runs(
    url: str,
    index: ShardIndex,
    table: SliceTable,
    view: memoryview,
    base: int,
    chosen: range,
    each: Each,
    fast: Unpacker | None = None,
) -> Iterator[Sequence[Sample]]:
    """The samples ``chosen`` of a shard of blocks only, from ``view`` (which starts at byte
    ``base`` of the shard), in runs: each block that lies whole in ``chosen`` at once, the
    others (and a block this path does not take) one at a time, by ``each``. ``fast``:
    blocks unpacked by it where it takes them (``tarstream.format.rows``); once it does
    not, the shard's other blocks are not tried."""
    starts = table.starts
    i, j = chosen.start, chosen.stop
    k = bisect_left(starts, i)
    if starts[k] > i:  # the end of a block the read starts in
        yield from zip(each(range(i, min(starts[k], j))))
    checked: set[tuple[str, ...]] = set()  # the field sets seen fit the sidecar's
    if fast is not None and not fast.rows:  # dicts would leave out a field besides the shard's
        whole = index.member_offset[starts[k] : starts[bisect_right(starts, j) - 1]]
        fast = fast if _maps_of(view, base, whole, len(fast.kinds)) else None  # for this read
    while k + 1 < len(starts) and starts[k + 1] <= j:
        samples = None if fast is None else _block(url, index, table, view, base, k, checked, fast)
        if samples is None:
            fast = None
            samples = _block(url, index, table, view, base, k, checked)
        if samples is None:
            yield from zip(each(range(starts[k], starts[k + 1])))
        else:
            yield samples
        k += 1
    if starts[k] < j:  # the start of a block the read ends in
        yield from zip(each(range(starts[k], j)))


def _block(
    url: str,
    index: ShardIndex,
    table: SliceTable,
    view: memoryview,
    base: int,
    k: int,
    checked: set[tuple[str, ...]],
    fast: Unpacker | None = None,
) -> Sequence[Any] | None:
    """Block ``k``'s samples, checked, or None where this path does not take them. By
    ``FAST_BLOCK`` (each field set checked against the sidecar's once, in ``checked``), or
    by ``fast``: rows, or a ``Block`` of dicts whose values are of the kinds it says (a
    sample of other fields, a value of another kind: None, the dicts' path takes it)."""
    rows = fast is not None and fast.rows
    unpack = FAST_BLOCK if fast is None else fast.decode
    samples = _unpacked(index, table, view, base, k, unpack, _ROW_KEY if rows else _KEY)  # type: ignore[arg-type]
    if samples is None:
        return None
    if rows:
        for row in samples:
            row.url = url
        return samples
    names = {tuple(samples[0])} if fast is not None else set(map(tuple, samples))
    if fast is None and not names <= checked:
        if not all(_fits(n, table.packed_fields, table.lowercase) for n in names - checked):
            return None
        checked |= names
    for sample in samples:
        sample["__url__"] = url
    block = Block(samples)
    if len(names) == 1:
        (block.names,) = names
    block.kinds = None if fast is None else fast.kinds
    return block


def _unpacked(
    index: ShardIndex,
    table: SliceTable,
    view: memoryview,
    base: int,
    k: int,
    unpack: Callable[[Any], list[Any]],
    key: Callable[[Any], Any],
) -> list[Any] | None:
    """Block ``k``'s data unpacked by ``unpack`` where it matches its checksum, and its
    samples' keys (``key`` of each) are the sidecar's; else None (also where ``unpack``
    refuses it: values msgspec refuses, bytes say, or an element without a key)."""
    data = _data(table, view, base, k)
    if data is None:
        return None
    b, e = table.starts[k], table.starts[k + 1]
    try:
        samples = unpack(data)
        return samples if list(map(key, samples)) == index.keys[b:e] else None
    except Exception:  # what the unpacker refuses
        return None


def _maps_of(view: memoryview, base: int, offsets: np.ndarray, n: int) -> bool:
    """Whether the msgpack value at each of ``offsets`` (of the shard, whose byte ``base``
    ``view`` starts at) is a map of ``n`` entries, ``n`` < 16 (a fixmap: its first byte
    says). The elements of a read's whole blocks, in one pass."""
    heads = np.frombuffer(view, np.uint8)[offsets.astype(np.int64) - base]
    return n < 16 and bool((heads == 0x80 | n).all())


def _data(table: SliceTable, view: memoryview, base: int, k: int) -> memoryview | None:
    """The data of block ``k`` (its elements, all of them) where its bytes (header, data,
    padding) match their checksum; else None."""
    offsets = table.offsets
    b, e = table.starts[k], table.starts[k + 1]
    first, after = offsets[b] - base, offsets[e] - base
    if crc32(view[first:after]) != table.block_crcs[k]:
        return None
    head = _array_head(e - b)
    start = table.elements_from[k] - base - len(head)
    end = table.elements_to[k] - base
    if not first <= start < end <= after or view[start : start + len(head)] != head:
        return None  # the elements must be the block's data, all of it checked
    return view[start:end]


def _fits(names: tuple[str, ...], fields: frozenset[str], lowercase: bool) -> bool:
    """Whether an element with ``names`` is a sample of the sidecar's ``fields``, led by its
    ``__key__`` (with no name to lower-case, where asked)."""
    return (
        names[0] == "__key__"
        and all(_is_field(n) and n in fields for n in names[1:])
        and not (lowercase and any(n != n.lower() for n in names))
    )


def _array_head(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items (a block's data starts with it)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")
