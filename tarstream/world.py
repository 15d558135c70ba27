"""Who is iterating: rank and world size, DataLoader worker, epoch and seed.

Rank and world size are read when iteration starts (torch.distributed if initialized, else
the ``RANK``/``WORLD_SIZE`` environment variables, else 0/1), never when a dataset is built;
the DataLoader worker comes from ``torch.utils.data.get_worker_info()``. Tests and users may
give any of them explicitly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Context", "World", "derive_seed", "detect_world"]


@dataclass(frozen=True)
class World:
    """Where one pipeline copy runs: rank of world_size, worker of num_workers (0 = in process)."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in 0..{self.world_size - 1}, got {self.rank}")
        if self.num_workers < 1 or not 0 <= self.worker < self.num_workers:
            raise ValueError(f"worker must be in 0..{self.num_workers - 1}, got {self.worker}")


@dataclass(frozen=True)
class Context:
    """What an iteration depends on besides the data: seed, epoch and world.

    ``rest`` replaces the epoch's plan after an elastic resume: the plan (runs of a shard's
    samples, ``tarstream.plan.segments.Plan``) of the epoch not yet delivered, to be split
    over the new layout (plans by source name for a pipeline that mixes several). ``memory`` is
    the ``BatchMemory`` batches are stacked into (None: each Batch stage keeps its own).
    """

    seed: int
    epoch: int
    world: World
    rest: Any = None
    memory: Any = None


def derive_seed(*parts: int) -> int:
    """Return a 64-bit seed from integers, through ``numpy.random.SeedSequence``.

    >>> derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)
    True
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0])


def _rank_from_torch() -> tuple[int, int] | None:
    if sys.modules.get("torch") is None:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from e


def detect_world(rank: int | None = None, world_size: int | None = None) -> World:
    """Return the World of the calling process; explicit ``rank``/``world_size`` win."""
    if rank is None or world_size is None:
        found = _rank_from_torch()
        if found is None:
            env_rank, env_size = _env_int("RANK"), _env_int("WORLD_SIZE")
            found = (env_rank or 0, env_size or 1)
        rank = found[0] if rank is None else rank
        world_size = found[1] if world_size is None else world_size
    worker, num_workers = 0, 1
    if sys.modules.get("torch") is not None:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None:
            worker, num_workers = info.id, info.num_workers
    return World(rank, world_size, worker, num_workers)
