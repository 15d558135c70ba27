"""The resumable-iterator contract every pipeline stage follows (after ``torchdata.nodes``).

The base class owns ``__iter__``, ``__next__``, ``state_dict`` and ``load_state_dict``. A
stage implements three methods:

- ``reset(state)``: start over, or, given a state from ``get_state``, continue from there;
  a stage resets each of its sources with that source's part of its state.
- ``next()``: return the next item, or raise StopIteration at the end.
- ``get_state()``: a small JSON-serializable dict from which ``reset`` continues exactly.
  Its keys are class constants (``SOURCE_KEY`` for the source's part).

Stages are built without a source; ``Pipeline`` connects copies of them, so one stage
object can serve several pipelines. A stage usually reads from the stage before it (its
``source``); a stage may instead read from several named sources, chains of stages it was
built with (``inputs``), each connected with it and resumed from its own part of its state
(the part under the source's name). ``tarstream.testing.assert_resumable`` checks the
contract for any stage.

Positions, what fast and elastic resume build on, are two optional capabilities, each a
small protocol: ``Addressable`` (item number *i* can be fetched without producing the items
before it: the reader with sidecars, and 1:1 transforms over it) and ``Accounted`` (a stage
says which items of the reader's plan were consumed at a state: the reader, shuffles).
``is_addressable`` and ``delivered`` are how other code asks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from .errors import ResumeError
from .world import Context

__all__ = [
    "Accounted",
    "Addressable",
    "FunctionStage",
    "Stage",
    "State",
    "Transform",
    "check_errors",
    "connect_chain",
    "delivered",
    "is_addressable",
    "items_of",
    "upstream",
    "with_context",
]

T = TypeVar("T")
State = dict[str, Any]


class Stage(Generic[T]):
    """Base of every stage. Subclasses implement ``reset``, ``next`` and ``get_state``."""

    #: The key of the source's part in the state of a stage with one source.
    SOURCE_KEY = "source"
    #: Whether the stage keeps one output per input (``len`` passes through it).
    preserves_count = False
    #: Whether the stage hands on its input's field values as they are, only choosing or
    #: renaming fields (to_tuple, select, rename): a ``Batch`` looks through such stages
    #: for a stage that can defer its images to it (``tarstream.stages.deferred``).
    passes_values = False
    #: Whether the stage hands on its input's items themselves, unchanged (reordered,
    #: skipped or repeated: shuffle, take, skip, repeat): a ``Decode`` looks through such
    #: stages for the reader, to take packed values typed (``ReadShards.typed``).
    forwards_items = False

    def __init__(self) -> None:
        self.source: Stage[Any] | None = None
        #: Every connected source by its state key: ``{SOURCE_KEY: source}``, or the
        #: named sources of ``inputs``.
        self.sources: dict[str, Stage[Any]] = {}
        self.context: Context | None = None
        self._initial_state: State | None = None
        self._started = False

    # -- what a stage implements -------------------------------------------------------
    def reset(self, state: State | None = None) -> None:
        """Start over, or continue from ``state``."""
        for name, source in self.sources.items():
            source.reset(state.get(name) if state else None)

    def next(self) -> T:
        """Return the next item; raise StopIteration at the end."""
        raise NotImplementedError

    def own_iterator(self) -> Iterator[T] | None:
        """An iterator over the items ``next`` would return (after ``reset``), when the
        stage has one; a pipeline ending in this stage then iterates it directly."""
        return None

    def get_state(self) -> State:
        """Return the state ``reset`` continues from."""
        return {name: source.get_state() for name, source in self.sources.items()}

    def inputs(self) -> Mapping[str, Sequence[Stage[Any]]]:
        """The named sources of a stage that reads from several: chains of stages (the
        first of each a source, such as a shard list), connected with this stage."""
        return {}

    def input_context(self, name: str, context: Context) -> Context:
        """The context the named source ``name`` is connected in (default: the stage's)."""
        return context

    # -- what the base class owns --------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        self.reset(self._initial_state)
        self._initial_state = None
        self._started = True
        return self

    def __next__(self) -> T:
        if not self._started:
            iter(self)
        return self.next()

    def state_dict(self) -> State:
        """Return the state after the last item returned (JSON-serializable)."""
        return self.get_state()

    def load_state_dict(self, state: State) -> None:
        """Continue from ``state`` at the next ``iter()``."""
        self._initial_state = state
        self._started = False

    def close(self) -> None:
        """Release resources (open shards); the stage can be iterated again afterwards."""
        for source in self.sources.values():
            source.close()

    def connect(self, source: Stage[Any] | None, context: Context) -> Stage[T]:
        """Return a copy of this stage reading from ``source`` and its named sources, all
        connected in ``context`` (the stage itself is unchanged)."""
        named = self.inputs()
        if named and source is not None:
            raise TypeError(
                f"{type(self).__name__} reads from its named sources {sorted(named)}; "
                "it must be the first stage of a pipeline"
            )
        if self.SOURCE_KEY in named:
            raise ValueError(f"a named source cannot be called {self.SOURCE_KEY!r}")
        clone = copy.copy(self)
        clone.source = source
        clone.sources = {self.SOURCE_KEY: source} if source is not None else {}
        clone.sources.update(
            {
                name: connect_chain(chain, self.input_context(name, context))
                for name, chain in named.items()
            }
        )
        clone.context = context
        clone._initial_state = None
        clone._started = False
        return clone

    def require_source(self) -> Stage[Any]:
        if self.source is None:
            raise TypeError(f"{type(self).__name__} needs a source stage before it")
        return self.source

    def require_context(self) -> Context:
        if self.context is None:
            raise TypeError(f"{type(self).__name__} is not part of a pipeline")
        return self.context

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@runtime_checkable
class Addressable(Protocol):
    """A stage whose item number *i* can be fetched without producing the items before it.

    States passed to these methods are the stage's own; positions count the reader's plan.
    """

    def addressable(self) -> bool:
        """Whether the other methods work on this stage (in its current pipeline)."""

    def remaining(self, state: State | None) -> int:
        """Items left after ``state``."""

    def advance(self, state: State | None, n: int) -> State:
        """The state after ``n`` more items than ``state``, without producing them."""

    def fetch(self, state: State | None, offsets: list[int]) -> list[Any]:
        """The items ``offsets`` places after ``state`` (0: the next one), in that order."""

    def positions(self, state: State | None, offsets: list[int]) -> Any:
        """The reader's plan positions of those items (a numpy array)."""


@runtime_checkable
class Accounted(Protocol):
    """A stage that can say which items of the reader's plan were consumed at a state."""

    def delivered(self, state: State | None) -> Any:
        """The reader's plan positions consumed, as spans: an ``(n, 2)`` numpy array of
        sorted, disjoint ``[first, end)`` rows (``tarstream.plan.segments``)."""


def is_addressable(stage: Stage[Any] | None) -> bool:
    """Whether ``stage`` is ``Addressable`` and can address its items now."""
    return isinstance(stage, Addressable) and stage.addressable()


def delivered(stage: Stage[Any], state: State | None) -> Any:
    """Which items of the reader's plan ``stage`` consumed at ``state`` (spans of plan
    positions, see ``Accounted``).

    A stage whose state is only its source's (map, filter, decode, batch) consumed what its
    source did; an ``Accounted`` stage says how.

    Raises:
        ResumeError: a stage on the way cannot account for its items.
    """
    if isinstance(stage, Accounted):
        return stage.delivered(state)
    key = Stage.SOURCE_KEY
    if stage.source is not None and (state is None or set(state) == {key}):
        return delivered(stage.source, state[key] if state else None)
    raise no_positions(stage)


def no_positions(stage: Stage[Any]) -> ResumeError:
    """The error for a stage that cannot locate its items by position."""
    return ResumeError(
        f"{stage!r} cannot locate its items by position, so elastic resume (a changed "
        "number of workers or ranks) is not possible through it"
    )


S = TypeVar("S", bound="Stage[Any]")


def items_of(source: Stage[Any]) -> Iterator[Any]:
    """``source``'s items (``source`` just reset) as an iterator: its own iterator where it
    has one, else one calling its ``next`` until StopIteration."""
    items = source.own_iterator()
    return items if items is not None else _calling(source.next)


def _calling(next_item: Callable[[], Any]) -> Iterator[Any]:
    while True:
        try:
            yield next_item()
        except StopIteration:
            return


def upstream(stage: Stage[Any] | None, kind: type[S]) -> S | None:
    """The nearest stage of ``kind`` at or before ``stage`` in a connected chain."""
    while stage is not None and not isinstance(stage, kind):
        stage = stage.source
    return stage


def connect_chain(stages: Sequence[Stage[Any]], context: Context) -> Stage[Any]:
    """Connect copies of ``stages``, each reading from the one before; return the last."""
    chain: Stage[Any] | None = None
    for stage in stages:
        chain = stage.connect(chain, context)
    if chain is None:
        raise ValueError("a chain needs at least one stage")
    return chain


def with_context(stage: Stage[Any], context: Context) -> None:
    """Set ``context`` on a connected stage and everything it reads from."""
    stage.context = context
    for source in stage.sources.values():
        with_context(source, context)


class Transform(Stage[T]):
    """A stage that turns each item of its source into one item (``apply``).

    It is ``Addressable`` when its source is.
    """

    preserves_count = True

    def apply(self, item: Any) -> T:
        raise NotImplementedError

    def next(self) -> T:
        return self.apply(self.require_source().next())

    def maps_each_item(self) -> bool:
        """Whether the items are ``apply`` of the source's, one for one (a subclass whose
        ``next`` does more, such as skip failures, says when)."""
        return type(self).next is Transform.next

    def own_iterator(self) -> Iterator[T] | None:
        """``apply`` mapped over the source's own iterator, where it has one."""
        items = self.require_source().own_iterator() if self.maps_each_item() else None
        return None if items is None else map(self.apply, items)

    def _addressed(self) -> Addressable:
        source = self.require_source()
        if not isinstance(source, Addressable):
            raise no_positions(self)
        return source

    def addressable(self) -> bool:
        return is_addressable(self.require_source())

    def remaining(self, state: State | None) -> int:
        return self._addressed().remaining(state[self.SOURCE_KEY] if state else None)

    def advance(self, state: State | None, n: int) -> State:
        source = self._addressed()
        return {self.SOURCE_KEY: source.advance(state[self.SOURCE_KEY] if state else None, n)}

    def fetch(self, state: State | None, offsets: list[int]) -> list[Any]:
        items = self._addressed().fetch(state[self.SOURCE_KEY] if state else None, offsets)
        return [self.apply(item) for item in items]

    def positions(self, state: State | None, offsets: list[int]) -> Any:
        return self._addressed().positions(state[self.SOURCE_KEY] if state else None, offsets)


class FunctionStage(Stage[Any]):
    """Wrap a generator function ``fn(iterable) -> iterator`` as a stage.

    Its state is the source's state when it started plus the number of items it returned;
    restoring replays the function from there and drops that many items, so it is exact
    for a function whose output depends only on its input, at the cost of re-reading.
    """

    START_KEY = "start"
    COUNT_KEY = "count"

    def __init__(self, fn: Callable[[Iterable[Any]], Iterable[Any]]) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"expected a stage or a generator function, got {fn!r}")
        self.fn = fn
        self._iterator: Iterator[Any] | None = None
        self._start: State | None = None
        self._count = 0

    def reset(self, state: State | None = None) -> None:
        source = self.require_source()
        self._start = state[self.START_KEY] if state else None
        source.reset(self._start)
        self._start = source.get_state()
        self._iterator = iter(self.fn(_Drain(source)))
        self._count = 0
        for _ in range(state[self.COUNT_KEY] if state else 0):
            next(self._iterator)
            self._count += 1

    def next(self) -> Any:
        if self._iterator is None:
            raise TypeError(f"{self!r}: reset() before next()")
        item = next(self._iterator)
        self._count += 1
        return item

    def get_state(self) -> State:
        return {self.START_KEY: self._start, self.COUNT_KEY: self._count}

    def __repr__(self) -> str:
        return f"FunctionStage({getattr(self.fn, '__name__', self.fn)!r})"


class _Drain:
    """Iterate a stage without resetting it."""

    def __init__(self, stage: Stage[Any]) -> None:
        self.stage = stage

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.stage.next()
            except StopIteration:
                return


def check_errors(errors: str, max_errors: int | None) -> None:
    """Check a stage's error policy: ``errors`` "strict" (raise) or "skip" (count and go
    on), and ``max_errors`` None or >= 0 (the most skipped per epoch before raising)."""
    if errors not in ("strict", "skip"):
        raise ValueError(f"errors must be 'strict' or 'skip', got {errors!r}")
    if max_errors is not None and max_errors < 0:
        raise ValueError(f"max_errors must be >= 0, got {max_errors}")
