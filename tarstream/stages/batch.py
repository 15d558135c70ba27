"""Batch and Unbatch."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, islice
from typing import Any, Literal, cast

from ..format.rows import Row, sample_of, samples_of
from ..format.rows import columns as row_columns
from ..read.read_shards import ReadShards
from ..stage import Stage, State, items_of
from ..world import Context
from .collate import builder, collate_columns, fill, finish_batch, to_torch
from .collate import collate as default_collate
from .decode import Decode
from .deferred import PendingImage, image_source
from .memory import BatchMemory

__all__ = ["Batch", "Unbatch"]


class Batch(Stage[Any]):
    """Group items into batches of ``size``, combined by ``collate``.

    Args:
        partial: return a last batch smaller than ``size`` (else drop it).
        collate: the function combining a list of items (default:
            ``tarstream.stages.collate.collate``).
        tensors: "torch" (numbers and arrays become torch tensors, sharing the arrays'
            memory), "numpy" (numpy arrays), or "auto" (the default: "torch" where torch is
            installed, else "numpy"). A batch has the same container (a tuple for tuples, a
            dict for dicts) and the same types in one process and in ``tarstream.Loader``
            workers; a plain torch DataLoader turns numpy arrays into tensors itself, so
            there a batch is the same as elsewhere with "torch" (the default with torch).

    With the default collate, arrays and tensors are stacked into reused batch memory
    (``tarstream.stages.memory``; the pipeline's, given in its context, else the stage's
    own), and a stage that feeds the batch may leave its images to be decoded straight into
    the batch's rows (``tarstream.stages.deferred``). A strict ``Decode`` right before it
    is applied to a batch's samples a field at a time where it can (typed values of packed
    members, or text, classes and JSON as bytes: ``Decode.decoded_columns``), else to one
    sample after another.

    State: the source's (a batch is built within one call, so nothing is held between).
    """

    def __init__(
        self,
        size: int,
        *,
        partial: bool = True,
        collate: Callable[[Sequence[Any]], Any] | None = None,
        tensors: Literal["auto", "numpy", "torch"] = "auto",
    ) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if tensors not in ("auto", "numpy", "torch"):
            raise ValueError(f"tensors must be 'auto', 'numpy' or 'torch', got {tensors!r}")
        if tensors == "auto":
            tensors = "torch" if importlib.util.find_spec("torch") is not None else "numpy"
        self.tensors = tensors
        self.size = size
        self.partial = partial
        self.collate = collate if collate is not None else default_collate
        self._memory = BatchMemory()
        self._pending = False  # whether PendingImage values can arrive (see connect)
        self._decode: Decode | None = None  # the Decode before, applied here (see connect)

    def connect(self, source: Stage[Any] | None, context: Context) -> Stage[Any]:
        """A copy reading from ``source``; with the default collate, a stage that feeds it
        and can defer its images (``tarstream.stages.deferred``) is asked to."""
        clone = cast(Batch, super().connect(source, context))
        clone._memory = context.memory if context.memory is not None else BatchMemory()
        images = image_source(source)
        if clone.collate is default_collate and images is not None:
            clone._pending = images.defer_images()
        if clone.collate is default_collate and isinstance(source, Decode):
            clone._decode = source if source.decodes_lists() else None
        reader = clone._decode.source if clone._decode is not None else None
        while reader is not None and reader.forwards_items:  # a shuffle, say
            reader = reader.source
        if isinstance(reader, ReadShards):  # a block's samples may come as rows
            reader.rows = True
        return clone

    def reset(self, state: State | None = None) -> None:
        super().reset(state)
        if self._decode is not None:  # its source's items, decoded here
            self._items = items_of(self._decode.require_source())
        else:
            self._items = items_of(self.require_source())

    def next(self) -> Any:
        if self._decode is not None:
            return self._next_decoded(self._decode)
        if self.collate is default_collate:
            return self._next_stacked()
        items = list(islice(self._items, self.size))
        if not items or (len(items) < self.size and not self.partial):
            raise StopIteration
        batch = self.collate(items)
        return to_torch(batch) if self.tensors == "torch" else batch

    def _next_stacked(self, items: Iterator[Any] | None = None) -> Any:
        """The default collate, built as items arrive: each array or tensor is copied into
        the batch at once and let go, so a batch's decoded images are never all alive
        beside the batch (that doubled the memory in use and faulted in fresh pages)."""
        items = self._items if items is None else items
        first = next(items)
        column = builder(first, self.size, self._memory, rows=not self._pending or _plain(first))
        n = 1 + fill(column, items, self.size - 1)
        if n < self.size and not self.partial:
            raise StopIteration
        return finish_batch(column, n, self.tensors == "torch")

    def _next_decoded(self, decode: Decode) -> Any:
        """A batch of samples taken undecoded: where ``decode`` may decode samples like the
        first a field at a time, the batch's samples are taken at once and collated from
        the columns it decoded; else (or where it cannot after all) they are decoded one
        after another as ``_next_stacked`` takes them (a failure raises at its sample)."""
        first = next(self._items)
        if not isinstance(first, Row) and not decode.decodes_together(first):
            items = chain((first,), self._items)  # decoded otherwise (images): one at a time
            return self._next_stacked(map(decode.apply, map(sample_of, items)))
        samples = [first, *islice(self._items, self.size - 1)]
        taken = row_columns(samples)  # a block's samples, as the reader took them (rows)
        kinds = type(first).kinds if taken is not None else None  # each field's types
        columns = None if taken is None else decode.decoded_columns(samples, dict(taken), kinds)
        if columns is None:  # as dicts, as they would have come
            samples, kinds = samples_of(samples), None
            columns = decode.decoded_columns(samples)
        if columns is None:
            return self._next_stacked(map(decode.apply, samples))
        if taken is not None and kinds is not None:  # they hold of the columns not decoded
            kinds = {name: k for name, k in kinds.items() if columns[name] is taken[name]}
        if len(samples) < self.size and not self.partial:
            raise StopIteration
        return collate_columns(columns, tensors=self.tensors == "torch", kinds=kinds)

    def length(self, n: int) -> int:
        return -(-n // self.size) if self.partial else n // self.size

    def __repr__(self) -> str:
        return f"Batch({self.size}, partial={self.partial}, tensors={self.tensors!r})"


class Unbatch(Stage[Any]):
    """Split batches (lists, tuples of columns, dicts of columns, arrays) into items.

    State: the source's state before the current batch, and the position in it.
    """

    BEFORE_KEY = "before"
    POSITION_KEY = "position"

    def reset(self, state: State | None = None) -> None:
        source = self.require_source()
        self._before = state[self.BEFORE_KEY] if state else None
        source.reset(self._before)
        self._items: list[Any] = []
        self._position = 0
        if state and state[self.POSITION_KEY]:
            self._load()
            self._position = state[self.POSITION_KEY]

    def _load(self) -> None:
        source = self.require_source()
        self._before = source.get_state()
        self._items = _split(source.next())
        self._position = 0

    def next(self) -> Any:
        while self._position >= len(self._items):
            self._load()
        self._position += 1
        return self._items[self._position - 1]

    def get_state(self) -> State:
        if self._position >= len(self._items):
            return {self.BEFORE_KEY: self.require_source().get_state(), self.POSITION_KEY: 0}
        return {self.BEFORE_KEY: self._before, self.POSITION_KEY: self._position}


def _split(batch: Any) -> list[Any]:
    if isinstance(batch, dict):
        columns = {k: _split(v) for k, v in batch.items()}
        n = len(next(iter(columns.values()))) if columns else 0
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if isinstance(batch, tuple):
        return [tuple(row) for row in zip(*(_split(c) for c in batch), strict=True)]
    return list(batch)


def _plain(item: Any) -> bool:
    """Whether a batch led by ``item`` holds no images left to decode: ``item`` has none (a
    field's values are decoded alike; the items of a batch have the same fields)."""
    values = item.values() if isinstance(item, dict) else item if isinstance(item, tuple) else ()
    return not any(isinstance(v, PendingImage) for v in values) and not isinstance(
        item, PendingImage
    )
