"""The plan's source: the dataset's shards, with their sample counts where known.

Planning stages compute an epoch's plan, a ``Plan`` (runs of a shard's samples, held as
arrays), as a pure function of their context (seed, epoch, world), without reading data.
``ShardList`` starts every plan. Plans every copy shares (the dataset's, an epoch's shard
order) are computed once per process and kept in the shard list's cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ResumeError
from ..stage import Stage, State
from ..storage.config import Storage
from .segments import Plan, Segment
from .specs import (
    ShardSpecs,
    SidecarMode,
    Source,
    check_sidecar_mode,
    load_sidecar,
    resolve_shards,
)

__all__ = ["PlanStage", "ShardList"]


class PlanStage(Stage[Segment]):
    """A stage whose output is a plan: a pure function ``plan()`` of its context.

    Iterated, it yields the plan's segments; state: the segments yielded.
    """

    POSITION_KEY = "position"

    def plan(self) -> Plan:
        raise NotImplementedError

    def shard_specs(self) -> ShardSpecs:
        return self.shard_list().specs

    def shard_list(self) -> ShardList:
        """The ShardList this plan starts from."""
        node: Stage[Any] | None = self
        while isinstance(node, PlanStage) and not isinstance(node, ShardList):
            node = node.source
        if not isinstance(node, ShardList):
            raise TypeError(f"{type(self).__name__} must follow a shard list stage")
        return node

    def reset(self, state: State | None = None) -> None:
        self._plan = self.plan()
        self._position = state[self.POSITION_KEY] if state else 0

    def next(self) -> Segment:
        if self._position >= len(self._plan):
            raise StopIteration
        self._position += 1
        return self._plan[self._position - 1]

    def get_state(self) -> State:
        return {self.POSITION_KEY: self._position}

    def source_plan(self) -> Plan:
        source = self.require_source()
        if not isinstance(source, PlanStage):
            raise TypeError(f"{type(self).__name__} must follow a shard list stage")
        return source.plan()


class ShardList(PlanStage):
    """The dataset's shards, in order, with their sample counts where known.

    Counts come from a manifest, else from sidecars (read once, when the plan is first
    needed) unless ``sidecars="ignore"``. ``allow_pipe`` accepts ``pipe:COMMAND`` shards
    (see ``tarstream.plan.specs.resolve_shards``). ``storage`` says how remote URLs are read
    (options, credentials, retries, read-ahead, cache; see ``tarstream.Storage``).
    """

    def __init__(
        self,
        source: Source,
        *,
        sidecars: SidecarMode = "auto",
        allow_pipe: bool = False,
        storage: Storage | None = None,
    ) -> None:
        super().__init__()
        check_sidecar_mode(sidecars)
        if storage is None:
            storage = Storage()
        self.storage = storage
        self.specs = resolve_shards(source, allow_pipe=allow_pipe, storage=storage)
        self.sidecars = sidecars
        # shared by the copies each iteration connects, so sidecars are read once
        self._cache: dict[str, Any] = {}

    def counts(self) -> list[int | None]:
        """Sample count of each shard, None where unknown."""
        if "counts" not in self._cache:
            counts = self.specs.counts()
            if self.sidecars != "ignore":
                for i in [i for i, count in enumerate(counts) if count is None]:
                    index = load_sidecar(self.specs[i])
                    counts[i] = None if index is None else index.count
            self._cache["counts"] = counts
        counts_: list[int | None] = self._cache["counts"]
        return counts_

    def plan(self) -> Plan:
        if self.context is not None and self.context.rest is not None:
            return Plan.of(self.context.rest)
        if "plan" not in self._cache:
            self._cache["plan"] = Plan.of_counts(self.counts())
        plan: Plan = self._cache["plan"]
        return plan

    def cached(self, key: tuple[object, ...], source: Plan, make: Callable[[], Plan]) -> Plan:
        """The plan ``make`` makes of ``source``, kept by ``key`` and ``source`` (the same
        object) for every copy of this shard list in this process (the last few: an
        epoch's shard order, say)."""
        plans: dict[tuple[object, ...], tuple[Plan, Plan]] = self._cache.setdefault("plans", {})
        key = (*key, id(source))  # the source is held with the result: its id stays its own
        if key not in plans:
            while len(plans) >= 4:
                del plans[next(iter(plans))]
            plans[key] = (source, make())
        return plans[key][1]

    def sample_starts(self) -> np.ndarray:
        """The dataset-wide number of each shard's first sample, and the total at the end.

        Raises:
            ResumeError: a shard's count is unknown.
        """
        if "starts" not in self._cache:
            counts = self.counts()
            if any(c is None for c in counts):
                raise ResumeError(
                    "elastic resume needs every shard's sample count: give a manifest, or "
                    "build sidecars with `tarstream index PATTERN`"
                )
            starts = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
            starts.flags.writeable = False
            self._cache["starts"] = starts
        starts_: np.ndarray = self._cache["starts"]
        return starts_

    def fingerprint(self) -> str:
        """A short hash of the shard names and counts, to tell datasets apart in a state."""
        text = json.dumps([self.specs.names(), self.counts()], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ShardList({len(self.specs)} shards)"
