"""Elastic resume: the rest of an epoch saved in one layout, to be split over another.

Each old copy's chain is connected in its own world (through a ``connect`` callable, so
this module knows pipelines only as chains of stages); its reader's plan, less what the
copy delivered (``tarstream.stage.delivered``: shuffles replayed on numbers), is what it
still owed. The union, in dataset order, becomes the segments of the new epoch's plan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ResumeError
from ..plan.segments import Segment, segments_of
from ..read.read_shards import ReadShards
from ..stage import Stage, State, delivered, upstream
from ..world import Context, World
from .resume import parts_of

__all__ = ["Connect", "rest_of_epoch"]

#: Connects a fresh chain of a pipeline's stages in a context; returns its last stage.
Connect = Callable[[Context], Stage[Any]]


def rest_of_epoch(
    connect: Connect, seed: int, epoch: int, base: State | None
) -> tuple[Segment, ...] | None:
    """The segments of the epoch not delivered in layout ``base`` (None: no resume, the
    whole epoch).

    Raises:
        ResumeError: the pipeline has no reader with sample counts, or a stage on the way
            cannot account for what it consumed.
    """
    if base is None:
        return None
    refs, first = _rest_refs(connect, seed, epoch, base)
    return segments_of(refs, first)


def _rest_refs(
    connect: Connect, seed: int, epoch: int, layout: State
) -> tuple[np.ndarray, np.ndarray]:
    """The dataset-wide numbers of the samples ``layout`` did not deliver, sorted, and the
    number of each shard's first sample."""
    inner = rest_of_epoch(connect, seed, epoch, layout["base"])
    parts = parts_of(layout)
    rest = []
    first: np.ndarray | None = None
    for rank in range(layout["world_size"]):
        for worker in range(layout["num_workers"]):
            world = World(rank, layout["world_size"], worker, layout["num_workers"])
            chain = connect(Context(seed, epoch, world, inner))
            reader = upstream(chain, ReadShards)
            if reader is None:
                raise ResumeError("elastic resume needs a ReadShards stage in the pipeline")
            first = reader.shard_list().sample_starts() if first is None else first
            refs = reader.plan_refs()
            stages = parts.get((rank, worker))
            if stages is not None:
                refs = refs[~delivered(chain, stages)]
            rest.append(refs)
    if first is None:
        raise ResumeError("the saved layout has no copies")
    return np.sort(np.concatenate(rest), kind="stable"), first
