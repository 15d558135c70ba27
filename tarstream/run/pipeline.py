"""Pipeline: stages composed as a list or through a fluent chain.

``Pipeline(ShardList(...), SplitByRank(), SplitByWorker(), ReadShards(), Shuffle(1000),
Decode("rgb8"), Batch(64))`` and ``TarStream(...).shuffle(1000).decode("rgb8").batch(64)``
build the same thing. Every fluent method returns a new pipeline; stage objects are never
modified (each iteration connects fresh copies of them). A plain generator function
``fn(iterable) -> iterator`` can stand anywhere a stage can.

When torch is installed a Pipeline is a ``torch.utils.data.IterableDataset``; without it,
it is a plain iterable and tarstream never imports torch.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ArgumentError, EpochWarning
from ..format.scan import ReadStats
from ..plan.mix import Mix, MixStats
from ..plan.shard_list import ShardList
from ..read.read_shards import ReadShards
from ..stage import FunctionStage, Stage, State, connect_chain
from ..stages.decode import DecodeStats
from ..stages.memory import BatchMemory
from ..stages.slicing import EqualizeStats
from ..world import Context, World, detect_world
from .elastic import rest_of_epoch
from .epoch import SharedEpoch
from .fluent import Fluent
from .resume import Identity, check_state, new_state, plan_resume
from .splits import Splitting, split_world

__all__ = ["DatasetBase", "Pipeline", "drop_if_other_epoch"]

if TYPE_CHECKING:  # pragma: no cover - typing only
    DatasetBase = object
else:
    try:
        from torch.utils.data import IterableDataset as DatasetBase
    except ImportError:  # torch is optional
        DatasetBase = object


_P = TypeVar("_P", bound="Pipeline")


def _as_stage(item: Stage[Any] | Callable[..., Any]) -> Stage[Any]:
    if isinstance(item, Stage):
        return item
    if callable(item):
        return FunctionStage(item)
    raise ArgumentError(f"pipeline items must be stages or generator functions, got {item!r}")


def drop_if_other_epoch(pending: State | None, epoch: int) -> State | None:
    """The loaded state to keep when epoch ``epoch`` is asked for next."""
    if pending is None or int(pending["epoch"]) == epoch:
        return pending
    warnings.warn(
        f"set_epoch({epoch}) after loading a state of epoch {pending['epoch']}: epoch {epoch} "
        "starts from its beginning and the loaded state is not used",
        stacklevel=3,
    )
    return None


def _all_stages(stages: Sequence[Stage[Any]]) -> Iterator[Stage[Any]]:
    """``stages`` and the stages of their named sources, in order."""
    for stage in stages:
        yield stage
        for chain in stage.inputs().values():
            yield from _all_stages(chain)


def _shard_lists(stages: Sequence[Stage[Any]]) -> Iterator[ShardList]:
    """The shard lists among ``stages`` and their named sources, in order."""
    return (stage for stage in _all_stages(stages) if isinstance(stage, ShardList))


class Pipeline(Fluent, Splitting, DatasetBase):
    """A sequence of stages, iterated as one: ``for item in Pipeline(stage, stage, ...)``.

    Args:
        stages: the first must be a source (``ShardList``, or a stage with named sources);
            each following stage reads from the one before it.
        seed: seed of every shuffle, combined with the epoch (and rank and worker).
        rank, world_size: override the world detected when iteration starts.

    The epoch (``set_epoch``) and the world are read at the start of each iteration.
    ``state_dict()`` after any item, and ``load_state_dict()`` before the next iteration,
    continue exactly where it stopped (see ``tarstream.stage``).
    """

    def __init__(
        self,
        *stages: Stage[Any] | Callable[..., Any],
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not stages:
            raise ValueError("a Pipeline needs at least one stage")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ArgumentError(f"seed must be an int, got {seed!r}")
        self._stages: tuple[Stage[Any], ...] = tuple(_as_stage(s) for s in stages)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._epoch = SharedEpoch()
        self._fixed_world: World | None = None
        self._split: tuple[int, int] | None = None  # (i, n): split i of n (``split``)
        self._chain: Stage[Any] | None = None
        self._context: Context | None = None
        self._pending: State | None = None
        self._base: State | None = None

    # -- composition -----------------------------------------------------------------------
    @property
    def stages(self) -> tuple[Stage[Any], ...]:
        return self._stages

    def then(self: _P, *stages: Stage[Any] | Callable[..., Any]) -> _P:
        """Return a new pipeline with ``stages`` appended."""
        clone = copy.copy(self)
        clone._epoch = SharedEpoch(self.epoch)
        clone._stages = self._stages + tuple(_as_stage(s) for s in stages)
        clone._chain = None
        clone._context = None
        clone._pending = None
        return clone

    # -- epochs ----------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the next iteration. Call it in the trainer before each epoch:
        DataLoader workers follow, persistent or not (the epoch is in shared memory).
        Iterating a shuffled pipeline again without it repeats the order, with an
        ``EpochWarning`` (``tarstream.Loader`` advances the epoch itself).

        After ``load_state_dict``, another epoch than the state's starts that epoch from its
        beginning and drops the loaded state (with a warning).
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._pending = drop_if_other_epoch(self._pending, epoch)
        self._epoch.set(epoch)

    def share_epoch(self, context: Any = None) -> None:
        """Kept for compatibility: the epoch is always shared with DataLoader workers."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_chain"] = None
        state["_context"] = None
        return state

    # -- iteration -------------------------------------------------------------------------
    def world(self) -> World:
        """The world this pipeline iterates as: fixed by ``in_world``, else detected now."""
        if self._fixed_world is not None:  # as given: a split's world already
            return self._fixed_world
        return split_world(detect_world(self.rank, self.world_size), self._split)

    def in_world(self: _P, world: World) -> _P:
        """Return a copy that iterates as ``world`` (a rank and DataLoader worker).

        Lets tests and tools run any layout, such as 8 ranks x 8 workers, in one process.
        """
        clone = self.then()
        clone._fixed_world = world
        return clone

    def connect(self, context: Context) -> Stage[Any]:
        """A fresh chain of copies of the stages, connected in ``context``; its last stage."""
        return connect_chain(self._stages, context)

    def fingerprint(self) -> str:
        """A short hash of the dataset's shard names and counts ("" without a shard list)."""
        prints = [shard_list.fingerprint() for shard_list in _shard_lists(self._stages)]
        if len(prints) <= 1:
            return prints[0] if prints else ""
        return hashlib.sha256(",".join(prints).encode()).hexdigest()[:16]

    def identity(self) -> Identity:
        """What a state of this pipeline records and must match to be loaded."""
        names = tuple(type(s).__name__ for s in self._stages)
        return Identity(self.fingerprint(), self.seed, names)

    def _start(self, memory: BatchMemory | None) -> Stage[Any]:
        """Connect and reset a chain for one iteration, from the loaded state if any."""
        world = self.world()
        if self._pending is None and world.worker == 0 and self._epoch.start() == 2:
            self._warn_repeated()
        epoch, base, stages = self._resume_point(world)
        self._pending = None
        rest = rest_of_epoch(self.connect, self.seed, epoch, base)
        context = Context(self.seed, epoch, world, rest, memory=memory)
        chain = self.connect(context)
        self._chain, self._context, self._base = chain, context, base
        chain.reset(stages)
        return chain

    def _warn_repeated(self) -> None:
        if any(_shuffles(stage) for stage in self._stages):
            warnings.warn(
                f"epoch {self.epoch} is iterated again without set_epoch(): the same order "
                "as before. Call pipeline.set_epoch(epoch) before each epoch (tarstream.Loader "
                "does it itself)",
                EpochWarning,
                stacklevel=4,
            )

    def _resume_point(self, world: World) -> tuple[int, State | None, State | None]:
        """Epoch, base layout and stage state the next iteration starts from in ``world``."""
        if self._pending is None:
            return self.epoch, None, None
        return int(self._pending["epoch"]), *plan_resume(self._pending, world)

    def __iter__(self) -> Iterator[Any]:
        chain = self._start(None)
        try:
            items = chain.own_iterator()
            if items is not None:
                yield from items
                return
            while True:
                try:
                    yield chain.next()
                except StopIteration:
                    return
        finally:
            chain.close()

    def with_states(
        self, *, resume: State | None = None, memory: BatchMemory | None = None
    ) -> Iterator[tuple[State, Any]]:
        """Iterate as a ``Loader`` worker does: yield ``(stage state, item)``, the state of
        this copy's chain after each item.

        Args:
            resume: a state to continue from (checked by the caller with
                ``tarstream.run.resume.check_state``), as ``load_state_dict`` would.
            memory: the batch memory ``Batch`` stages stack into (None: their own).
        """
        if resume is not None:
            self._pending = resume
        chain = self._start(memory)
        try:
            while True:
                try:
                    item = chain.next()
                except StopIteration:
                    return
                yield chain.get_state(), item
        finally:
            chain.close()

    def stage_stats(self) -> dict[str, Any]:
        """What the stages counted in this process so far (the copies an iteration connects
        count into their stage's stats): ``"read"`` (a ``ReadStats``) and ``"decode"`` (a
        ``DecodeStats``), ``"mix"`` (a ``MixStats``) and ``"equalize"`` (an
        ``EqualizeStats``), each summed over the stages that
        keep them, named sources' stages included; absent where no stage
        does. ``since`` on each gives what one iteration counted."""
        totals: dict[str, Any] = {}
        kinds = (
            ("read", ReadStats),
            ("decode", DecodeStats),
            ("mix", MixStats),
            ("equalize", EqualizeStats),
        )
        for stage in _all_stages(self._stages):
            stats: Any = getattr(stage, "stats", None)
            for kind, stats_type in kinds:
                if isinstance(stats, stats_type):
                    totals.setdefault(kind, stats_type()).add(stats)
        return totals

    def state_dict(self) -> State:
        """Return the state after the last item this copy returned (JSON-serializable).

        See ``tarstream.run.resume`` for its format. In a DataLoader worker it is the
        worker's part (what torchdata's StatefulDataLoader saves);
        ``tarstream.Loader.state_dict`` gives the state of every worker of the rank.
        """
        if self._chain is None or self._context is None:  # not started: where it would
            world = self.world()
            epoch, base, stages = self._resume_point(world)
        else:
            world, epoch = self._context.world, self._context.epoch
            base, stages = self._base, self._chain.get_state()
        return new_state(
            self.identity(),
            epoch=epoch,
            world_size=world.world_size,
            num_workers=world.num_workers,
            parts=[(world.rank, world.worker, stages)],
            base=base,
        )

    def load_state_dict(self, state: State) -> None:
        """Continue from ``state`` at the next iteration.

        In the layout it was saved in (world size and workers), the sequence continues
        exactly; in another, the samples of the epoch not yet delivered are split over the
        new layout (the state must then cover every copy; see ``tarstream.run.resume``).

        Raises:
            ResumeError: an unknown version, another dataset, seed or pipeline.
        """
        check_state(state, self.identity())
        self._pending = None
        self.set_epoch(int(state["epoch"]))
        self._pending = state

    # -- length ----------------------------------------------------------------------------
    def length(self, world: World | None = None) -> int:
        """Items one pipeline copy yields in ``world`` (default: this process's).

        Raises:
            TypeError: the length is unknown (no sample counts, or a stage such as a filter
                that changes the count unpredictably).
        """
        world = world if world is not None else self.world()
        return self.count_items(Context(self.seed, self.epoch, world))

    def count_items(self, context: Context, *, nominal: bool = False) -> int:
        """Items one copy yields in ``context``; ``nominal``: counting a stage that drops
        an unknown number (a filter) as dropping none."""
        node: Stage[Any] | None = self.connect(context)
        stages: list[Stage[Any]] = []
        while node is not None:
            stages.append(node)
            node = node.source
        count: int | None = None
        for stage in reversed(stages):
            if isinstance(stage, Mix) and stage.share() is not None:
                count = stage.share()
            elif isinstance(stage, ReadShards):
                count = stage.plan_size()
                if count is None:
                    raise TypeError("length unknown: shards have no sample counts (no sidecars)")
            elif count is not None:
                length = getattr(stage, "length", None)
                keeps = stage.preserves_count or nominal
                count = length(count) if length is not None else (count if keeps else None)
                if count is None:
                    raise TypeError(f"length unknown: {stage!r} changes the number of items")
        if count is None:
            raise TypeError("length unknown: the pipeline has no ReadShards stage")
        return count

    def __len__(self) -> int:
        return self.length()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(s) for s in self._stages)})"


def _shuffles(stage: Stage[Any]) -> bool:
    """Whether ``stage`` orders items by the epoch (a shuffle of shards or of items)."""
    return type(stage).__name__ in ("Shuffle", "ShuffleShards") or any(
        _shuffles(s) for s in getattr(stage, "stages", ())
    )
