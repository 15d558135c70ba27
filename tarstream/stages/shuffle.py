"""Shuffle: a seeded sample shuffle buffer."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Any, cast

import numpy as np

from ..errors import ResumeError, ResumeWarning
from ..plan.segments import spans_of_positions, subtract_spans
from ..stage import Addressable, Stage, State, delivered, is_addressable, items_of
from ..world import derive_seed

__all__ = ["Shuffle"]

_SALT = 0x5B0F
_DRAWS = 4096  # random numbers drawn from numpy at a time
_RUN = 128  # items a full buffer takes (and returns) at a time


class Shuffle(Stage[Any]):
    """Shuffle items through a buffer of ``buffer_size`` items.

    The first item is returned once ``initial`` items are buffered (default: the whole
    buffer); after that each output is replaced by up to two new inputs until the buffer is
    full. Which buffered item comes next is drawn from a generator seeded by (seed, epoch,
    rank, worker), so the order is identical on every run and differs between epochs.

    State: the source's state when the epoch started and the number of items returned.
    Resuming replays the buffer on item positions, then fetches only the items that are
    in it (by sidecar offsets), so the cost does not grow with the position in the epoch
    beyond counting. Without sidecars it replays by reading (and warns, ``ResumeWarning``).
    It says which items of the reader's plan it consumed (``tarstream.stage.Accounted``).

    A full buffer takes up to 128 items at a time (up to the next source error, which is
    raised after the items that would have come before it) and returns as many, in the
    same order as one at a time: besides the buffer, up to 128 items are held.
    """

    forwards_items = True

    START_KEY = "start"
    RETURNED_KEY = "returned"
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

    def _seed(self) -> int:
        context = self.require_context()
        seed = context.seed if self.seed is None else self.seed
        world = context.world
        return derive_seed(seed, context.epoch, world.rank, world.worker, _SALT)

    def _new_rng(self) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self._seed()))

    def _draws_at(self, first: int, n: int) -> np.ndarray:
        """Draws ``first..first + n`` of the epoch's generator, jumped to directly (PCG64
        advances by whole 64-bit outputs, one per float64 draw)."""
        bits = np.random.PCG64(self._seed())
        bits.advance(first)
        return np.random.Generator(bits).random(n)

    def _jump(self, used: int) -> None:
        """Leave ``_rng`` and ``_draws`` as ``next`` has them after ``used`` draws: blocks of
        ``_DRAWS`` drawn, what is left of the last one queued."""
        drawn = -(-used // _DRAWS) * _DRAWS
        bits = np.random.PCG64(self._seed())
        bits.advance(drawn)
        self._rng = np.random.Generator(bits)
        self._draws: list[float] = self._draws_at(used, drawn - used).tolist()[::-1]

    def reset(self, state: State | None = None) -> None:
        source = self.require_source()
        self._start = state[self.START_KEY] if state else None
        source.reset(self._start)
        self._start = source.get_state()
        self._follow(source)
        self._rng = self._new_rng()
        self._draws = []
        self._buffer: list[Any] = []
        self._exhausted = False
        self._returned = 0
        self._run: Iterator[Any] | None = None  # the items of a run being returned
        self._run_end = 0  # _returned once they are
        self._items = self._generate()
        returned = state[self.RETURNED_KEY] if state else 0
        if not returned:
            return
        if is_addressable(source):
            self._restore(returned)
            self._items = self._generate()  # over the restored buffer
            return
        warnings.warn(
            f"{self!r}: resuming by re-reading the {returned} items returned since the epoch "
            f"started: {self.require_source()!r} cannot locate items by position (shards "
            "without sidecars: `tarstream index PATTERN` builds them; or a lenient reader)",
            ResumeWarning,
            stacklevel=2,
        )
        for _ in range(returned):
            self.next()

    def _restore(self, returned: int) -> None:
        """Rebuild the buffer after ``returned`` items from positions, reading only its items."""
        source = cast(Addressable, self.require_source())
        available = source.remaining(self._start)
        positions, pulled = self._simulate(returned, available)
        self._buffer = source.fetch(self._start, positions)
        self._exhausted = pulled >= available
        self._returned = returned
        self.require_source().reset(source.advance(self._start, pulled))
        self._follow(self.require_source())

    def _follow(self, source: Stage[Any]) -> None:
        """Pull from ``source`` (just reset) through its own iterator where it has one:
        a call less per item than its ``next``."""
        self._source_items = items_of(source)
        self._source_next = self._source_items.__next__

    def _simulate(self, returned: int, available: int) -> tuple[list[int], int]:
        """Run ``returned`` steps of ``next`` on item positions instead of items.

        Returns the buffer (positions after the start state, in buffer order) and the
        number of items pulled from the source; leaves ``_rng`` and ``_draws`` where the
        real run would have them. Mirrors ``next`` step for step (the resume tests compare
        the two). The steady part, where each step pulls one item into a full buffer,
        costs what the buffer's size does, not what the steps do (``_steady``), so a
        resume late in a long epoch costs what one early does.
        """
        size = self.buffer_size
        buffer: list[int] = list(range(min(self.initial, available)))
        pulled = len(buffer)
        step = 0
        while step < returned:
            if step and len(buffer) == size - 1 and pulled < available:
                steady = min(returned - step, available - pulled)
                buffer = self._steady(buffer, pulled, step, steady)
                pulled += steady
                step += steady
                continue
            if step:
                for _ in range(2):
                    if len(buffer) >= size or pulled >= available:
                        break
                    buffer.append(pulled)
                    pulled += 1
            if not buffer:
                raise ValueError(f"state says {returned} items returned, the source had fewer")
            if not self._draws:
                self._draws = self._rng.random(_DRAWS).tolist()[::-1]
            j = int(self._draws.pop() * len(buffer))
            buffer[j] = buffer[-1]
            buffer.pop()
            step += 1
        return buffer, pulled

    def _steady(self, buffer: list[int], pulled: int, used: int, steps: int) -> list[int]:
        """``steps`` steps (draws ``used`` on) that each add item ``pulled + t`` to a full
        buffer and draw one.

        Step t draws slot j: the new item goes to slot j (the item there is returned), or
        is returned at once when j is the last slot. So each slot ends up holding the
        item of the last step that drew it, or what it held before. The draws are read
        backwards from the last step, in chunks jumped to directly, until every slot has
        been drawn: about ``size * ln(size)`` draws, however many steps there were.
        """
        size = self.buffer_size
        out = np.asarray(buffer, dtype=np.int64)
        unseen = np.ones(size - 1, dtype=bool)
        chunk = max(4 * size, _DRAWS)
        end = steps
        while end > 0 and unseen.any():
            begin = max(0, end - chunk)
            # = int(u * size), as next() does; latest step first
            slots = (self._draws_at(used + begin, end - begin) * size).astype(np.int64)[::-1]
            steps_back = np.arange(end - 1, begin - 1, -1)
            kept = slots < size - 1
            slot, where = np.unique(slots[kept], return_index=True)  # each slot's latest
            new = unseen[slot]
            out[slot[new]] = pulled + steps_back[kept][where[new]]
            unseen[slot[new]] = False
            end = begin
        self._jump(used + steps)
        result: list[int] = out.tolist()
        return result

    def delivered(self, state: State | None) -> np.ndarray:
        source = self.require_source()
        if not is_addressable(source):
            raise ResumeError(
                f"{self!r} reads from {source!r}: elastic resume through a shuffle needs the "
                "reader (with sidecars), or 1:1 stages over it such as map or decode, before it"
            )
        start = state[self.START_KEY] if state else None
        returned = state[self.RETURNED_KEY] if state else 0
        if not returned:
            spans: np.ndarray = delivered(source, start)
            return spans
        addressable = cast(Addressable, source)
        available = addressable.remaining(start)
        self._rng, self._draws = self._new_rng(), []
        buffer, pulled = self._simulate(returned, available)
        # what the source gave, less what is still in the buffer
        pulled_spans = delivered(source, addressable.advance(start, pulled))
        held = np.sort(addressable.positions(start, buffer))
        return subtract_spans(pulled_spans, spans_of_positions(held))

    def _pull(self) -> bool:
        try:
            self._buffer.append(self._source_next())
        except StopIteration:
            self._exhausted = True
            return False
        return True

    def next(self) -> Any:
        return next(self._items)

    def own_iterator(self) -> Iterator[Any]:
        return self._items

    def _generate(self) -> Iterator[Any]:
        """The items, from runs of them (``_runs``) joined in C."""
        return chain.from_iterable(self._runs())

    def _runs(self) -> Iterator[Iterable[Any]]:
        """The items in runs, one frame for the whole epoch: one item at a time while the
        buffer fills and drains, up to ``_RUN`` while it is full (``_while_full``)."""
        buffer, size, initial, pull = self._buffer, self.buffer_size, self.initial, self._pull
        take = self._source_next
        while True:
            if self._returned == 0:
                while len(buffer) < initial and pull():
                    pass
            elif len(buffer) == size - 1 and not self._exhausted:
                yield from self._while_full()  # until the source ends
                continue
            elif len(buffer) < size and not self._exhausted:
                # up to two new items while the buffer is not full: one, once it is
                try:
                    buffer.append(take())
                    if len(buffer) < size:
                        buffer.append(take())
                except StopIteration:
                    self._exhausted = True
            if not buffer:
                return
            draws = self._draws
            if not draws:
                draws = self._draws = self._rng.random(_DRAWS).tolist()[::-1]
            j = int(draws.pop() * len(buffer))
            last = buffer.pop()
            self._returned += 1
            if j == len(buffer):
                yield (last,)
            else:
                item, buffer[j] = buffer[j], last
                yield (item,)

    def _while_full(self) -> Iterator[Iterator[Any]]:
        """``_runs``' steps while the buffer is full, up to ``_RUN`` at a time: each pulls
        one item and returns one, the same draws in the same order. A source error is
        raised after the run of the items pulled before it."""
        buffer, source, draws = self._buffer, self._source_items, self._draws
        size = self.buffer_size
        last_slot = size - 1  # the buffer holds size - 1 items; the new one stands for it
        slots = _slots(draws, size)
        while True:
            if not draws:
                draws = self._draws = self._rng.random(_DRAWS).tolist()[::-1]
                slots = _slots(draws, size)
            wanted, failure = min(_RUN, len(draws)), None
            new: list[Any] = []
            try:
                new.extend(islice(source, wanted))
            except Exception as e:  # raised once the items pulled before it are out
                failure = e
            if new:  # the next len(new) draws, in order
                taken = slots[: -len(new) - 1 : -1]
                del draws[-len(new) :], slots[-len(new) :]
                out = []
                for item, j in zip(new, taken, strict=True):
                    if j == last_slot:
                        out.append(item)
                    else:
                        out.append(buffer[j])
                        buffer[j] = item
                self._run, self._run_end = iter(out), self._returned + len(out)
                yield self._run
                self._returned, self._run = self._run_end, None
            if failure is not None:
                raise failure
            if len(new) < wanted:
                self._exhausted = True
                return

    def get_state(self) -> State:
        returned = self._returned
        if self._run is not None:  # a run part returned
            returned = self._run_end - self._run.__length_hint__()  # type: ignore[attr-defined]
        return {self.START_KEY: self._start, self.RETURNED_KEY: returned}

    def __repr__(self) -> str:
        return f"Shuffle({self.buffer_size}, initial={self.initial})"


def _slots(draws: list[float], size: int) -> list[int]:
    """``int(u * size)`` for each of ``draws``, in one pass (numpy's float64 product, as
    Python's, truncated)."""
    slots: list[int] = (np.asarray(draws, np.float64) * size).astype(np.int64).tolist()
    return slots
