"""Saved epoch state: its format, exact and elastic resume, and merging the ranks' states.

A state describes one epoch of one *layout* (world size x pipeline copies per rank, the
copies being DataLoader workers, or 1 in process) by the stage state of each copy::

    {"version": 2, "dataset": "<fingerprint>", "seed": 0, "stages": ["ShardList", ...],
     "epoch": 3, "world_size": 2, "num_workers": 3,
     "parts": [{"rank": 0, "worker": 1, "stages": {...}}, ...],
     "next": {"0": 2},          # per rank: the worker whose item the trainer gets next
     "base": null}              # the layout this epoch ran in before an elastic resume

Stage states count positions (a segment and offset, the items a shuffle returned), never
samples, so a state is a few hundred bytes per copy whatever the buffer sizes.

- **Exact**: loaded in the same layout, every copy continues from its own part.
- **Elastic**: loaded in another layout, the state must cover every copy (one rank's
  ``Loader.state_dict(all_ranks=True)``, or ``merge_states`` of every rank's). The samples
  each old copy consumed are worked out from positions (replaying shuffles on numbers);
  the rest of the epoch, in dataset order, is split over the new layout. The old layout
  is kept as ``base``, so the epoch can be resumed again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ResumeError
from .stage import State, upstream
from .world import Context, World

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .pipeline import Pipeline
    from .shards import Segment

__all__ = ["STATE_VERSION", "merge_states"]

STATE_VERSION = 2

_LAYOUT_KEYS = ("world_size", "num_workers", "parts", "base")


def new_state(
    pipeline: Pipeline,
    *,
    epoch: int,
    world_size: int,
    num_workers: int,
    parts: Iterable[tuple[int, int, State | None]],
    next_worker: dict[int, int] | None = None,
    base: State | None = None,
) -> State:
    """Build a state (see the module's docstring) from ``(rank, worker, stages)`` parts."""
    return {
        "version": STATE_VERSION,
        "dataset": pipeline.fingerprint(),
        "seed": pipeline.seed,
        "stages": _stage_names(pipeline),
        "epoch": epoch,
        "world_size": world_size,
        "num_workers": num_workers,
        "parts": [{"rank": r, "worker": w, "stages": s} for r, w, s in parts],
        "next": {str(rank): w for rank, w in (next_worker or {}).items()},
        "base": base,
    }


def _stage_names(pipeline: Pipeline) -> list[str]:
    return [type(s).__name__ for s in pipeline.stages]


def check_state(state: Any, pipeline: Pipeline) -> None:
    """Raise ResumeError unless ``state`` is a state of ``pipeline``'s kind and dataset."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        version = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise ResumeError(
            f"unknown state version {version!r} (this tarstream reads version {STATE_VERSION})"
        )
    if state["dataset"] != pipeline.fingerprint():
        raise ResumeError(
            "the state is from another dataset: its shard names and counts differ "
            f"(fingerprint {state['dataset']}, this dataset {pipeline.fingerprint()})"
        )
    if state["seed"] != pipeline.seed:
        raise ResumeError(f"the state was saved with seed {state['seed']}, not {pipeline.seed}")
    stages = _stage_names(pipeline)
    if state["stages"] != stages:
        raise ResumeError(f"the state is from a pipeline of {state['stages']}, not {stages}")


def parts_of(layout: State) -> dict[tuple[int, int], State | None]:
    return {(p["rank"], p["worker"]): p["stages"] for p in layout["parts"]}


def _complete(layout: State) -> bool:
    parts = parts_of(layout)
    return all(
        (r, w) in parts for r in range(layout["world_size"]) for w in range(layout["num_workers"])
    )


def _untouched(layout: State) -> bool:
    """True for a state at the start of an epoch: nothing delivered yet anywhere."""
    return layout["base"] is None and all(s is None for s in parts_of(layout).values())


def base_of(layout: State) -> State:
    """The layout part of a state, kept as the base of an elastic resume."""
    return {key: layout[key] for key in _LAYOUT_KEYS}


def same_layout(state: State, world: World) -> bool:
    return (state["world_size"], state["num_workers"]) == (world.world_size, world.num_workers)


def plan_resume(state: State, world: World) -> tuple[State | None, State | None]:
    """Return ``(base, stages)`` to resume ``state`` in ``world``: the layout the epoch's rest
    is computed from (None: the whole epoch) and this copy's stage state (None: start)."""
    parts = parts_of(state)
    if same_layout(state, world) and (world.rank, world.worker) in parts:
        return state["base"], parts[(world.rank, world.worker)]
    if _untouched(state):
        return None, None
    require_complete(state, world)
    return base_of(state), None


def require_complete(state: State, world: World) -> None:
    """Raise ResumeError unless ``state`` covers every copy of its layout (or none started)."""
    if not _complete(state) and not _untouched(state):
        have = sorted(parts_of(state))
        raise ResumeError(
            f"the state covers copies {have} (rank, worker) of a layout of "
            f"{state['world_size']} ranks x {state['num_workers']} workers; resuming as rank "
            f"{world.rank} of {world.world_size} with {world.num_workers} workers needs "
            "every rank's part: save Loader.state_dict(all_ranks=True), or merge the ranks' "
            "states with tarstream.merge_states"
        )


def rest_of_epoch(pipeline: Pipeline, epoch: int, base: State | None) -> tuple[Segment, ...] | None:
    """The segments of the epoch not delivered in ``base`` (None: no resume, whole epoch)."""
    if base is None:
        return None
    from .shards import ShardList

    shard_list = pipeline.stages[0]
    if not isinstance(shard_list, ShardList):
        raise ResumeError("elastic resume needs a pipeline that starts with a ShardList")
    return _segments(_rest_refs(pipeline, epoch, base), shard_list.sample_starts())


def _rest_refs(pipeline: Pipeline, epoch: int, layout: State) -> np.ndarray:
    from .shards import ReadShards

    inner = rest_of_epoch(pipeline, epoch, layout["base"])
    parts = parts_of(layout)
    rest = []
    for rank in range(layout["world_size"]):
        for worker in range(layout["num_workers"]):
            world = World(rank, layout["world_size"], worker, layout["num_workers"])
            chain = pipeline._connect(Context(pipeline.seed, epoch, world, inner))
            reader = upstream(chain, ReadShards)
            if reader is None:
                raise ResumeError("elastic resume needs a ReadShards stage in the pipeline")
            refs = reader.plan_refs()
            stages = parts.get((rank, worker))
            if stages is not None:
                refs = refs[~chain.delivered(stages)]
            rest.append(refs)
    return np.sort(np.concatenate(rest), kind="stable")


def _segments(refs: np.ndarray, first: np.ndarray) -> tuple[Segment, ...]:
    """Runs of consecutive dataset-wide sample numbers (``first``: each shard's first), as
    shard segments."""
    from .shards import Segment

    if not len(refs):
        return ()
    shard = np.searchsorted(first, refs, "right") - 1
    breaks = np.flatnonzero((np.diff(refs) != 1) | (np.diff(shard) != 0)) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(refs)]])
    return tuple(
        Segment(
            int(shard[a]), int(refs[a] - first[shard[a]]), int(refs[b - 1] - first[shard[a]]) + 1
        )
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True)
    )


def merge_states(states: Iterable[State]) -> State:
    """Combine the states each rank saved at the same step into one state of every rank.

    In DDP each rank's ``Loader.state_dict()`` covers its own workers; a state loaded
    with another world size or number of workers needs all of them. Every rank's state
    must come from the same dataset, seed, epoch and layout.

    Raises:
        ResumeError: the states do not belong together.
    """
    states = list(states)
    if not states:
        raise ResumeError("merge_states needs at least one state")
    merged = dict(states[0])
    parts = dict(parts_of(merged))
    next_worker = dict(merged["next"])
    for state in states[1:]:
        for key in ("version", "dataset", "seed", "stages", "epoch", "world_size", "num_workers"):
            if state.get(key) != merged.get(key):
                raise ResumeError(
                    f"cannot merge states with different {key}: {merged.get(key)!r} and "
                    f"{state.get(key)!r}"
                )
        if state["base"] != merged["base"]:
            raise ResumeError("cannot merge states resumed from different earlier layouts")
        for where, stages in parts_of(state).items():
            if where in parts and parts[where] != stages:
                raise ResumeError(f"two states disagree about rank {where[0]} worker {where[1]}")
            parts[where] = stages
        next_worker.update(state["next"])
    merged["parts"] = [{"rank": r, "worker": w, "stages": s} for (r, w), s in sorted(parts.items())]
    merged["next"] = next_worker
    return merged
