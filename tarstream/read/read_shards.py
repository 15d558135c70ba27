"""ReadShards: the reader stage, from the plan its source makes to samples.

It keeps the only position of a pipeline's source side: which segment of the plan, and
how many samples into it. With sample counts it is ``Addressable`` (sample *i* of its plan
is fetched without reading those before it) and ``Accounted`` (it says which samples of
its plan were consumed), which fast and elastic resume build on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import numpy as np

from ..errors import ArgumentError, ResumeError, ShardError, ShardFormatError
from ..format.samples import Sample
from ..format.scan import DEFAULT_MAX_MEMBER_SIZE, DEFAULT_READ_SIZE, ReadStats
from ..plan.interleave import Interleaved
from ..plan.segments import Plan, complement_spans
from ..plan.shard_list import PlanStage, ShardList
from ..plan.specs import SidecarMode, check_sidecar_mode
from ..stage import Stage, State, check_errors
from .counting import counted, no_count
from .interleaved import interleaved, order_of
from .packed import TypedFields
from .shard import Decoding, OpenShard, is_remote, open_shard, read_shard, read_shard_at

__all__ = ["DEFAULT_INTERLEAVE", "ReadShards"]

#: Segments an interleaving reader reads at once when not told (``interleave=None``).
DEFAULT_INTERLEAVE = 4


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

    ``interleave=k`` reads ``k`` segments of the plan at once, each front to back, taking
    the next sample from one of them in a seeded order (``tarstream.plan.interleave``): the
    shuffle buffer after it then mixes samples of ``k`` shards where it mixed one. It holds
    ``k`` open shards and their read buffers, never samples, and needs sample counts.
    ``None``: ``DEFAULT_INTERLEAVE`` where every count is known, else 1.
    """

    SEGMENT_KEY = "segment"
    OFFSET_KEY = "offset"
    #: Whether its items are samples read by ``read_shard`` (which applies ``decoding``).
    reads_samples = True
    #: The decoding of a ``Decode`` right after this stage, which it applies itself
    #: (``Decoding``; set on the connected copy by that stage when it connects).
    decoding: Decoding | None = None
    #: Whether its samples go to a ``Batch`` that takes them a field at a time, which takes
    #: a block's as rows (``tarstream.format.rows``; set on the connected copy by that batch).
    rows = False
    #: The segments of an interleaved group that failed in a lenient reader (when any).
    FAILED_KEY = "failed"

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
        interleave: int | None = 1,
    ) -> None:
        super().__init__()
        check_errors(errors, max_errors)
        if interleave is not None and (not isinstance(interleave, int) or interleave < 1):
            raise ArgumentError(f"interleave must be an int >= 1 or None, got {interleave!r}")
        self.interleave = interleave
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
        #: Samples given since ``_offset``, where they are counted in C (``.counting``).
        self._live: Callable[[], int] = no_count
        #: Read buffers, one per shard being read, kept from shard to shard.
        self._buffers: list[bytearray] = []
        self._ahead: tuple[int, OpenShard] | None = None
        # the plan of the context it was made in, and where its segments start
        self._plan_for: tuple[Any, Plan] | None = None
        self._order_for: tuple[Any, Interleaved | None] | None = None

    def shard_list(self) -> ShardList:
        """The ShardList this reader's plan starts from."""
        return self._planner().shard_list()

    def _planner(self) -> PlanStage:
        source = self.require_source()
        if not isinstance(source, PlanStage):
            raise TypeError("ReadShards must follow a shard list stage")
        return source

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_buffers"] = []  # megabytes, refilled by the first reads
        return state

    def reset(self, state: State | None = None) -> None:
        self.close()
        self._buffers = []  # this copy's own (copies of a stage share its attributes)
        planner = self._planner()
        self._specs = planner.shard_specs()
        self._plan = self.current_plan()
        self._segment = state[self.SEGMENT_KEY] if state else 0
        self._offset = state[self.OFFSET_KEY] if state else 0
        self.failed_in_group: list[int] = list(state.get(self.FAILED_KEY, ())) if state else []
        self._failed = 0
        order = self._order()
        self._generator = self._generate() if order is None else interleaved(self, order)

    def next(self) -> Sample:
        return next(self._generator)

    def own_iterator(self) -> Iterator[Sample]:
        return self._generator

    def _generate(self) -> Iterator[Sample]:
        # One generator for the whole plan: a sample costs one resume, not a method's checks.
        while self._segment < len(self._plan):
            try:
                segment = self._plan[self._segment]
                if segment.stop is None or segment.start + self._offset < segment.stop:
                    self._samples = self.segment_samples(self._segment, self._offset, self._open)
                    samples, self._live = counted(self._samples)
                    try:  # the samples of the segment from the current offset, counted
                        yield from samples
                    finally:
                        self._offset += self._live()
                        self._live = no_count
                    self.check_count(self._segment, self._offset)
            except ShardError as e:
                if self.errors == "strict":
                    raise
                self.count_failure(e, self._segment, self._offset)
            self._close_samples()
            self._segment += 1
            self._offset = 0

    def _order(self) -> Interleaved | None:
        """The plan's interleaved order in the current context (None: none)."""
        cached = self._order_for
        if cached is not None and cached[0] is self.context:
            return cached[1]
        order = order_of(self.current_plan(), self._interleave(), self.require_context())
        self._order_for = (self.context, order)
        return order

    def _interleave(self) -> int:
        """Segments read at once: as given, else ``DEFAULT_INTERLEAVE`` if counts are known."""
        if self.interleave is not None:
            return self.interleave
        return DEFAULT_INTERLEAVE if self.current_plan().bounds is not None else 1

    def count_failure(self, e: ShardError, segment_number: int, taken: int) -> None:
        """Count a shard that failed after ``taken`` samples of segment ``segment_number``;
        raise once more than ``max_errors`` did this epoch."""
        segment = self._plan[segment_number]
        stats = self.stats
        stats.shards_failed += 1
        if segment.stop is not None:
            stats.samples_lost += segment.stop - segment.start - taken
            if self.current_plan().bounds is not None and len(stats.lost) < 10_000:
                first = int(self.shard_list().sample_starts()[segment.shard])
                stats.lost.append([first + segment.start + taken, first + segment.stop])
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

    def segment_samples(
        self, number: int, offset: int, opener: Callable[[int], OpenShard] | None = None
    ) -> Iterator[Sample]:
        """The samples of segment ``number`` from its sample ``offset`` on (its shard opened
        by ``opener``, else here). The reader stops at the segment's ``stop`` itself: a
        segment that ends the shard is then read to its end-of-archive marker, which checks
        what no size told us."""
        segment = self._plan[number]
        spec = self._specs[segment.shard]
        return read_shard(
            spec,
            sidecars=self.sidecars,
            first=segment.start + offset,
            stop=segment.stop,
            max_member_size=self.max_member_size,
            read_size=self.read_size,
            stats=self.stats,
            opened=opener(number) if opener else open_shard(spec, sidecars=self.sidecars),
            verify=self.verify,
            lenient=self.errors == "skip",
            lowercase=self.lowercase_fields,
            fields=self.fields,
            typed=self.typed,
            buffers=self._buffers,
            decoding=self.decoding,
            rows=self.rows,
        )

    def check_count(self, number: int, taken: int) -> None:
        """Raise unless segment ``number``'s shard gave all its samples (``taken``)."""
        segment = self._plan[number]
        if segment.stop is not None and segment.start + taken < segment.stop:
            raise ShardFormatError(
                f"shard has {segment.start + taken} samples, its count says "
                f"at least {segment.stop}",
                shard=self._specs[segment.shard].url,
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
        state = {self.SEGMENT_KEY: self._segment, self.OFFSET_KEY: self._offset + self._live()}
        failed = self.failed_in_group  # a copy: a later failure must not change a state taken
        return {**state, self.FAILED_KEY: list(failed)} if failed else state

    # -- positions -------------------------------------------------------------------------
    def _planned(self) -> tuple[Plan, np.ndarray | None]:
        """The plan in the current context and, when every size is known, the plan position
        where each segment starts plus the plan's size at the end (once per context)."""
        cached = self._plan_for
        if cached is None or cached[0] is not self.context:
            cached = (self.context, self._planner().plan())
            self._plan_for = cached
        return cached[1], cached[1].bounds

    def current_plan(self) -> Plan:
        """The plan in the current context."""
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
        strict = self.sidecars != "ignore" and self.errors == "strict"
        return strict and self._planned()[1] is not None

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
        k = self._interleave()
        segment -= segment % k  # an interleaved reader's state names its group's first
        return {self.SEGMENT_KEY: segment, self.OFFSET_KEY: target - int(bounds[segment])}

    def positions(self, state: State | None, offsets: list[int]) -> np.ndarray:
        """The plan positions of the items ``offsets`` places after ``state``."""
        items = self.position(state) + np.asarray(offsets, dtype=np.int64)
        order = self._order()
        return items if order is None else order.positions(items)

    def fetch(self, state: State | None, offsets: list[int]) -> list[Any]:
        self._bounds()  # says when counts are missing
        specs = self._planner().shard_specs()
        located = self.current_plan().locate(self.positions(state, offsets))
        shards, samples_ = (part.tolist() for part in located)
        wanted: dict[int, list[int]] = {}
        for shard, sample in zip(shards, samples_, strict=True):
            wanted.setdefault(shard, []).append(sample)
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
        return [found[shard][sample] for shard, sample in zip(shards, samples_, strict=True)]

    def delivered(self, state: State | None) -> np.ndarray:
        self._bounds()
        order = self._order()
        if order is None or not state:
            return np.array([[0, self.position(state)]], dtype=np.int64)
        return order.delivered(state[self.SEGMENT_KEY], state[self.OFFSET_KEY])

    def owed(self, spans: np.ndarray) -> Plan:
        """The runs of the plan outside ``spans`` (plan positions consumed)."""
        self._bounds()
        plan = self.current_plan()
        return plan.spans(complement_spans(spans, int(plan.total or 0)))

    def _close_samples(self) -> None:
        if self._samples is not None:
            self._samples.close()  # type: ignore[attr-defined]
            self._samples = None

    def close(self) -> None:
        generator = getattr(self, "_generator", None)
        if generator is not None:
            generator.close()  # an interleaved group closes its shards
        self._close_samples()
        if self._ahead is not None:
            self._ahead[1].file.close()
            self._ahead = None

    def plan_size(self) -> int | None:
        """Samples this stage yields in the current context, if counts are known."""
        bounds = self._planned()[1]
        return None if bounds is None else int(bounds[-1])
