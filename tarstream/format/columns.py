"""A read's plain samples taken a field at a time (``tarstream.format.sliced``).

Where every sample of a shard has the same members in the same order (a ``Layout``), a
read's samples are checked against their checksums (at once, where the sidecar records
the running checksum) and each field's values are sliced from the read in C, with no
Python step per sample: a ``ColumnRun``, which gives the same dicts ``sliced._slice``
gives, its columns to a reader that decodes a field at a time, or rows to a batch. Only
where every checksum of the read holds: otherwise the read goes ``_slice``'s way, which
yields the samples before a bad one and then names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice, repeat
from typing import Any

import numpy as np

from .checksum import crc32, crc32_combine
from .packed import PACKED_FIELD
from .rows import plain_row
from .samples import Sample
from .sidecar import ShardIndex
from .table import SliceTable

__all__ = ["ColumnRun", "Layout", "as_rows", "column_run", "put_columns", "running_check"]

#: The most bytes per member (headers and padding included) of a read whose samples are
#: sliced from one copy of it.
_SMALL = 2048


class Layout:
    """Where each field's member lies in every sample of a shard whose samples all have
    the same members in the same order: the field names (as samples get them), where each
    member's data starts and ends (as the sidecar lists members: sample *s*'s are ``s * k``
    to ``s * k + k`` for ``k`` names), the sample offsets (int64), and each field's kinds
    (bytes, for ``ColumnRun.kinds``)."""

    def __init__(self, names: list[str], index: ShardIndex) -> None:
        self.names = names
        self.starts = index.member_offset.astype(np.int64)
        self.ends = self.starts + index.member_size.astype(np.int64)
        self.offsets = index.offsets.astype(np.int64)
        self.kinds: dict[str, frozenset[type]] = dict.fromkeys(names, frozenset({bytes}))

    @classmethod
    def of(cls, table: SliceTable) -> Layout | None:
        """The layout of ``table``'s shard, or None: samples of several field sets, no
        checksums to check, two fields of one name, a packed member or a block."""
        index = table.index
        count = index.count
        members = len(index.member_field)
        if table.elements_only or not count or members % count:
            return None
        if table.crcs is None or table.merged:
            return None
        fields = index.member_field.reshape(count, members // count)
        if not (fields == fields[0]).all():
            return None
        names = [table.names[f] for f in fields[0].tolist()]
        if PACKED_FIELD in names or table.block in fields[0] or len(set(names)) < len(names):
            return None
        if not np.array_equal(index.member_start[:-1], np.arange(0, members, len(names))):
            return None
        return cls(names, index)


class ColumnRun(Sequence[Sample]):
    """A read's samples as columns: their keys, their shard's url and each field's values
    (bytes), in the order of the sample's members, and their ``kinds`` (by field, the types
    of its values). Iterating gives the samples as dicts (``__key__``, ``__url__``, then the
    fields), as ``sliced._slice`` gives them."""

    __slots__ = ("columns", "keys", "kinds", "url")

    def __init__(
        self,
        url: str,
        keys: list[str],
        columns: dict[str, list[Any]],
        kinds: dict[str, frozenset[type]],
    ) -> None:
        self.url, self.keys, self.columns, self.kinds = url, keys, columns, kinds

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples())

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        return self.samples()[i]

    def rows(self) -> list[Any]:
        """The samples as rows (``rows.plain_row``), for a batch that takes them a field at a
        time; as dicts without msgspec."""
        row = plain_row(tuple(self.columns))
        if row is None:
            return self.samples()
        return list(map(row, self.keys, repeat(self.url), *self.columns.values()))

    def samples(self, columns: dict[str, list[Any]] | None = None) -> list[Sample]:
        """The samples, each field's value from ``columns`` (by default the bytes)."""
        url = self.url
        items: list[Sample] = [{"__key__": key, "__url__": url} for key in self.keys]
        columns = columns if columns is not None else self.columns
        put_columns(items, columns, list(columns))
        return items


def put_columns(
    items: Sequence[dict[Any, Any]], columns: dict[Any, list[Any]], keys: list[Any]
) -> None:
    """Put the columns of ``keys`` into ``items``: each item its value of each."""
    for key in keys:
        for item, value in zip(items, columns[key], strict=True):
            item[key] = value


def column_run(
    url: str, table: SliceTable, layout: Layout, view: memoryview, base: int, chosen: Sequence[int]
) -> ColumnRun | None:
    """The samples ``chosen`` (a range) from ``view``, which starts at byte ``base`` of the
    shard, as a ``ColumnRun`` if every one of them matches its checksum; else None."""
    if type(chosen) is not range or not chosen:
        return None
    i, n = chosen.start, chosen.stop
    if not _checked(table, layout, view, base, i, n):
        return None
    # Small samples: the read made bytes once, then sliced (a copy of its headers and
    # padding too, but cheaper than a view per member); large: each member copied alone.
    k = len(layout.names)
    small = len(view) <= _SMALL * k * len(chosen)
    data = view.tobytes() if small else view
    starts, ends = layout.starts[i * k : n * k] - base, layout.ends[i * k : n * k] - base
    cuts = map(data.__getitem__, map(slice, starts.tolist(), ends.tolist()))
    values = list(cuts if small else map(bytes, cuts))  # sample by sample, field by field
    columns = {name: values[j::k] for j, name in enumerate(layout.names)}
    return ColumnRun(url, table.index.keys[i:n], columns, layout.kinds)


def running_check(table: SliceTable, view: memoryview, i: int, n: int) -> bool | None:
    """Whether samples ``i`` to ``n`` (``view``: their bytes) match the running CRC-32 the
    sidecar records (FORMAT.md), all at once; None where that cannot tell: no running
    checksum, no ``crc32_combine``, or checksums not checked (``verify=False``)."""
    running = table.index.running_checksums
    if running is None or crc32_combine is None or table.crcs is None:
        return None
    shifted = crc32_combine(int(running[i]), 0, len(view))  # carried over the read
    return crc32(view) == int(running[n]) ^ shifted


def _checked(
    table: SliceTable, layout: Layout, view: memoryview, base: int, i: int, n: int
) -> bool:
    """Whether samples ``i`` to ``n`` (``view``, from byte ``base``) match their checksums:
    all at once against the running CRC-32 where the sidecar records it, else each
    against its own."""
    held = running_check(table, view, i, n)
    if held is not None:
        return held
    spans = (layout.offsets[i : n + 1] - base).tolist()
    crcs = list(map(crc32, map(view.__getitem__, map(slice, spans, islice(spans, 1, None)))))
    return crcs == table.crcs[i:n]  # type: ignore[index]


def as_rows(run: Iterable[Sample]) -> Iterable[Any]:
    """A run of ``sliced_runs``' samples, as rows where it is a ``ColumnRun``."""
    return run.rows() if type(run) is ColumnRun else run
