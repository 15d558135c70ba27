"""Mix: draw items from several sources by weight, in a seeded order that resumes exactly.

Draw *t* (the *t*-th item this copy delivers) picks a source from the weights in force at
*t* among the sources still drawn from: a uniform number from a generator seeded by (seed,
epoch, rank, worker, t // 4096) against the cumulative weights. The order is a pure
function of those numbers and of which sources have ended, so a state of a few numbers
(draws made, each source's loops and whether it has ended, costs delivered) plus each
source's own state resumes it exactly; nothing is replayed.

Weights: fixed numbers, a function of the draw number (``lambda t: ...``), or a schedule of
``(from_draw, weights)`` pairs. With ``cost`` (a function of an item, such as its number of
tokens) the weights are shares of cost, not of items: each source is drawn with
probability proportional to its weight divided by the mean cost of what it has delivered
so far (1 before its first item).

Sources are chains of stages (each with its own shuffle and rank/worker splits, connected
with its own seed). ``stop``: "first" ends the mix when a source it draws from ends;
"all" starts an ended source again (its next epoch) until every source has ended once;
"never" starts ended sources again for ever. A source with nothing to give right after a
start (an empty share of this copy) is dropped from the draws.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import ArgumentError
from ..stage import Stage, State, connect_chain
from ..world import Context

__all__ = ["Mix", "MixStats", "Weights"]

Stop = Literal["first", "all", "never"]
#: Fixed weights, a function of the draw number, or ``[(from_draw, weights), ...]``.
Weights = Sequence[float] | Callable[[int], Sequence[float]] | Sequence[tuple[int, Sequence[float]]]
_BLOCK = 4096


@dataclass
class MixStats:
    """Items (and, with a cost, cost) delivered per source, and each source's restarts."""

    samples: Counter[str] = field(default_factory=Counter)
    cost: dict[str, float] = field(default_factory=dict)
    loops: Counter[str] = field(default_factory=Counter)

    def add(self, other: MixStats) -> None:
        """Add ``other``'s counts to these (the stats of several workers, say)."""
        self.samples.update(other.samples)
        for name, cost in other.cost.items():
            self.cost[name] = self.cost.get(name, 0.0) + cost
        self.loops.update(other.loops)

    def since(self, earlier: MixStats) -> MixStats:
        """What was counted after ``earlier``, a copy of these stats taken before."""
        cost = {name: c - earlier.cost.get(name, 0.0) for name, c in self.cost.items()}
        return MixStats(self.samples - earlier.samples, cost, self.loops - earlier.loops)

    def shares(self) -> dict[str, float]:
        """Each source's share of the items (or, with a cost, of the cost) delivered."""
        counts: Mapping[str, float] = self.cost if self.cost else self.samples
        total = sum(counts.values()) or 1
        return {name: counts[name] / total for name in sorted(counts)}


class Mix(Stage[Any]):
    """Draw from named chains of stages by weight; see the module docstring.

    Args:
        sources: (name, chain of stages, seed) for each source; its chain is connected in
            the mix's world with its own seed.
        weights: fixed, a function of the draw number, or a schedule (default: equal).
        seed: seed of the draws (with the epoch, rank and worker).
        stop: "first", "all" or "never".
        cost: a function of an item giving its cost (weights are then shares of cost).
        length: items per epoch over all copies (ranks x workers, each drawing its
            share); the epoch ends there whatever ``stop`` says (for "never": the length
            of an epoch of an endless mixture).

    State: draws made, per source loops, ended flags, whether it is fresh from a restart,
    items and cost delivered, and each source's state.
    """

    DRAWS_KEY, LOOPS_KEY, ENDED_KEY, FRESH_KEY = "draws", "loops", "ended", "fresh"
    COUNTS_KEY, COST_KEY, SOURCES_KEY = "counts", "cost", "sources"

    def __init__(
        self,
        sources: Sequence[tuple[str, Sequence[Stage[Any]], int]],
        weights: Weights | None = None,
        *,
        seed: int = 0,
        stop: Stop = "first",
        cost: Callable[[Any], float] | None = None,
        length: int | None = None,
    ) -> None:
        super().__init__()
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.epoch_length = length
        if len(sources) < 1:
            raise ValueError("mix needs at least one source")
        self.names = [name for name, _, _ in sources]
        if len(set(self.names)) < len(self.names):
            raise ValueError(f"source names must differ, got {self.names}")
        self.chains = {name: tuple(chain) for name, chain, _ in sources}
        self.seeds = {name: seed for name, _, seed in sources}
        if stop not in ("first", "all", "never"):
            raise ValueError(f"stop must be 'first', 'all' or 'never', got {stop!r}")
        if cost is not None and not callable(cost):
            raise ArgumentError(f"cost is a function of an item, got {cost!r}")
        self.weights = _weights(weights, len(sources))
        self.seed, self.stop, self.cost = seed, stop, cost
        self.stats = MixStats()
        self._block: tuple[int, np.ndarray] = (-1, np.empty(0))

    def inputs(self) -> Mapping[str, Sequence[Stage[Any]]]:
        return self.chains

    def input_context(self, name: str, context: Context) -> Context:
        """Each source is connected in the mix's world with its own seed (its shuffles are
        those it has alone)."""
        return self._own(name, 0, context)

    def _own(self, name: str, loops: int, context: Context) -> Context:
        """The context of source ``name`` in its epoch after ``loops`` restarts (after an
        elastic resume, its first epoch's rest: the mix's context holds it by name)."""
        rest = context.rest.get(name) if isinstance(context.rest, dict) and not loops else None
        return Context(self.seeds[name], context.epoch + loops, context.world, rest, context.memory)

    # -- state ------------------------------------------------------------------------------
    def reset(self, state: State | None = None) -> None:
        n = len(self.names)
        self._draws = int(state[self.DRAWS_KEY]) if state else 0
        self._loops = list(state[self.LOOPS_KEY]) if state else [0] * n
        self._ended = list(state[self.ENDED_KEY]) if state else [False] * n
        self._counts = list(state[self.COUNTS_KEY]) if state else [0] * n
        self._costs = [float(c) for c in state[self.COST_KEY]] if state else [0.0] * n
        # whether a source has given nothing since it was started again
        self._fresh = list(state[self.FRESH_KEY]) if state else [False] * n
        parts = state[self.SOURCES_KEY] if state else {}
        for i, name in enumerate(self.names):
            if self._loops[i]:
                self._restart(i)
            self.sources[name].reset(parts.get(name))

    def get_state(self) -> State:
        return {
            self.DRAWS_KEY: self._draws,
            self.LOOPS_KEY: list(self._loops),
            self.ENDED_KEY: list(self._ended),
            self.FRESH_KEY: list(self._fresh),
            self.COUNTS_KEY: list(self._counts),
            self.COST_KEY: list(self._costs),
            self.SOURCES_KEY: {name: s.get_state() for name, s in self.sources.items()},
        }

    # -- drawing ----------------------------------------------------------------------------
    def share(self) -> int | None:
        """Items this copy draws per epoch (None: until ``stop`` ends it)."""
        if self.epoch_length is None:
            return None
        world = self.require_context().world
        copies = world.world_size * world.num_workers
        copy = world.rank * world.num_workers + world.worker
        return self.epoch_length // copies + (copy < self.epoch_length % copies)

    def next(self) -> Any:
        share = self.share()
        if share is not None and self._draws >= share:
            raise StopIteration
        while True:
            i = self._choose()
            name = self.names[i]
            try:
                item = self.sources[name].next()
            except StopIteration:
                self._source_ended(i)
                continue
            self._fresh[i] = False
            self._draws += 1
            self._counts[i] += 1
            self.stats.samples[name] += 1
            if self.cost is not None:
                cost = float(self.cost(item))
                self._costs[i] += cost
                self.stats.cost[name] = self.stats.cost.get(name, 0.0) + cost
            return item

    def _source_ended(self, i: int) -> None:
        if self.stop == "first" or self._fresh[i]:  # a fresh source with nothing: dropped
            self._ended[i] = True
            if self.stop == "first":
                self._ended = [True] * len(self.names)
            return
        self._loops[i] += 1
        self.stats.loops[self.names[i]] += 1
        if self.stop == "all" and all(
            loops or ended for loops, ended in zip(self._loops, self._ended, strict=True)
        ):
            self._ended = [True] * len(self.names)
            return
        self._restart(i)
        self.sources[self.names[i]].reset(None)
        self._fresh[i] = True

    def _restart(self, i: int) -> None:
        """Connect source ``i`` afresh for its next epoch (its loops so far added)."""
        name = self.names[i]
        self.sources[name].close()
        own = self._own(name, self._loops[i], self.require_context())
        self.sources[name] = connect_chain(self.chains[name], own)

    def _choose(self) -> int:
        """The source of draw ``self._draws``; StopIteration when none is left."""
        weights = self.weights(self._draws)
        if len(weights) != len(self.names):
            raise ValueError(f"{len(self.names)} sources need {len(self.names)} weights")
        w = [0.0 if ended else float(x) for x, ended in zip(weights, self._ended, strict=True)]
        if self.cost is not None:  # shares of cost: divide by each source's mean cost
            costs = zip(w, self._costs, self._counts, strict=True)
            w = [x * n / c if n and c > 0 else x for x, c, n in costs]
        total = sum(w)
        if not total > 0:
            raise StopIteration
        target = self._uniform(self._draws) * total
        reached, last = 0.0, 0
        for i, x in enumerate(w):
            if x > 0:
                reached, last = reached + x, i
                if target < reached:
                    return i
        return last

    def _uniform(self, t: int) -> float:
        block, values = self._block
        if block != t // _BLOCK:
            context = self.require_context()
            world = context.world
            entropy = [self.seed, context.epoch, world.rank, world.worker, t // _BLOCK]
            values = np.random.default_rng(entropy).random(_BLOCK)
            self._block = (t // _BLOCK, values)
        return float(values[t % _BLOCK])

    def __repr__(self) -> str:
        return f"Mix({self.names}, stop={self.stop!r})"


def _weights(weights: Weights | None, n: int) -> Callable[[int], Sequence[float]]:
    """``weights`` as a function of the draw number, checked where it can be now."""
    if weights is None:
        return _Fixed([1.0] * n)
    if callable(weights):
        return weights
    items = list(weights)
    if items and all(isinstance(w, (tuple, list)) and len(w) == 2 for w in items):
        pairs: list[tuple[int, Sequence[float]]] = items  # type: ignore[assignment]
        phases = sorted((int(step), _checked(values, n)) for step, values in pairs)
        if phases[0][0] != 0:
            raise ValueError("a weight schedule starts at draw 0")
        return _Schedule(phases)
    return _Fixed(_checked(items, n))  # type: ignore[arg-type]


def _checked(weights: Sequence[float], n: int) -> list[float]:
    values = [float(w) for w in weights]
    if len(values) != n:
        raise ValueError(f"{n} sources need {n} weights, got {len(values)}")
    if any(not math.isfinite(w) or w < 0 for w in values) or not sum(values) > 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {values}")
    return values


@dataclass(frozen=True)
class _Fixed:
    values: list[float]

    def __call__(self, t: int) -> list[float]:
        return self.values


@dataclass(frozen=True)
class _Schedule:
    phases: list[tuple[int, list[float]]]

    def __call__(self, t: int) -> list[float]:
        current = self.phases[0][1]
        for start, values in self.phases:
            if start > t:
                break
            current = values
        return current
