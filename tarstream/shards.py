"""Shard-level stages: the epoch plan (shard list, shuffle, rank and worker splits) and reading.

Order is a pure function of (dataset, seed, epoch, rank, world size, worker, number of
workers). The planning stages compute a list of ``Segment`` values (a shard and a range of
its samples) without reading data; ``ReadShards`` reads the samples of its plan and keeps
the only position: which segment, and how many samples into it.

With sample counts (sidecars or a manifest), splits are by sample: every rank and worker
gets a contiguous share of the epoch's sample sequence, so shards fewer than workers or
uneven shard sizes still give every sample exactly once, and ``even`` can make every rank's
count equal. Without counts, whole shards are dealt round-robin.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import ResumeError, ShardFormatError
from .reader import (
    SIDECAR_MODES,
    OpenShard,
    SidecarMode,
    is_remote,
    load_index,
    open_shard,
    read_shard,
    read_shard_at,
)
from .sources import ShardSpec, Source, resolve_shards
from .stage import Stage, State
from .tar import DEFAULT_MAX_MEMBER_SIZE, DEFAULT_READ_SIZE, ReadStats, Sample
from .world import Context, derive_seed

if TYPE_CHECKING:
    from .remote import Storage

__all__ = [
    "Even",
    "ReadShards",
    "Segment",
    "ShardList",
    "ShuffleShards",
    "SplitByRank",
    "SplitByWorker",
    "split_segments",
]

Even = Literal["drop", "pad"] | None
_SALT_SHARD_SHUFFLE = 0x5A1D


@dataclass(frozen=True)
class Segment:
    """Samples ``start:stop`` of shard number ``shard`` (``stop`` None: to its end)."""

    shard: int
    start: int = 0
    stop: int | None = None

    @property
    def size(self) -> int | None:
        return None if self.stop is None else self.stop - self.start


def split_segments(
    segments: list[Segment], part: int, parts: int, even: Even = None
) -> list[Segment]:
    """Return part ``part`` of ``parts`` of the sample sequence that ``segments`` make.

    With every ``stop`` known the split is by sample: part *p* gets a contiguous share of
    ``n // parts`` or ``n // parts + 1`` samples (``even=None``), exactly ``n // parts``
    (``"drop"``: the last ``n % parts`` samples go unused), or exactly ``ceil(n / parts)``
    (``"pad"``: the sequence repeats from its start to fill the last shares). Otherwise
    whole segments are dealt round-robin, and ``even`` is an error.

    >>> split_segments([Segment(0, 0, 5), Segment(1, 0, 5)], 1, 3)
    [Segment(shard=0, start=3, stop=5), Segment(shard=1, start=0, stop=1)]
    """
    if not 0 <= part < parts:
        raise ValueError(f"part must be in 0..{parts - 1}, got {part}")
    if any(s.stop is None for s in segments):
        if even is not None:
            raise ValueError(
                f"even={even!r} needs sample counts: give a manifest, or build sidecars with "
                "`tarstream index`"
            )
        return segments[part::parts]
    total = sum(_known_size(s) for s in segments)
    if total == 0:
        return []
    if even == "drop":
        share = total // parts
        first, last = part * share, (part + 1) * share
    elif even == "pad":
        share = -(-total // parts)
        first, last = part * share, (part + 1) * share
    else:
        first, last = part * total // parts, (part + 1) * total // parts
    return _take_range(segments, total, first, last)


def _known_size(segment: Segment) -> int:
    if segment.stop is None:
        raise ValueError(f"segment {segment} has no known size")
    return segment.stop - segment.start


def _take_range(segments: list[Segment], total: int, first: int, last: int) -> list[Segment]:
    """Segments covering positions first..last of the sequence repeated end to end."""
    out: list[Segment] = []
    position = first
    while position < last:
        lap_start = position - position % total
        offset = lap_start
        for s in segments:
            size = _known_size(s)
            lo, hi = max(position, offset), min(last, offset + size)
            if lo < hi:
                out.append(Segment(s.shard, s.start + lo - offset, s.start + hi - offset))
            offset += size
        position = lap_start + total
    return out


class PlanStage(Stage[Segment]):
    """A stage whose output is a plan: a pure function ``plan()`` of its context."""

    def plan(self) -> list[Segment]:
        raise NotImplementedError

    def shard_specs(self) -> list[ShardSpec]:
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
        self._position = state["position"] if state else 0

    def next(self) -> Segment:
        if self._position >= len(self._plan):
            raise StopIteration
        self._position += 1
        return self._plan[self._position - 1]

    def get_state(self) -> State:
        return {"position": self._position}

    def _source_plan(self) -> list[Segment]:
        source = self.require_source()
        if not isinstance(source, PlanStage):
            raise TypeError(f"{type(self).__name__} must follow a shard list stage")
        return source.plan()


def _check_sidecar_mode(sidecars: str) -> None:
    if sidecars not in SIDECAR_MODES:
        raise ValueError(f"sidecars must be one of {SIDECAR_MODES}, got {sidecars!r}")


class ShardList(PlanStage):
    """The dataset's shards, in order, with their sample counts where known.

    Counts come from a manifest, else from sidecars (read once, when the plan is first
    needed) unless ``sidecars="ignore"``. ``allow_pipe`` accepts ``pipe:COMMAND`` shards
    (see ``tarstream.sources.resolve_shards``). ``storage`` says how remote URLs are read
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
        _check_sidecar_mode(sidecars)
        if storage is None:
            from .remote import Storage

            storage = Storage()
        self.storage = storage
        self.specs = resolve_shards(source, allow_pipe=allow_pipe, storage=storage)
        self.sidecars = sidecars
        # shared by the copies each iteration connects, so sidecars are read once
        self._cache: dict[str, list[int | None]] = {}

    def counts(self) -> list[int | None]:
        """Sample count of each shard, None where unknown."""
        if "counts" not in self._cache:
            counts: list[int | None] = [s.count for s in self.specs]
            if self.sidecars != "ignore":
                for i, spec in enumerate(self.specs):
                    if counts[i] is None:
                        index = load_index(spec)
                        counts[i] = None if index is None else index.count
            self._cache["counts"] = counts
        return self._cache["counts"]

    def plan(self) -> list[Segment]:
        if self.context is not None and self.context.rest is not None:
            return list(self.context.rest)
        return [Segment(i, 0, count) for i, count in enumerate(self.counts())]

    def sample_starts(self) -> np.ndarray:
        """The dataset-wide number of each shard's first sample, and the total at the end.

        Raises:
            ResumeError: a shard's count is unknown.
        """
        counts = self.counts()
        if any(c is None for c in counts):
            raise ResumeError(
                "elastic resume needs every shard's sample count: give a manifest, or build "
                "sidecars with `tarstream index PATTERN`"
            )
        return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])

    def fingerprint(self) -> str:
        """A short hash of the shard names and counts, to tell datasets apart in a state."""
        names = [spec.url.rstrip("/").rsplit("/", 1)[-1] for spec in self.specs]
        text = json.dumps([names, self.counts()], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ShardList({len(self.specs)} shards)"


class ShuffleShards(PlanStage):
    """Shuffle the shard order, by seed and epoch (the same on every rank and worker)."""

    def __init__(self, *, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed

    def plan(self) -> list[Segment]:
        context = self.require_context()
        segments = self._source_plan()
        if context.rest is not None:
            return segments  # the rest of a resumed epoch keeps its order
        seed = context.seed if self.seed is None else self.seed
        rng = np.random.default_rng(derive_seed(seed, context.epoch, _SALT_SHARD_SHUFFLE))
        return [segments[i] for i in rng.permutation(len(segments))]


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

    def plan(self) -> list[Segment]:
        context = self.require_context()
        world = context.world
        part = (world.rank + context.epoch) % world.world_size
        return split_segments(self._source_plan(), part, world.world_size, self.even)


class SplitByWorker(PlanStage):
    """Keep this DataLoader worker's share of the plan; assignment rotates with the epoch."""

    def plan(self) -> list[Segment]:
        context = self.require_context()
        world = context.world
        part = (world.worker + context.epoch) % world.num_workers
        return split_segments(self._source_plan(), part, world.num_workers)


class ReadShards(Stage[Sample]):
    """Read the samples of the plan its source makes.

    State: the segment number and the samples read from it. Resuming seeks to that sample
    with the shard's sidecar (without one, it reads and drops the samples before it).

    A remote shard is read in blocks fetched ahead in the background, and the next remote
    shard of the plan is opened (its first block fetched, or its cache entry filled) while
    the current one is read; see ``tarstream.Storage`` for the memory this holds.
    """

    def __init__(
        self,
        *,
        sidecars: SidecarMode = "auto",
        max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
        read_size: int = DEFAULT_READ_SIZE,
    ) -> None:
        super().__init__()
        _check_sidecar_mode(sidecars)
        if max_member_size < 1:
            raise ValueError(f"max_member_size must be >= 1, got {max_member_size}")
        if read_size < 512:
            raise ValueError(f"read_size must be >= 512, got {read_size}")
        self.sidecars = sidecars
        self.max_member_size = max_member_size
        self.read_size = read_size
        self.stats = ReadStats()
        self._samples: Iterator[Sample] | None = None
        self._ahead: tuple[int, OpenShard] | None = None

    def _planner(self) -> PlanStage:
        source = self.require_source()
        if not isinstance(source, PlanStage):
            raise TypeError("ReadShards must follow a shard list stage")
        return source

    def reset(self, state: State | None = None) -> None:
        self.close()
        planner = self._planner()
        self._specs = planner.shard_specs()
        self._plan = self._current_plan()
        self._segment = state["segment"] if state else 0
        self._offset = state["offset"] if state else 0
        self._generator = self._generate()

    def next(self) -> Sample:
        return next(self._generator)

    def items(self) -> Iterator[Sample]:
        return self._generator

    def _generate(self) -> Iterator[Sample]:
        # One generator for the whole plan: a sample costs one resume, not a method's checks.
        while self._segment < len(self._plan):
            segment = self._plan[self._segment]
            spec = self._specs[segment.shard]
            if segment.stop is None or segment.start + self._offset < segment.stop:
                # The reader stops at ``stop`` itself: a segment that ends the shard is then
                # read to its end-of-archive marker, which checks what no size told us.
                self._samples = read_shard(
                    spec,
                    sidecars=self.sidecars,
                    first=segment.start + self._offset,
                    stop=segment.stop,
                    max_member_size=self.max_member_size,
                    read_size=self.read_size,
                    stats=self.stats,
                    opened=self._open(self._segment),
                )
                for sample in self._samples:
                    self._offset += 1
                    yield sample
                if segment.stop is not None and segment.start + self._offset < segment.stop:
                    raise ShardFormatError(
                        f"shard has {segment.start + self._offset} samples, its count says "
                        f"at least {segment.stop}",
                        shard=spec.url,
                    )
            self._close_samples()
            self._segment += 1
            self._offset = 0

    def _open(self, number: int) -> OpenShard:
        """Open segment ``number``'s shard (or take it, opened ahead), and open the next
        segment's shard ahead if it is remote and read from its start."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] != number:
            ahead[1].file.close()
            ahead = None
        spec = self._specs[self._plan[number].shard]
        opened = ahead[1] if ahead is not None else open_shard(spec, sidecars=self.sidecars)
        if number + 1 < len(self._plan) and self._plan[number + 1].start == 0:
            following = self._specs[self._plan[number + 1].shard]
            storage = following.storage
            if is_remote(following) and storage is not None and storage.prefetch:
                self._ahead = (
                    number + 1,
                    open_shard(following, sidecars=self.sidecars, background=True),
                )
        return opened

    def get_state(self) -> State:
        return {"segment": self._segment, "offset": self._offset}

    # -- positions -------------------------------------------------------------------------
    def _planned(self) -> tuple[list[Segment], np.ndarray | None]:
        """The plan in the current context and, when every size is known, the plan position
        where each segment starts plus the plan's size at the end (once per context)."""
        cached = getattr(self, "_plan_for", None)
        if cached is None or cached[0] is not self.context:
            plan = self._planner().plan()
            bounds = None
            if all(s.stop is not None for s in plan):
                sizes = [_known_size(s) for s in plan]
                bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
            cached = (self.context, plan, bounds)
            self._plan_for = cached
        return cached[1], cached[2]

    def _current_plan(self) -> list[Segment]:
        return self._planned()[0]

    def _bounds(self) -> np.ndarray:
        bounds = self._planned()[1]
        if bounds is None:
            raise ResumeError(
                "shards have no sample counts (no sidecars or manifest), so items cannot "
                "be located by position; build sidecars with `tarstream index PATTERN`"
            )
        return bounds

    def addressable(self) -> bool:
        return self.sidecars != "ignore" and self._planned()[1] is not None

    def position(self, state: State | None) -> int:
        """Plan position of ``state``: the number of items produced before it."""
        if not state:
            return 0
        return int(self._bounds()[state["segment"]]) + int(state["offset"])

    def remaining(self, state: State | None) -> int:
        return int(self._bounds()[-1]) - self.position(state)

    def advance(self, state: State | None, n: int) -> State:
        bounds = self._bounds()
        target = self.position(state) + n
        if not 0 <= target <= bounds[-1]:
            raise ValueError(f"position {target} is outside the plan (0..{bounds[-1]})")
        segment = int(np.searchsorted(bounds, target, "right")) - 1
        return {"segment": segment, "offset": target - int(bounds[segment])}

    def fetch(self, state: State | None, offsets: list[int]) -> list[Any]:
        bounds = self._bounds()
        plan = self._current_plan()
        specs = self._planner().shard_specs()
        positions = self.position(state) + np.asarray(offsets, dtype=np.int64)
        segments = np.searchsorted(bounds, positions, "right") - 1
        wanted: dict[int, list[int]] = {}
        refs = []
        for segment, position in zip(segments.tolist(), positions.tolist(), strict=True):
            shard = plan[segment].shard
            sample = plan[segment].start + position - int(bounds[segment])
            wanted.setdefault(shard, []).append(sample)
            refs.append((shard, sample))
        found = {
            shard: read_shard_at(
                specs[shard],
                samples,
                sidecars=self.sidecars,
                max_member_size=self.max_member_size,
            )
            for shard, samples in wanted.items()
        }
        return [found[shard][sample] for shard, sample in refs]

    def delivered(self, state: State | None) -> np.ndarray:
        mask = np.zeros(int(self._bounds()[-1]), dtype=bool)
        mask[: self.position(state)] = True
        return mask

    def plan_refs(self) -> np.ndarray:
        """The dataset-wide number (shards' samples end to end) of each item of the plan."""
        first = self._planner().shard_list().sample_starts()
        parts = [
            first[s.shard] + np.arange(s.start, s.start + _known_size(s))
            for s in self._current_plan()
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _close_samples(self) -> None:
        if self._samples is not None:
            self._samples.close()  # type: ignore[attr-defined]
            self._samples = None

    def close(self) -> None:
        self._close_samples()
        if self._ahead is not None:
            self._ahead[1].file.close()
            self._ahead = None

    def plan_size(self) -> int | None:
        """Samples this stage yields in the current context, if counts are known."""
        bounds = self._planned()[1]
        return None if bounds is None else int(bounds[-1])


def with_context(stage: Stage[Any], context: Context) -> None:
    """Set ``context`` on a connected chain of stages."""
    node: Stage[Any] | None = stage
    while node is not None:
        node.context = context
        node = node.source
