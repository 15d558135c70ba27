"""The resumable-iterator contract every pipeline stage follows (after ``torchdata.nodes``).

The base class owns ``__iter__``, ``__next__``, ``state_dict`` and ``load_state_dict``. A
stage implements three methods:

- ``reset(state)``: start over, or, given a state from ``get_state``, continue from there;
  a stage resets its source (``self.source``) with the source's part of its state.
- ``next()``: return the next item, or raise StopIteration at the end.
- ``get_state()``: a small JSON-serializable dict from which ``reset`` continues exactly.

Stages are built without a source; ``Pipeline`` connects copies of them, so one stage
object can serve several pipelines. ``tarstream.testing.assert_resumable`` checks the
contract for any stage.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .world import Context

__all__ = ["FunctionStage", "Stage", "State", "Transform", "upstream"]

T = TypeVar("T")
State = dict[str, Any]


class Stage(Generic[T]):
    """Base of every stage. Subclasses implement ``reset``, ``next`` and ``get_state``."""

    #: Whether the stage keeps one output per input (``len`` passes through it).
    preserves_count = False

    def __init__(self) -> None:
        self.source: Stage[Any] | None = None
        self.context: Context | None = None
        self._initial_state: State | None = None
        self._started = False

    # -- what a stage implements -------------------------------------------------------
    def reset(self, state: State | None = None) -> None:
        """Start over, or continue from ``state``."""
        if self.source is not None:
            self.source.reset(state.get("source") if state else None)

    def next(self) -> T:
        """Return the next item; raise StopIteration at the end."""
        raise NotImplementedError

    def items(self) -> Iterator[T] | None:
        """An iterator over the items ``next`` would return (after ``reset``), when the
        stage has one; a pipeline ending in this stage then iterates it directly."""
        return None

    def get_state(self) -> State:
        """Return the state ``reset`` continues from."""
        return {"source": self.source.get_state()} if self.source is not None else {}

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
        if self.source is not None:
            self.source.close()

    def connect(self, source: Stage[Any] | None, context: Context) -> Stage[T]:
        """Return a copy of this stage reading from ``source`` (the stage itself is unchanged)."""
        clone = copy.copy(self)
        clone.source = source
        clone.context = context
        clone._initial_state = None
        clone._started = False
        return clone

    # -- positions: what fast and elastic resume build on -------------------------------------
    # A stage is *addressable* when its item number i can be fetched without producing the
    # items before it: the reader (with sidecars) and 1:1 transforms over it. States passed
    # to these methods are this stage's states; positions count the reader's plan.
    def addressable(self) -> bool:
        """Whether ``fetch``, ``advance`` and ``remaining`` work on this stage."""
        return False

    def remaining(self, state: State | None) -> int:
        """Items left after ``state``."""
        raise self._no_positions()

    def advance(self, state: State | None, n: int) -> State:
        """The state after ``n`` more items than ``state``, without producing them."""
        raise self._no_positions()

    def fetch(self, state: State | None, offsets: list[int]) -> list[Any]:
        """The items ``offsets`` places after ``state`` (0: the next one), in that order."""
        raise self._no_positions()

    def delivered(self, state: State | None) -> Any:
        """Which items of the reader's plan were consumed at ``state``: a numpy bool mask.

        A stage whose state is only its source's (map, filter, decode, batch) consumed
        what its source did; other stages say how, or raise ``ResumeError``.
        """
        if self.source is not None and (state is None or set(state) == {"source"}):
            return self.source.delivered(state["source"] if state else None)
        raise self._no_positions()

    def _no_positions(self) -> Exception:
        from .errors import ResumeError

        return ResumeError(
            f"{self!r} cannot locate its items by position, so elastic resume (a changed "
            "number of workers or ranks) is not possible through it"
        )

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


S = TypeVar("S", bound="Stage[Any]")


def upstream(stage: Stage[Any] | None, kind: type[S]) -> S | None:
    """The nearest stage of ``kind`` at or before ``stage`` in a connected chain."""
    while stage is not None and not isinstance(stage, kind):
        stage = stage.source
    return stage


class Transform(Stage[T]):
    """A stage that turns each item of its source into one item (``apply``)."""

    preserves_count = True

    def apply(self, item: Any) -> T:
        raise NotImplementedError

    def next(self) -> T:
        return self.apply(self.require_source().next())

    def addressable(self) -> bool:
        return self.require_source().addressable()

    def remaining(self, state: State | None) -> int:
        return self.require_source().remaining(state["source"] if state else None)

    def advance(self, state: State | None, n: int) -> State:
        return {"source": self.require_source().advance(state["source"] if state else None, n)}

    def fetch(self, state: State | None, offsets: list[int]) -> list[Any]:
        items = self.require_source().fetch(state["source"] if state else None, offsets)
        return [self.apply(item) for item in items]


class FunctionStage(Stage[Any]):
    """Wrap a generator function ``fn(iterable) -> iterator`` as a stage.

    Its state is the source's state when it started plus the number of items it returned;
    restoring replays the function from there and drops that many items, so it is exact
    for a function whose output depends only on its input, at the cost of re-reading.
    """

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
        self._start = state["start"] if state else None
        source.reset(self._start)
        self._start = source.get_state()
        self._iterator = iter(self.fn(_Drain(source)))
        self._count = 0
        for _ in range(state["count"] if state else 0):
            next(self._iterator)
            self._count += 1

    def next(self) -> Any:
        assert self._iterator is not None, "reset() first"
        item = next(self._iterator)
        self._count += 1
        return item

    def get_state(self) -> State:
        return {"start": self._start, "count": self._count}

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
