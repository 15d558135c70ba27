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
import multiprocessing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from multiprocessing.context import get_spawning_popen
from typing import TYPE_CHECKING, Any, Literal

from .stage import FunctionStage, Stage, State
from .world import Context, World, detect_world

__all__ = ["Pipeline"]

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .media import AudioOptions, VideoOptions

    _DatasetBase = object
else:
    try:
        from torch.utils.data import IterableDataset as _DatasetBase
    except ImportError:  # torch is optional
        _DatasetBase = object


def _as_stage(item: Stage[Any] | Callable[..., Any]) -> Stage[Any]:
    if isinstance(item, Stage):
        return item
    if callable(item):
        return FunctionStage(item)
    raise TypeError(f"pipeline items must be stages or generator functions, got {item!r}")


def _drop_if_other_epoch(pending: State | None, epoch: int) -> State | None:
    """The loaded state to keep when epoch ``epoch`` is asked for next."""
    if pending is None or int(pending["epoch"]) == epoch:
        return pending
    warnings.warn(
        f"set_epoch({epoch}) after loading a state of epoch {pending['epoch']}: epoch {epoch} "
        "starts from its beginning and the loaded state is not used",
        stacklevel=3,
    )
    return None


class Pipeline(_DatasetBase):
    """A sequence of stages, iterated as one: ``for item in Pipeline(stage, stage, ...)``.

    Args:
        stages: the first must be a source (``ShardList``); each following stage reads
            from the one before it.
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
            raise TypeError(f"seed must be an int, got {seed!r}")
        self._stages: tuple[Stage[Any], ...] = tuple(_as_stage(s) for s in stages)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._epoch = 0
        self._fixed_world: World | None = None
        self._shared_epoch: Any = None
        self._chain: Stage[Any] | None = None
        self._context: Context | None = None
        self._pending: State | None = None
        self._base: State | None = None
        self._memory: Any = None  # a Loader worker's shared BatchMemory

    # -- composition -----------------------------------------------------------------------
    @property
    def stages(self) -> tuple[Stage[Any], ...]:
        return self._stages

    def then(self, *stages: Stage[Any] | Callable[..., Any]) -> Pipeline:
        """Return a new pipeline with ``stages`` appended."""
        clone = copy.copy(self)
        clone._stages = self._stages + tuple(_as_stage(s) for s in stages)
        clone._chain = None
        clone._context = None
        clone._pending = None
        return clone

    def shuffle(self, buffer_size: int, *, initial: int | None = None) -> Pipeline:
        """Shuffle samples through a buffer (``tarstream.shuffle.Shuffle``)."""
        from .shuffle import Shuffle

        return self.then(Shuffle(buffer_size, initial=initial))

    def decode(
        self,
        image: str = "rgb8",
        *,
        layout: str = "HWC",
        size: int | tuple[int, int] | None = None,
        video: VideoOptions | None = None,
        audio: AudioOptions | None = None,
        only: Iterable[str] | None = None,
        drop_others: bool = False,
        decoders: Mapping[str, Callable[[bytes], Any] | None] | None = None,
        unsafe: Iterable[str] = (),
        errors: Literal["strict", "skip"] = "strict",
        max_errors: int | None = None,
    ) -> Pipeline:
        """Decode fields by extension (``tarstream.decode.Decode``, which takes the limits
        ``max_pixels`` and ``max_size`` too)."""
        from .decode import Decode

        return self.then(
            Decode(
                image,
                layout=layout,
                size=size,
                video=video,
                audio=audio,
                only=only,
                drop_others=drop_others,
                decoders=decoders,
                unsafe=unsafe,
                errors=errors,
                max_errors=max_errors,
            )
        )

    def map(self, fn: Callable[[Any], Any]) -> Pipeline:
        """Apply ``fn`` to every item."""
        from .transform import Map

        return self.then(Map(fn))

    def filter(self, predicate: Callable[[Any], bool]) -> Pipeline:
        """Keep the items for which ``predicate`` is true."""
        from .transform import Filter

        return self.then(Filter(predicate))

    def select(self, *fields: str) -> Pipeline:
        """Keep only the named fields (plus ``__key__`` and ``__url__``)."""
        from .transform import Select

        return self.then(Select(*fields))

    def rename(self, **mapping: str) -> Pipeline:
        """Rename fields, ``new="old"`` (``"jpg;png"``: whichever is present)."""
        from .transform import Rename

        return self.then(Rename(**mapping))

    def to_tuple(self, *fields: str) -> Pipeline:
        """Turn samples into tuples of the named fields."""
        from .transform import ToTuple

        return self.then(ToTuple(*fields))

    def batch(
        self,
        size: int,
        *,
        partial: bool = True,
        collate: Callable[[Sequence[Any]], Any] | None = None,
    ) -> Pipeline:
        """Group items into batches (``tarstream.batch.Batch``)."""
        from .batch import Batch

        return self.then(Batch(size, partial=partial, collate=collate))

    def unbatch(self) -> Pipeline:
        """Split batches back into items."""
        from .batch import Unbatch

        return self.then(Unbatch())

    def take(self, n: int) -> Pipeline:
        """Stop after ``n`` items."""
        from .slicing import Take

        return self.then(Take(n))

    def skip(self, n: int) -> Pipeline:
        """Drop the first ``n`` items."""
        from .slicing import Skip

        return self.then(Skip(n))

    def repeat(self, times: int | None = None) -> Pipeline:
        """Iterate ``times`` epochs in a row (None: forever), each with its own order."""
        from .slicing import Repeat

        return self.then(Repeat(times))

    # -- epochs ----------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        shared = self._shared_epoch
        return int(shared.value) if shared is not None else self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the next iteration (in the main process; workers follow).

        After ``load_state_dict``, another epoch than the state's starts that epoch from its
        beginning and drops the loaded state (with a warning).
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._pending = _drop_if_other_epoch(self._pending, epoch)
        self._epoch = epoch
        if self._shared_epoch is not None:
            self._shared_epoch.value = epoch

    def share_epoch(self, context: Any = None) -> None:
        """Keep the epoch in shared memory, so persistent DataLoader workers see set_epoch."""
        if self._shared_epoch is None:
            ctx = context if context is not None else multiprocessing.get_context()
            self._shared_epoch = ctx.Value("q", self._epoch, lock=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_chain"] = None
        state["_context"] = None
        state["_memory"] = None
        if self._shared_epoch is not None and get_spawning_popen() is None:
            # shared memory travels only to processes being started; elsewhere keep the value
            state["_epoch"] = self.epoch
            state["_shared_epoch"] = None
        return state

    # -- iteration -------------------------------------------------------------------------
    def world(self) -> World:
        """The world this pipeline iterates as: fixed by ``in_world``, else detected now."""
        if self._fixed_world is not None:
            return self._fixed_world
        return detect_world(self.rank, self.world_size)

    def in_world(self, world: World) -> Pipeline:
        """Return a copy that iterates as ``world`` (a rank and DataLoader worker).

        Lets tests and tools run any layout, such as 8 ranks x 8 workers, in one process.
        """
        clone = self.then()
        clone._fixed_world = world
        return clone

    def _connect(self, context: Context) -> Stage[Any]:
        chain: Stage[Any] | None = None
        for stage in self._stages:
            chain = stage.connect(chain, context)
        assert chain is not None
        return chain

    def fingerprint(self) -> str:
        """A short hash of the dataset's shard names and counts ("" without a shard list)."""
        from .shards import ShardList

        first = self._stages[0]
        return first.fingerprint() if isinstance(first, ShardList) else ""

    def _start(self) -> Stage[Any]:
        """Connect and reset a chain for one iteration, from the loaded state if any."""
        from .resume import rest_of_epoch

        world = self.world()
        epoch, base, stages = self._resume_point(world)
        self._pending = None
        context = Context(
            self.seed, epoch, world, rest_of_epoch(self, epoch, base), memory=self._memory
        )
        chain = self._connect(context)
        self._chain, self._context, self._base = chain, context, base
        chain.reset(stages)
        return chain

    def _resume_point(self, world: World) -> tuple[int, State | None, State | None]:
        """Epoch, base layout and stage state the next iteration starts from in ``world``."""
        from .resume import plan_resume

        if self._pending is None:
            return self.epoch, None, None
        return int(self._pending["epoch"]), *plan_resume(self._pending, world)

    def __iter__(self) -> Iterator[Any]:
        return self._items(with_state=False)

    def _items(self, *, with_state: bool) -> Iterator[Any]:
        """Iterate from the loaded state if any; ``with_state``: yield (stage state, item)."""
        chain = self._start()
        try:
            items = None if with_state else chain.items()
            if items is not None:
                yield from items
                return
            while True:
                try:
                    item = chain.next()
                except StopIteration:
                    return
                yield (chain.get_state(), item) if with_state else item
        finally:
            chain.close()

    def state_dict(self) -> State:
        """Return the state after the last item this copy returned (JSON-serializable).

        See ``tarstream.resume`` for its format. In a DataLoader worker it is the worker's
        part (what torchdata's StatefulDataLoader saves); ``tarstream.Loader.state_dict``
        gives the state of every worker of the rank.
        """
        from .resume import new_state

        if self._chain is None or self._context is None:  # not started: where it would
            world = self.world()
            epoch, base, stages = self._resume_point(world)
        else:
            world, epoch = self._context.world, self._context.epoch
            base, stages = self._base, self._chain.get_state()
        return new_state(
            self,
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
        new layout (the state must then cover every copy; see ``tarstream.resume``).

        Raises:
            ResumeError: an unknown version, another dataset, seed or pipeline.
        """
        from .resume import check_state

        check_state(state, self)
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
        from .shards import ReadShards

        world = world if world is not None else self.world()
        chain = self._connect(Context(self.seed, self.epoch, world))
        stages: list[Stage[Any]] = []
        node: Stage[Any] | None = chain
        while node is not None:
            stages.append(node)
            node = node.source
        count: int | None = None
        for stage in reversed(stages):
            if isinstance(stage, ReadShards):
                count = stage.plan_size()
                if count is None:
                    raise TypeError("length unknown: shards have no sample counts (no sidecars)")
            elif count is not None:
                length = getattr(stage, "length", None)
                count = (
                    length(count)
                    if length is not None
                    else (count if stage.preserves_count else None)
                )
                if count is None:
                    raise TypeError(f"length unknown: {stage!r} changes the number of items")
        if count is None:
            raise TypeError("length unknown: the pipeline has no ReadShards stage")
        return count

    def __len__(self) -> int:
        return self.length()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(s) for s in self._stages)})"
