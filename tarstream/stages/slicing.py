"""Take, Skip and Repeat."""

from __future__ import annotations

from typing import Any

from ..stage import Stage, State, with_context

__all__ = ["Repeat", "Skip", "Take"]


class Take(Stage[Any]):
    """Return the first ``n`` items. State: the source's and the count returned."""

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
