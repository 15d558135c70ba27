"""Collate: combine items into a batch, stacking arrays and tensors as they arrive."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from itertools import islice
from typing import Any

import numpy as np

from .columns import described, dict_columns, same_key_columns
from .deferred import PendingImage
from .memory import BatchMemory
from .typed import Kinds

__all__ = [
    "BatchTuple",
    "builder",
    "collate",
    "collate_columns",
    "fill",
    "finish_batch",
    "is_chw_view",
    "same_key_columns",
    "to_torch",
]


class BatchTuple(tuple):  # type: ignore[type-arg]
    """The tuple a batch of tuples is: a plain tuple that torch's DataLoader also keeps a
    tuple (it turns other tuples into lists; it rebuilds a type with ``_fields``, as it
    does namedtuples, from its items)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __new__(cls, *items: Any) -> BatchTuple:
        return super().__new__(cls, items)

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)


def to_torch(batch: Any) -> Any:
    """``batch`` with its numpy arrays as torch tensors sharing their memory (arrays of a
    dtype torch lacks, such as strings, stay arrays); containers keep their types."""
    import torch

    if isinstance(batch, np.ndarray):
        try:
            return torch.from_numpy(batch)
        except TypeError:
            return batch
    if isinstance(batch, tuple):
        items = [to_torch(value) for value in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list):
        if not any(issubclass(t, _CONVERTED) for t in set(map(type, batch))):
            return batch  # strings, bytes, numbers: nothing to convert
        return [to_torch(value) for value in batch]
    if isinstance(batch, dict):
        return {key: to_torch(value) for key, value in batch.items()}
    return batch


_NUMBERS = (bool, int, float, np.number)
#: What ``to_torch`` converts, or looks into.
_CONVERTED = (np.ndarray, tuple, list, dict)


def collate(items: Sequence[Any], *, tensors: bool = False) -> Any:
    """Combine items into one batch.

    Dicts become a dict of collated fields, tuples a tuple; numpy arrays of one shape are
    stacked, as are torch tensors (decoded CHW images into a channels_last batch, see
    ``_stack_tensors``); numbers become a numpy array; anything else a list.
    ``tensors``: the batch ``to_torch`` makes of it, converted as it is built.

    >>> collate([{"x": np.zeros(2), "k": "a"}, {"x": np.ones(2), "k": "b"}])["x"].shape
    (2, 2)
    """
    first = items[0]
    if isinstance(first, dict):
        return collate_columns(dict_columns(items), tensors=tensors)
    if isinstance(first, tuple):
        return BatchTuple(*(collate(column, tensors=tensors) for column in _parts(items)))
    if isinstance(first, np.ndarray):
        if all(isinstance(i, np.ndarray) and i.shape == first.shape for i in items):
            return _converted(np.stack(items), tensors)
        return _converted(list(items), tensors)
    if sys.modules.get("torch") is not None:
        import torch

        if isinstance(first, torch.Tensor):
            if all(isinstance(i, torch.Tensor) and i.shape == first.shape for i in items):
                return _stack_tensors(list(items))
            return list(items)  # of tensors: nothing for to_torch to convert
    types = set(map(type, items))
    if isinstance(first, _NUMBERS) and all(issubclass(t, _NUMBERS) for t in types):
        return _converted(_numbers(items, types), tensors)
    if PendingImage in types:  # an image among other values: decode it
        return collate([_settled(value) for value in items], tensors=tensors)
    if tensors and any(issubclass(t, _CONVERTED) for t in types):
        return to_torch(list(items))
    return list(items)


def _numbers(items: Sequence[Any], types: AbstractSet[type]) -> np.ndarray:
    """``np.asarray(items)``: numbers of one plain type (int, float) converted in one
    pass, without numpy's look at each value for the array's type."""
    if len(types) == 1 and (kind := _PLAIN.get(next(iter(types)))) is not None:
        try:
            return np.fromiter(items, kind, len(items))
        except OverflowError:  # an int past 64 bits: numpy's choice of type below
            pass
    return np.asarray(items)


#: The array types ``np.asarray`` gives a list of Python ints or floats.
_PLAIN = {int: np.asarray([0]).dtype, float: np.dtype(np.float64)}


def _parts(items: Sequence[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """The columns of tuples of one length, else a ValueError."""
    first = items[0]
    for item in items:
        if len(item) != len(first):
            raise ValueError(f"tuples of {len(item)} and {len(first)} in one batch")
    return zip(*items, strict=True)


def _converted(batch: Any, tensors: bool) -> Any:
    return to_torch(batch) if tensors else batch


def fill(column: Any, items: Iterator[Any], k: int) -> int:
    """Add up to ``k`` items of ``items`` to a ``builder`` column; return how many (fewer
    at the end of ``items``). A column kept as a list takes them in one call."""
    if type(column) is _Items:
        before = len(column.items)
        column.items.extend(islice(items, k))
        return len(column.items) - before
    add, n = column.add, 0
    for item in islice(items, k):
        add(item)
        n += 1
    return n


def finish_batch(column: Any, n: int, tensors: bool) -> Any:
    """The batch of ``n`` items a ``builder`` column holds, its arrays as torch tensors
    where ``tensors`` (``to_torch``)."""
    if type(column) is _Items:  # converted as it is collated
        return collate(column.items, tensors=tensors)
    batch = column.finish(n)
    return to_torch(batch) if tensors else batch


def _stack_tensors(items: list[Any]) -> Any:
    """Stack tensors; C x H x W views of H x W x C memory stack without transposing.

    Decoded CHW images are such views. Stacking them in HWC order and permuting gives an
    N x C x H x W batch in channels_last memory format (what convolutions prefer) at the cost
    of a memory copy, where a plain stack would transpose every image (~7x slower).
    """
    import torch

    if all(is_chw_view(t) for t in items):
        hwc = [t.permute(1, 2, 0) for t in items]
        return torch.stack(hwc, out=_output(hwc)).permute(0, 3, 1, 2)
    return torch.stack(items, out=_output(items))


def is_chw_view(tensor: Any) -> bool:
    """Whether ``tensor`` is a C x H x W view of contiguous H x W x C memory."""
    return bool(
        tensor.dim() == 3 and not tensor.is_contiguous() and tensor.permute(1, 2, 0).is_contiguous()
    )


def _output(items: list[Any]) -> Any:
    """The tensor ``collate`` stacks a batch into (in shared memory in a DataLoader worker)."""
    first = items[0]
    return BatchMemory(keep=0).tensor((len(items), *first.shape), first.dtype, first.device)


class _Items:
    """A batch column kept as a list, combined by ``collate`` at the end (a
    ``PendingImage`` among the values is decoded then)."""

    def __init__(self, first: Any) -> None:
        self.items = [first]
        self.add = self.items.append  # one C call per value

    def finish(self, n: int) -> Any:
        return collate(self.items)  # which decodes a PendingImage among them


def _settled(value: Any) -> Any:
    """``value``, or the decoded value of a ``PendingImage``."""
    return value.value() if isinstance(value, PendingImage) else value


class _Stacked:
    """A column of same-shape arrays or tensors, copied into the batch as they arrive; a
    value of another shape, dtype or type turns it back into a list of items.

    A ``PendingImage`` of the first value's shape is decoded straight into its row.
    """

    def __init__(self, first: Any, size: int, memory: BatchMemory) -> None:
        pending, image = None, None
        # The size of the images packed into rows: a later image of this size (decoded by
        # the same Decode, so in the same mode) has the same shape.
        self.image_size: tuple[int, int] | None = None
        if isinstance(first, PendingImage):  # a template value: the image goes into row 0
            pending, image = first, first.open()
            first = pending.value(image, pixels=False)
            self.image_size = image.size
        self.first = first
        self.chw = False
        if isinstance(first, np.ndarray):
            self.out: Any = memory.array((size, *first.shape), first.dtype)
            self.rows: Any = self.out
        else:
            self.chw = is_chw_view(first)
            like = first.permute(1, 2, 0) if self.chw else first
            self.out = memory.tensor((size, *like.shape), like.dtype, like.device)
            self.rows = self.out.numpy() if self.out.device.type == "cpu" else None
        # Whether a decoded image can be packed straight into a row (of first's shape).
        self.packable = (
            self.rows is not None
            and self.rows.dtype == np.uint8
            and self.rows[0].flags.c_contiguous
        )
        self.shape = tuple(first.shape)
        self.n = 0
        self.fallback: list[Any] | None = None
        if pending is None:
            self.add(first)
        elif self.packable:
            pending.pack(image, self.rows[0])
            self.n = 1
        else:
            self.add(pending.value(image))

    def add(self, value: Any) -> None:
        if isinstance(value, PendingImage):
            image = value.open()
            fits = image.size == self.image_size or value.shape(image) == self.shape
            if self.packable and self.fallback is None and fits:
                value.pack(image, self.rows[self.n])
                self.n += 1
                return
            value = value.value(image)
        if self.fallback is not None:
            self.fallback.append(value)
        elif (
            type(value) is type(self.first)
            and value.shape == self.first.shape
            and value.dtype == self.first.dtype
        ):
            self.out[self.n] = value.permute(1, 2, 0) if self.chw else value
            self.n += 1
        else:
            self.fallback = [self._row(i) for i in range(self.n)] + [value]

    def _row(self, i: int) -> Any:
        return self.out[i].permute(2, 0, 1) if self.chw else self.out[i]

    def finish(self, n: int) -> Any:
        if self.fallback is not None:
            return collate(self.fallback)
        out = self.out[:n]
        return out.permute(0, 3, 1, 2) if self.chw else out


class _Mapping:
    def __init__(self, first: dict[Any, Any], size: int, memory: BatchMemory) -> None:
        self.columns = {key: builder(value, size, memory) for key, value in first.items()}

    def add(self, value: Any) -> None:
        if not isinstance(value, dict) or value.keys() != self.columns.keys():
            raise ValueError(
                f"items of one batch differ: {described(dict.fromkeys(self.columns))} then "
                f"{described(value)}"
            )
        for key, column in self.columns.items():
            column.add(value[key])

    def finish(self, n: int) -> Any:
        return {key: column.finish(n) for key, column in self.columns.items()}


class _Tuple:
    def __init__(self, first: tuple[Any, ...], size: int, memory: BatchMemory) -> None:
        self.columns = [builder(value, size, memory) for value in first]

    def add(self, value: Any) -> None:
        if len(value) != len(self.columns):
            raise ValueError(f"tuples of {len(value)} and {len(self.columns)} in one batch")
        for column, part in zip(self.columns, value, strict=True):
            column.add(part)

    def finish(self, n: int) -> Any:
        return BatchTuple(*(column.finish(n) for column in self.columns))


def builder(first: Any, size: int, memory: BatchMemory, *, rows: bool = False) -> Any:
    """What builds a batch column like ``collate`` would, from its first item.

    ``rows``: no ``PendingImage`` can arrive, so a dict or tuple with nothing to stack (the
    first item's values are neither arrays, tensors nor dicts or tuples) is kept whole and
    collated at the end, one list append per item rather than one per field.
    """
    if isinstance(first, dict):
        if rows and _flat(first.values()):
            return _Items(first)
        return _Mapping(first, size, memory)
    if isinstance(first, tuple):
        if rows and _flat(first):
            return _Items(first)
        return _Tuple(first, size, memory)
    if _stacks(first):
        return _Stacked(first, size, memory)
    return _Items(first)


def _flat(parts: Iterable[Any], depth: int = 0) -> bool:
    """Whether none of ``parts`` is stacked, nor holds (in dicts and tuples, a few levels
    deep) what is: a JSON value is collated at the end like a string."""
    for part in parts:
        if _stacks(part):
            return False
        if isinstance(part, (dict, tuple)):
            inner = part.values() if isinstance(part, dict) else part
            if depth > 2 or not _flat(inner, depth + 1):
                return False
    return True


def _stacks(value: Any) -> bool:
    """Whether a column starting with ``value`` is stacked as the items arrive."""
    torch = sys.modules.get("torch")
    return isinstance(value, (np.ndarray, PendingImage)) or (
        torch is not None and isinstance(value, torch.Tensor)
    )


def collate_columns(
    columns: dict[Any, list[Any]], *, tensors: bool = False, kinds: Kinds = None
) -> dict[Any, Any]:
    """``collate`` of dicts, from their columns (``same_key_columns``). ``kinds``: the
    types of each column's values, where known: text is then kept as it is, and numbers
    of one type converted without a look at each."""
    if kinds is None:
        return {key: collate(column, tensors=tensors) for key, column in columns.items()}
    return {key: _known(column, kinds.get(key), tensors) for key, column in columns.items()}


def _known(column: list[Any], types: AbstractSet[type] | None, tensors: bool) -> Any:
    if types == {str}:
        return column
    if types is not None and len(types) == 1 and next(iter(types)) in _PLAIN:
        return _converted(_numbers(column, types), tensors)
    return collate(column, tensors=tensors)
