"""Take, Skip, Repeat and Equalize."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..stage import Stage, State, with_context
from ..world import Context

__all__ = ["Equalize", "EqualizeStats", "Repeat", "Skip", "Take"]


class Take(Stage[Any]):
    """Return the first ``n`` items. State: the source's and the count returned."""

    forwards_items = True

    COUNT_KEY = "count"

    def __init__(self, n: int) -> None:
        super().__init__()
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = n

    def reset(self, state: State | None = None) -> None:
        super().reset(state)
        self._count = state[self.COUNT_KEY] if state else 0

    def next(self) -> Any:
        if self._count >= self.n:
            raise StopIteration
        item = self.require_source().next()
        self._count += 1
        return item

    def get_state(self) -> State:
        return {**super().get_state(), self.COUNT_KEY: self._count}

    def length(self, n: int) -> int:
        return min(n, self.n)


class Skip(Stage[Any]):
    """Drop the first ``n`` items. State: the source's and whether they are dropped yet."""

    forwards_items = True

    SKIPPED_KEY = "skipped"

    def __init__(self, n: int) -> None:
        super().__init__()
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = n

    def reset(self, state: State | None = None) -> None:
        super().reset(state)
        self._skipped = state[self.SKIPPED_KEY] if state else False

    def next(self) -> Any:
        source = self.require_source()
        if not self._skipped:
            self._skipped = True
            for _ in range(self.n):
                source.next()
        return source.next()

    def get_state(self) -> State:
        return {**super().get_state(), self.SKIPPED_KEY: self._skipped}

    def length(self, n: int) -> int:
        return max(0, n - self.n)


class Repeat(Stage[Any]):
    """Iterate the source ``times`` epochs in a row (None: forever), epoch after epoch.

    Each repetition re-plans its source with the next epoch number, so orders differ.
    State: the repetition number and the source's state in it.
    """

    forwards_items = True

    ROUND_KEY = "round"

    def __init__(self, times: int | None = None) -> None:
        super().__init__()
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times}")
        self.times = times

    def reset(self, state: State | None = None) -> None:
        self._base_context = self.require_context()
        self._round = state[self.ROUND_KEY] if state else 0
        self._start_round(state[self.SOURCE_KEY] if state else None)

    def _start_round(self, state: State | None) -> None:
        context = self._base_context
        source = self.require_source()
        with_context(
            source, type(context)(context.seed, context.epoch + self._round, context.world)
        )
        source.reset(state)

    def next(self) -> Any:
        while True:
            try:
                return self.require_source().next()
            except StopIteration:
                self._round += 1
                if self.times is not None and self._round >= self.times:
                    raise
                self._start_round(None)

    def get_state(self) -> State:
        return {self.ROUND_KEY: self._round, **super().get_state()}

    def length(self, n: int) -> int | None:
        return None if self.times is None else n * self.times


@dataclass
class EqualizeStats:
    """Items an ``Equalize`` stage repeated to make up its count, in this process."""

    padded: int = 0

    def add(self, other: EqualizeStats) -> None:
        self.padded += other.padded

    def since(self, earlier: EqualizeStats) -> EqualizeStats:
        return EqualizeStats(self.padded - earlier.padded)


class Equalize(Stage[Any]):
    """Deliver exactly ``target(context)`` items: where the source ends short (a filter, a
    lenient reader's skips), it starts again from the epoch's beginning and repeats its
    items, counted in ``stats.padded``; it stops at the target.

    ``target`` gives the count a copy would deliver if nothing were dropped (see
    ``Pipeline.split``). State: the source's, the count delivered, the passes over the
    source begun after the first, and the count of this pass.
    """

    forwards_items = True

    COUNT_KEY, PASSES_KEY, IN_PASS_KEY = "count", "passes", "in_pass"

    def __init__(self, target: Callable[[Context], int]) -> None:
        super().__init__()
        self.target = target
        self.stats = EqualizeStats()

    def reset(self, state: State | None = None) -> None:
        super().reset(state)
        self._target = self.target(self.require_context())
        self._count = state[self.COUNT_KEY] if state else 0
        self._passes = state[self.PASSES_KEY] if state else 0
        self._in_pass = state[self.IN_PASS_KEY] if state else 0

    def next(self) -> Any:
        if self._count >= self._target:
            raise StopIteration
        source = self.require_source()
        while True:
            try:
                item = source.next()
                break
            except StopIteration:
                if not self._in_pass:
                    raise  # a pass with nothing in it: nothing to repeat
                self._passes, self._in_pass = self._passes + 1, 0
                source.reset(None)
        if self._passes:
            self.stats.padded += 1
        self._count += 1
        self._in_pass += 1
        return item

    def get_state(self) -> State:
        return {
            **super().get_state(),
            self.COUNT_KEY: self._count,
            self.PASSES_KEY: self._passes,
            self.IN_PASS_KEY: self._in_pass,
        }

    def length(self, n: int) -> int:
        return n  # the count without drops, which is what it makes up to
