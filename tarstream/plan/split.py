"""Shard order and the rank and worker splits: pure functions of seed, epoch and world.

With sample counts (sidecars or a manifest), splits are by sample: every rank and worker
gets a contiguous share of the epoch's sample sequence, so shards fewer than workers or
uneven shard sizes still give every sample exactly once, and ``even`` can make every rank's
count equal. Without counts, whole shards are dealt round-robin.
"""

from __future__ import annotations

import numpy as np

from ..world import derive_seed
from .segments import Even, Plan
from .shard_list import PlanStage

__all__ = ["ShuffleShards", "SliceEpoch", "SplitByRank", "SplitByWorker"]

_SALT_SHARD_SHUFFLE = 0x5A1D


class ShuffleShards(PlanStage):
    """Shuffle the shard order, by seed and epoch (the same on every rank and worker)."""

    def __init__(self, *, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed

    def plan(self) -> Plan:
        context = self.require_context()
        segments = self.source_plan()
        if context.rest is not None:
            return segments  # the rest of a resumed epoch keeps its order
        seed = context.seed if self.seed is None else self.seed
        key = ("ShuffleShards", seed, context.epoch)
        return self.shard_list().cached(
            key, segments, lambda: self._shuffled(segments, seed, context.epoch)
        )

    @staticmethod
    def _shuffled(segments: Plan, seed: int, epoch: int) -> Plan:
        rng = np.random.default_rng(derive_seed(seed, epoch, _SALT_SHARD_SHUFFLE))
        return segments.permuted(rng.permutation(len(segments)))


class SplitByRank(PlanStage):
    """Keep this rank's share of the plan (rank first, then worker).

    Args:
        even: with sample counts, make every rank's count equal: "drop" leaves the last
            ``n % world_size`` samples out, "pad" repeats samples from the start.
    """

    def __init__(self, *, even: Even = None) -> None:
        super().__init__()
        if even not in (None, "drop", "pad"):
            raise ValueError(f"even must be None, 'drop' or 'pad', got {even!r}")
        self.even = even

    def plan(self) -> Plan:
        context = self.require_context()
        world = context.world
        part = (world.rank + context.epoch) % world.world_size
        return self.source_plan().split(part, world.world_size, self.even)


class SplitByWorker(PlanStage):
    """Keep this DataLoader worker's share of the plan; assignment rotates with the epoch."""

    def plan(self) -> Plan:
        context = self.require_context()
        world = context.world
        part = (world.worker + context.epoch) % world.num_workers
        return self.source_plan().split(part, world.num_workers)


class SliceEpoch(PlanStage):
    """Keep samples ``skip:skip + take`` of the epoch's sequence (after the shard shuffle,
    before the rank split): a global skip or take, over all ranks and workers together.
    Arithmetic on segments: nothing skipped is read. Needs sample counts.
    """

    def __init__(self, skip: int = 0, take: int | None = None) -> None:
        super().__init__()
        if skip < 0 or (take is not None and take < 0):
            raise ValueError(f"skip and take must be >= 0, got {skip} and {take}")
        self.skip, self.take = skip, take

    def plan(self) -> Plan:
        segments = self.source_plan()
        if self.require_context().rest is not None:
            return segments  # the rest of a resumed epoch was planned through this slice
        total = segments.total
        if total is None:
            raise ValueError(
                "a global skip or take needs sample counts: give a manifest, or build "
                "sidecars with `tarstream index`"
            )
        first = min(self.skip, total)
        last = total if self.take is None else min(total, first + self.take)
        return segments.take(first, last)

    def __repr__(self) -> str:
        return f"SliceEpoch(skip={self.skip}, take={self.take})"
