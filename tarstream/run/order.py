"""The order a pipeline delivers, worked out on references: no sample is read.

``planned_order`` runs a pipeline's order-defining stages (the plan, the reader, and
shuffles, takes and skips after it) over ``tarstream.read.references.References``, which
yields each sample's dataset-wide number where the reader would read it; the stages after
(decode, map, batch) cannot change the order and are left out, as is a ``repeat`` (the
order of one pass is planned). ``rank_order`` joins a
rank's DataLoader workers as the loader does: a batch from each in turn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArgumentError
from ..plan.shard_list import PlanStage
from ..read.read_shards import ReadShards
from ..read.references import References
from ..stage import Stage, connect_chain
from ..stages.slicing import Repeat
from ..world import Context, World
from .pipeline import Pipeline

__all__ = ["planned_order", "rank_order", "reference_stages"]


def reference_stages(pipeline: Pipeline) -> list[Stage[Any]]:
    """``pipeline``'s stages up to its last order-defining one, its reader replaced by
    references.

    Raises:
        ArgumentError: the pipeline has no reader, or a stage before it that is not part
            of the plan (a mix of several datasets).
    """
    stages: list[Stage[Any]] = []
    found = False
    for stage in pipeline.stages:
        if isinstance(stage, ReadShards):
            stages.append(References(interleave=stage.interleave))
            found = True
        elif (not found and isinstance(stage, PlanStage)) or (
            found and stage.forwards_items and not isinstance(stage, Repeat)
        ):
            stages.append(stage)
        elif found:
            break
        else:
            raise ArgumentError(f"an order can be planned for one dataset's reader, not {stage!r}")
    if not found:
        raise ArgumentError("the pipeline has no reader (ReadShards) to plan an order for")
    return stages


def planned_order(
    pipeline: Pipeline, world: World | None = None, *, epoch: int | None = None
) -> np.ndarray:
    """The dataset-wide sample numbers one copy (``world``: a rank and worker; default one
    process) of ``pipeline`` delivers in ``epoch`` (default: the pipeline's), in order."""
    chain = connect_chain(
        reference_stages(pipeline),
        Context(pipeline.seed, pipeline.epoch if epoch is None else epoch, world or World()),
    )
    chain.reset(None)
    try:
        return np.fromiter(_items(chain), dtype=np.int64)
    finally:
        chain.close()


def _items(chain: Stage[Any]) -> Any:
    items = chain.own_iterator()
    if items is not None:
        return items
    return iter(chain.next, None)  # pragma: no cover - every order stage has items


def rank_order(
    pipeline: Pipeline,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 1,
    *,
    batch: int = 1,
    epoch: int | None = None,
) -> np.ndarray:
    """What rank ``rank`` of ``world_size`` delivers with ``workers`` DataLoader workers:
    ``batch`` items from each worker in turn, as ``tarstream.Loader`` hands them on."""
    orders = [
        planned_order(pipeline, World(rank, world_size, worker, workers), epoch=epoch)
        for worker in range(workers)
    ]
    pieces = []
    longest = max((len(o) for o in orders), default=0)
    for start in range(0, longest, batch):
        pieces += [o[start : start + batch] for o in orders if start < len(o)]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
