"""Loader: the DataLoader to use with tarstream pipelines."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any, cast

from .pipeline import Pipeline
from .world import World

__all__ = ["Loader"]


class Loader:
    """Iterate a pipeline through ``torch.utils.data.DataLoader`` worker processes.

    Batching happens in the pipeline (``.batch(n)``), so the DataLoader runs with
    ``batch_size=None``; numpy arrays in the items become tensors. Each worker reads its own
    share of the epoch (split by rank, then worker), so every sample arrives exactly once.

    Epochs: each ``iter(loader)`` after the first starts the next epoch unless
    ``set_epoch`` was called since; the epoch reaches workers, persistent or not, under fork
    and spawn (through shared memory for persistent workers).

    Args:
        dataset: a Pipeline or TarStream.
        num_workers: worker processes (0: iterate in this process).
        multiprocessing_context: "fork", "spawn" or "forkserver" (default: the platform's).
        persistent_workers, prefetch_factor, pin_memory, timeout: as for DataLoader.
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
    ) -> None:
        from torch.utils.data import DataLoader

        if not isinstance(dataset, Pipeline):
            raise TypeError(f"Loader needs a tarstream Pipeline, got {type(dataset).__name__}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if num_workers == 0 and (persistent_workers or multiprocessing_context is not None):
            raise ValueError("persistent_workers and multiprocessing_context need num_workers > 0")
        self.dataset = dataset
        self.num_workers = num_workers
        if num_workers > 0:
            dataset.share_epoch(multiprocessing.get_context(multiprocessing_context))
        options: dict[str, Any] = {}
        if prefetch_factor is not None:
            options["prefetch_factor"] = prefetch_factor
        self._loader: Any = DataLoader(
            cast(Any, dataset),
            batch_size=None,
            num_workers=num_workers,
            multiprocessing_context=multiprocessing_context,
            persistent_workers=persistent_workers,
            pin_memory=pin_memory,
            timeout=timeout,
            **options,
        )
        self._iterations = 0
        self._epoch_given = False

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` run epoch ``epoch``."""
        self.dataset.set_epoch(epoch)
        self._epoch_given = True

    def __iter__(self) -> Iterator[Any]:
        if self._iterations and not self._epoch_given:
            self.dataset.set_epoch(self.dataset.epoch + 1)
        self._epoch_given = False
        self._iterations += 1
        return iter(self._loader)

    def __len__(self) -> int:
        world = self.dataset.world()
        workers = max(self.num_workers, 1)
        return sum(
            self.dataset.length(World(world.rank, world.world_size, w, workers))
            for w in range(workers)
        )
