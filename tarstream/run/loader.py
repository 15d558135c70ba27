"""Loader: the DataLoader to use with tarstream pipelines, with exact and elastic resume."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import ArgumentError, TarstreamError
from ..stage import State
from ..world import World
from .audit import AuditLog
from .pipeline import DatasetBase, Pipeline, drop_if_other_epoch
from .resume import (
    base_of,
    check_state,
    merge_states,
    new_state,
    parts_of,
    require_complete,
    same_layout,
)
from .transport import SharedBatchMemory

__all__ = ["Loader"]


class _WorkerStream(DatasetBase):
    """What each DataLoader worker iterates: its copy of the pipeline, tagged items.

    Yields ``(worker, stage state, item, stats)``, so the main process knows the state
    after each item it hands to the trainer, whatever the workers have prefetched; ``stats``
    is None, or what the stages counted since the last report (at most every
    ``stats_every`` seconds: it rides on an item, so reports never change the order in
    which items arrive). DataLoader worker
    ``i`` plays pipeline worker ``(i + shift) % n`` so that a resumed epoch keeps the
    round-robin order of the interrupted one.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        world: World,
        resume: State | None,
        shift: int,
        stats_every: float,
    ) -> None:
        self.pipeline = pipeline
        self.world = world
        self.resume = resume
        self.shift = shift
        self.stats_every = stats_every
        self._iterated = False
        self._memory: SharedBatchMemory | None = None  # made in the worker that uses it

    def __iter__(self) -> Iterator[tuple[int, State | None, Any, dict[str, Any] | None]]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        first, self._iterated = not self._iterated, True
        n = self.world.num_workers
        worker = ((info.id if info is not None else 0) + (self.shift if first else 0)) % n
        world = World(self.world.rank, self.world.world_size, worker, n)
        pipeline = self.pipeline.in_world(world)
        if info is not None and self._memory is None and SharedBatchMemory.available():
            self._memory = SharedBatchMemory()
        memory = self._memory if info is not None else None
        resume = self.resume if first else None  # checked by Loader.load_state_dict
        reports = _Reports(pipeline, self.stats_every)
        try:
            for state, item in pipeline.with_states(resume=resume, memory=memory):
                shipped = memory.ship(item) if memory is not None else item
                yield worker, state, shipped, reports.due()
        except TarstreamError as e:
            # torch would re-raise it in the trainer as the same type built from a message
            # alone, losing shard, member and offset: it travels whole instead
            yield worker, None, _Finished(reports.rest(), e), None
            return
        yield worker, None, _Finished(reports.rest()), None


class _Reports:
    """What a worker's stages counted, in reports of what is new since the last one."""

    def __init__(self, pipeline: Pipeline, every: float) -> None:
        self.pipeline, self.every = pipeline, every
        self.last = copy.deepcopy(pipeline.stage_stats())
        self.next = time.monotonic() + every

    def due(self) -> dict[str, Any] | None:
        """What is new, once ``every`` seconds have passed since the last report."""
        now = time.monotonic()
        if now < self.next:
            return None
        self.next = now + self.every
        return self.rest()

    def rest(self) -> dict[str, Any]:
        """What is new since the last report."""
        current = self.pipeline.stage_stats()
        new = _since(current, self.last)
        self.last = copy.deepcopy(current)
        return new


def _since(stats: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {kind: value.since(before[kind]) for kind, value in stats.items()}


class _Finished:
    """The end of a worker's epoch, on its way to the trainer (pickled whole): what its
    stages counted, and the tarstream error that ended it, if one did."""

    def __init__(self, stats: dict[str, Any], error: TarstreamError | None = None) -> None:
        self.stats = stats
        self.error = error


@dataclass
class _Progress:
    """What the trainer has received in the current epoch, worker by worker."""

    epoch: int
    world: World
    base: State | None
    parts: dict[int, State | None] = field(default_factory=dict)
    next_worker: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, report: dict[str, Any]) -> None:
        """Add a report of what a worker's stages counted."""
        for kind, stats in report.items():
            if kind not in self.stats:
                self.stats[kind] = type(stats)()
            self.stats[kind].add(stats)

    def finished(self, end: _Finished) -> None:
        """Add the last report of a worker; raise the error that ended it, if any."""
        self.add(end.stats)
        if end.error is not None:
            raise end.error


class Loader:
    """Iterate a pipeline through ``torch.utils.data.DataLoader`` worker processes.

    Batching happens in the pipeline (``.batch(n)``), so the DataLoader runs with
    ``batch_size=None``; items arrive as the pipeline makes them (numpy arrays stay numpy
    arrays; batches are tensors by default, see ``Batch``). Each worker reads its own
    share of the epoch (split by rank, then worker), so every sample arrives exactly once.

    Epochs: each ``iter(loader)`` after the first starts the next epoch unless
    ``set_epoch`` or ``load_state_dict`` was called since; the epoch reaches workers,
    persistent or not, under fork and spawn (through shared memory for persistent workers).

    Resume: ``state_dict()`` after any item counts exactly what the trainer received (not
    what workers prefetched); ``load_state_dict()`` before the next ``iter`` continues the
    same sequence when the world size and number of workers are the same, and delivers
    the rest of the epoch exactly once over the new layout when they are not. In DDP,
    ``state_dict(all_ranks=True)`` gathers every rank's part (a collective call on all
    ranks); save it from rank 0 and load it on every rank.

    Args:
        dataset: a Pipeline or TarStream.
        num_workers: worker processes (0: iterate in this process).
        multiprocessing_context: "fork", "spawn" or "forkserver" (default: the platform's).
        persistent_workers, prefetch_factor, pin_memory, timeout: as for DataLoader.
        stats_every: seconds between a worker's reports to ``stats`` (0: with every item).
        audit: a folder to log what this rank delivers to (``FOLDER/rank-RANK.jsonl``):
            runs of sample numbers every ``audit_every`` items, at each ``state_dict()``
            and at the end of an epoch, through resumes in any layout; ``tarstream audit
            FOLDER`` checks that every sample of each epoch was delivered exactly once
            (see ``tarstream.run.audit``). Needs sample counts and a pipeline whose order
            stages account for their items (as elastic resume does).
    """

    def __init__(
        self,
        dataset: Pipeline,
        *,
        num_workers: int = 0,
        multiprocessing_context: str | None = None,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        pin_memory: bool = False,
        timeout: float = 0.0,
        stats_every: float = 1.0,
        audit: str | os.PathLike[str] | None = None,
        audit_every: int = 1000,
    ) -> None:
        from torch.utils.data import DataLoader

        if not isinstance(dataset, Pipeline):
            raise ArgumentError(f"Loader needs a tarstream Pipeline, got {type(dataset).__name__}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if num_workers == 0 and (persistent_workers or multiprocessing_context is not None):
            raise ValueError("persistent_workers and multiprocessing_context need num_workers > 0")
        self.dataset = dataset
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers
        if stats_every < 0:
            raise ValueError(f"stats_every must be >= 0, got {stats_every}")
        self.stats_every = stats_every
        options: dict[str, Any] = {}
        if prefetch_factor is not None:
            options["prefetch_factor"] = prefetch_factor
        self._options = dict(
            batch_size=None,
            collate_fn=_as_made,  # torch's default would turn numpy arrays into tensors
            num_workers=num_workers,
            multiprocessing_context=multiprocessing_context,
            persistent_workers=persistent_workers,
            pin_memory=pin_memory,
            timeout=timeout,
            **options,
        )
        DataLoader(cast(Any, dataset), **self._options)  # checks the options now
        self._loader: Any = None
        self._loader_world: World | None = None
        self._iterations = 0
        self._epoch_given = False
        self._pending: State | None = None
        self._progress: _Progress | None = None
        self._audit = AuditLog(audit, dataset, audit_every) if audit is not None else None

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` run epoch ``epoch``.

        After ``load_state_dict``, another epoch than the state's starts that epoch from its
        beginning and drops the loaded state (with a warning).
        """
        self._pending = drop_if_other_epoch(self._pending, epoch)
        self.dataset.set_epoch(epoch)
        self._epoch_given = True

    def __iter__(self) -> Iterator[Any]:
        from torch.utils.data import DataLoader

        if self._iterations and not self._epoch_given:
            self.dataset.set_epoch(self.dataset.epoch + 1)
        self._epoch_given = False
        self._iterations += 1
        world = self._world()
        resume, self._pending = self._pending, None
        progress = _Progress(self.dataset.epoch, world, None)
        shift = 0
        if resume is not None:
            parts = parts_of(resume)
            mine = {
                w: parts[(world.rank, w)]
                for w in range(world.num_workers)
                if (world.rank, w) in parts
            }
            if same_layout(resume, world) and len(mine) == world.num_workers:
                progress.base, progress.parts = resume["base"], mine
                shift = int(resume["next"].get(str(world.rank), 0))
                progress.next_worker = shift
            else:
                require_complete(resume, world)  # raised here, not in a worker
                progress.base = base_of(resume)
        stream = _WorkerStream(self.dataset, world, resume, shift, self.stats_every)
        if (
            self._loader is None
            or not self.persistent_workers
            or resume is not None
            or self._loader_world != world
        ):
            self._loader = DataLoader(cast(Any, stream), **self._options)
            self._loader_world = world
        if self._audit is not None:
            self._audit.start(progress.epoch, world, progress.base, resume)
        iterator = iter(self._loader)
        self._progress = progress
        return self._deliver(iterator, progress, self._audit)

    @staticmethod
    def _deliver(
        iterator: Iterator[Any], progress: _Progress, audit: AuditLog | None
    ) -> Iterator[Any]:
        n = progress.world.num_workers
        for worker, state, item, report in iterator:
            if report is not None:
                progress.add(report)
            if isinstance(item, _Finished):
                progress.finished(item)
                continue
            progress.parts[worker] = state
            progress.next_worker = (worker + 1) % n
            if audit is not None:
                audit.delivered(progress.parts, progress.stats)
            yield item
        if audit is not None:
            audit.flush(progress.parts, progress.stats)

    @property
    def stats(self) -> dict[str, Any]:
        """What the pipeline's stages counted this epoch, summed over the workers:
        ``"read"`` (``ReadStats``: samples, bytes, skipped members, failed shards in lenient
        mode) and ``"decode"`` (``DecodeStats``). Live: each worker reports what is new at
        most every ``stats_every`` seconds, with an item, and the rest when its share ends
        (or raises), so after the epoch the sums are exact. Counts include what workers
        read ahead of the items the trainer has taken."""
        return self._progress.stats if self._progress is not None else {}

    def state_dict(self, *, all_ranks: bool = False) -> State:
        """Return the state after the last item the trainer received (JSON-serializable).

        Args:
            all_ranks: gather every rank's state through torch.distributed (call it on
                every rank) and return the merged state, which resumes in any layout.
        """
        state = self._own_state()
        if all_ranks:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                gathered: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, state)
                state = merge_states(gathered)
        return state

    def _own_state(self) -> State:
        if self._pending is not None:
            return self._pending
        progress = self._progress
        if progress is None:
            progress = _Progress(self.dataset.epoch, self._world(), None)
        world = progress.world
        state = new_state(
            self.dataset.identity(),
            epoch=progress.epoch,
            world_size=world.world_size,
            num_workers=world.num_workers,
            parts=[(world.rank, w, progress.parts.get(w)) for w in range(world.num_workers)],
            next_worker={world.rank: progress.next_worker},
            base=progress.base,
        )
        if self._audit is not None and self._progress is not None:
            self._audit.checkpoint(progress.parts, progress.stats, state)
        return state

    def load_state_dict(self, state: State) -> None:
        """Continue from ``state`` at the next ``iter(loader)`` (its epoch).

        Raises:
            ResumeError: an unknown version, another dataset, seed or pipeline.
        """
        check_state(state, self.dataset.identity())
        self._pending = state
        self.dataset.set_epoch(int(state["epoch"]))
        self._epoch_given = True
        self._progress = None

    def _world(self) -> World:
        """This rank, with the loader's pipeline copies (worker 0 of them)."""
        detected = self.dataset.world()
        return World(detected.rank, detected.world_size, 0, max(self.num_workers, 1))

    def __len__(self) -> int:
        world = self._world()
        return sum(
            self.dataset.length(World(world.rank, world.world_size, w, world.num_workers))
            for w in range(world.num_workers)
        )


def _as_made(item: Any) -> Any:
    """The DataLoader's collate_fn: an item as the pipeline made it."""
    return item
