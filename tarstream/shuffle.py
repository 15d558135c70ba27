"""Shuffle: a seeded sample shuffle buffer."""

from __future__ import annotations

from typing import Any

import numpy as np

from .stage import Stage, State
from .world import derive_seed

__all__ = ["Shuffle"]

_SALT = 0x5B0F
_DRAWS = 4096  # random numbers drawn from numpy at a time


class Shuffle(Stage[Any]):
    """Shuffle items through a buffer of ``buffer_size`` items.

    The first item is returned once ``initial`` items are buffered (default: the whole
    buffer); after that each output is replaced by up to two new inputs until the buffer is
    full. Which buffered item comes next is drawn from a generator seeded by (seed, epoch,
    rank, worker), so the order is identical on every run and differs between epochs.

    State: the source's state when the epoch started and the number of items returned.
    Resuming replays the buffer from there (reading, not decoding, when the shuffle comes
    before decoding), so the sequence continues exactly as it would have.
    """

    preserves_count = True

    def __init__(
        self, buffer_size: int, *, initial: int | None = None, seed: int | None = None
    ) -> None:
        super().__init__()
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if initial is not None and not 1 <= initial <= buffer_size:
            raise ValueError(f"initial must be in 1..{buffer_size}, got {initial}")
        self.buffer_size = buffer_size
        self.initial = buffer_size if initial is None else initial
        self.seed = seed

    def reset(self, state: State | None = None) -> None:
        source = self.require_source()
        context = self.require_context()
        self._start = state["start"] if state else None
        source.reset(self._start)
        self._start = source.get_state()
        seed = context.seed if self.seed is None else self.seed
        world = context.world
        self._rng = np.random.default_rng(
            derive_seed(seed, context.epoch, world.rank, world.worker, _SALT)
        )
        self._draws: list[float] = []
        self._buffer: list[Any] = []
        self._exhausted = False
        self._returned = 0
        for _ in range(state["returned"] if state else 0):
            self.next()

    def _pull(self) -> bool:
        try:
            self._buffer.append(self.require_source().next())
        except StopIteration:
            self._exhausted = True
            return False
        return True

    def next(self) -> Any:
        buffer = self._buffer
        if self._returned == 0:
            while len(buffer) < self.initial and self._pull():
                pass
        else:
            for _ in range(2):
                if len(buffer) >= self.buffer_size or self._exhausted or not self._pull():
                    break
        if not buffer:
            raise StopIteration
        if not self._draws:
            self._draws = self._rng.random(_DRAWS).tolist()[::-1]
        j = int(self._draws.pop() * len(buffer))
        buffer[j], buffer[-1] = buffer[-1], buffer[j]
        self._returned += 1
        return buffer.pop()

    def get_state(self) -> State:
        return {"start": self._start, "returned": self._returned}

    def __repr__(self) -> str:
        return f"Shuffle({self.buffer_size}, initial={self.initial})"
