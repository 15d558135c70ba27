"""ReadShards: the reader stage, from the plan its source makes to samples.

It keeps the only position of a pipeline's source side: which segment of the plan, and
how many samples into it. With sample counts it is ``Addressable`` (sample *i* of its plan
is fetched without reading those before it) and ``Accounted`` (it says which samples of
its plan were consumed), which fast and elastic resume build on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np

from ..errors import ResumeError, ShardError, ShardFormatError
from ..format.samples import Sample
from ..format.scan import DEFAULT_MAX_MEMBER_SIZE, DEFAULT_READ_SIZE, ReadStats
from ..plan.segments import Segment, known_size
from ..plan.shard_list import PlanStage, ShardList
from ..plan.specs import SidecarMode, check_sidecar_mode
from ..stage import Stage, State, check_errors
from .packed import TypedFields
from .shard import OpenShard, is_remote, open_shard, read_shard, read_shard_at

__all__ = ["ReadShards"]


class ReadShards(Stage[Sample]):
    """Read the samples of the plan its source makes.

    State: the segment number and the samples read from it. Resuming seeks to that sample
    with the shard's sidecar (without one, it reads and drops the samples before it).

    ``verify``: with sidecars, check each sample's bytes against its recorded checksum.

    ``fields``: read only these fields (names as read; a string: separated by spaces); with
    sidecars the other members' bytes are never read, each chosen member's header is checked
    against the sidecar instead of the sample checksum (see ``tarstream.format.members``).
    ``lowercase_fields``: field names are lower-cased as webdataset does (``0001.JPG`` gives
    field ``jpg``); False keeps them as stored.

    ``errors="skip"``: a shard that fails with a ``ShardError`` (truncated, corrupt, not
    matching its sidecar, a command that fails) ends there and the epoch goes on with the
    next segment; the samples it yielded stay delivered, the rest are lost and counted in
    ``stats`` (``shards_failed``, ``samples_lost``, ``errors``, ``failures``), and a resume
    continues after it. More than ``max_errors`` failed shards in an epoch raise the last
    error. Read without a sidecar, a member whose key is unsafe, and the members of a key
    that comes back after other samples, are skipped and counted (``stats.skipped``) while
    the shard goes on. A lenient reader's items cannot be located by plan position (a
    failed shard's rest is missing), so a shuffle after it resumes by re-reading
    (``ResumeWarning``) and elastic resume through one is refused.

    A remote shard is read in blocks fetched ahead in the background, and the next remote
    shard of the plan is opened (its first block fetched, or its cache entry filled) while
    the current one is read; see ``tarstream.Storage`` for the memory this holds.
    """

    SEGMENT_KEY = "segment"
    OFFSET_KEY = "offset"

    def __init__(
        self,
        *,
        sidecars: SidecarMode = "auto",
        max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
        read_size: int = DEFAULT_READ_SIZE,
        verify: bool = True,
        errors: Literal["strict", "skip"] = "strict",
        max_errors: int | None = None,
        lowercase_fields: bool = True,
        fields: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        check_errors(errors, max_errors)
        if isinstance(fields, str):
            fields = fields.split()
        self.fields = None if fields is None else frozenset(fields)
        self.errors = errors
        self.max_errors = max_errors
        check_sidecar_mode(sidecars)
        if max_member_size < 1:
            raise ValueError(f"max_member_size must be >= 1, got {max_member_size}")
        if read_size < 512:
            raise ValueError(f"read_size must be >= 512, got {read_size}")
        self.sidecars = sidecars
        self.max_member_size = max_member_size
        self.read_size = read_size
        self.verify = verify
        self.lowercase_fields = lowercase_fields
        self.stats = ReadStats()
        #: The packed fields handed on as they are held (``tarstream.read.packed``): set
        #: by a ``Decode`` after this stage, whose built-in decoders would make the same.
        self.typed: TypedFields = None
        self._samples: Iterator[Sample] | None = None
        self._ahead: tuple[int, OpenShard] | None = None
        # the plan of the context it was made in, and where its segments start
        self._plan_for: tuple[Any, list[Segment], np.ndarray | None] | None = None

    def shard_list(self) -> ShardList:
        """The ShardList this reader's plan starts from."""
        return self._planner().shard_list()

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
        self._segment = state[self.SEGMENT_KEY] if state else 0
        self._offset = state[self.OFFSET_KEY] if state else 0
        self._failed = 0
        self._generator = self._generate()

    def next(self) -> Sample:
        return next(self._generator)

    def items(self) -> Iterator[Sample]:
        return self._generator

    def _generate(self) -> Iterator[Sample]:
        # One generator for the whole plan: a sample costs one resume, not a method's checks.
        while self._segment < len(self._plan):
            try:
                yield from self._segment_samples()
            except ShardError as e:
                if self.errors == "strict":
                    raise
                self._count_failure(e)
            self._close_samples()
            self._segment += 1
            self._offset = 0

    def _count_failure(self, e: ShardError) -> None:
        """Count a shard that failed; raise once more than ``max_errors`` did this epoch."""
        segment = self._plan[self._segment]
        stats = self.stats
        stats.shards_failed += 1
        if segment.stop is not None:
            stats.samples_lost += segment.stop - segment.start - self._offset
        stats.errors[type(e).__name__] += 1
        if len(stats.failures) < 100:
            stats.failures.append(str(e))
        self._failed += 1
        if self.max_errors is not None and self._failed > self.max_errors:
            raise type(e)(
                f"more than max_errors={self.max_errors} shards failed this epoch; the "
                f"last: {e.reason}",
                shard=e.shard,
                member=e.member,
                offset=e.offset,
            ) from e

    def _segment_samples(self) -> Iterator[Sample]:
        """The samples of the current segment from the current offset."""
        segment = self._plan[self._segment]
        spec = self._specs[segment.shard]
        if segment.stop is not None and segment.start + self._offset >= segment.stop:
            return
        # The reader stops at ``stop`` itself: a segment that ends the shard is then read
        # to its end-of-archive marker, which checks what no size told us.
        self._samples = read_shard(
            spec,
            sidecars=self.sidecars,
            first=segment.start + self._offset,
            stop=segment.stop,
            max_member_size=self.max_member_size,
            read_size=self.read_size,
            stats=self.stats,
            opened=self._open(self._segment),
            verify=self.verify,
            lenient=self.errors == "skip",
            lowercase=self.lowercase_fields,
            fields=self.fields,
            typed=self.typed,
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
        return {self.SEGMENT_KEY: self._segment, self.OFFSET_KEY: self._offset}

    # -- positions -------------------------------------------------------------------------
    def _planned(self) -> tuple[list[Segment], np.ndarray | None]:
        """The plan in the current context and, when every size is known, the plan position
        where each segment starts plus the plan's size at the end (once per context)."""
        cached = self._plan_for
        if cached is None or cached[0] is not self.context:
            plan = self._planner().plan()
            bounds = None
            if all(s.stop is not None for s in plan):
                sizes = [known_size(s) for s in plan]
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
        # A lenient reader yields fewer items than its plan has positions where a shard
        # fails, so item i is not plan position i.
        return (
            self.sidecars != "ignore" and self.errors == "strict" and self._planned()[1] is not None
        )

    def position(self, state: State | None) -> int:
        """Plan position of ``state``: the number of items produced before it."""
        if not state:
            return 0
        return int(self._bounds()[state[self.SEGMENT_KEY]]) + int(state[self.OFFSET_KEY])

    def remaining(self, state: State | None) -> int:
        return int(self._bounds()[-1]) - self.position(state)

    def advance(self, state: State | None, n: int) -> State:
        bounds = self._bounds()
        target = self.position(state) + n
        if not 0 <= target <= bounds[-1]:
            raise ValueError(f"position {target} is outside the plan (0..{bounds[-1]})")
        segment = int(np.searchsorted(bounds, target, "right")) - 1
        return {self.SEGMENT_KEY: segment, self.OFFSET_KEY: target - int(bounds[segment])}

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
                verify=self.verify,
                lowercase=self.lowercase_fields,
                fields=self.fields,
                typed=self.typed,
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
        first = self.shard_list().sample_starts()
        parts = [
            first[s.shard] + np.arange(s.start, s.start + known_size(s))
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
