"""``tarstream.mix``: one pipeline drawing from several by weight (``tarstream.plan.mix``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ArgumentError
from ..plan.mix import Mix, Weights
from .pipeline import Pipeline

__all__ = ["mix"]

#: Hugging Face's ``stopping_strategy`` names, taken as well.
_STOPS = {"first_exhausted": "first", "all_exhausted": "all"}


def mix(
    datasets: Sequence[Pipeline] | Mapping[str, Pipeline],
    weights: Weights | None = None,
    *,
    seed: int = 0,
    stop: str = "first",
    cost: Callable[[Any], float] | None = None,
    length: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> Pipeline:
    """A pipeline whose items are drawn from ``datasets`` by weight.

    Each dataset keeps its own stages: its shuffles (with its own seed), decoding and
    splits over ranks and workers, so every sample of a source is delivered at most once
    per source epoch across all copies. Chain more stages on the result (``.batch(64)``).

    Args:
        datasets: pipelines (``TarStream(...)...``), in a list (named "0", "1", ...) or a
            dict by name (the names ``stats`` and states use).
        weights: one number per dataset; a function of the draw number giving them; or a
            schedule ``[(0, [0.9, 0.1]), (100_000, [0.5, 0.5])]`` (from that draw on).
            Default: equal. Per copy of the pipeline (each DataLoader worker draws on its
            own), so a schedule counts that copy's draws.
        seed: seed of the draws, combined with the epoch, rank and worker.
        stop: "first" (or HF's "first_exhausted") ends when a dataset drawn from ends;
            "all" ("all_exhausted") starts ended datasets again, each with its next epoch,
            until every one has ended once; "never" starts them again for ever.
        cost: a function of an item (e.g. its number of tokens): weights are then shares
            of the summed cost, not of items.
        length: items per epoch over all ranks and workers (each copy draws its share;
            ``len()`` is then known): the epoch of an endless mixture (``stop="never"``).
        rank, world_size: override the world detected when iteration starts (the
            datasets are split in the mix's world; they cannot have their own).

    The state (``state_dict``) holds the draws made and each dataset's own state: an
    exact resume continues the same sequence. Elastic resume (another number of workers
    or ranks) gives each dataset's rest of its epoch to the new layout, while no dataset
    has been started again (see ``tarstream.run.elastic``).
    """
    if isinstance(datasets, Mapping):
        named = [(str(name), pipeline) for name, pipeline in datasets.items()]
    else:
        named = [(str(i), pipeline) for i, pipeline in enumerate(datasets)]
    for name, pipeline in named:
        if not isinstance(pipeline, Pipeline):
            raise ArgumentError(f"mix takes tarstream pipelines, got {pipeline!r} for {name!r}")
        if pipeline.rank is not None or pipeline.world_size is not None:
            raise ArgumentError(
                f"dataset {name!r} has its own rank or world_size: give them to mix() instead"
            )
    stop = _STOPS.get(stop, stop)
    sources = [(name, pipeline.stages, pipeline.seed) for name, pipeline in named]
    stage = Mix(sources, weights, seed=seed, stop=stop, cost=cost, length=length)  # type: ignore[arg-type]
    return Pipeline(stage, seed=seed, rank=rank, world_size=world_size)
