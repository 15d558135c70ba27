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
  the rest of the epoch, in dataset order, is split over the new layout
  (``tarstream.run.elastic``). The old layout is kept as ``base``, so the epoch can be
  resumed again.

A state belongs to one pipeline: its ``Identity`` (dataset fingerprint, seed, stage names).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ResumeError
from ..stage import State
from ..world import World

__all__ = [
    "STATE_VERSION",
    "Identity",
    "base_of",
    "check_state",
    "merge_states",
    "new_state",
    "parts_of",
    "plan_resume",
    "require_complete",
    "same_layout",
]

STATE_VERSION = 2

_LAYOUT_KEYS = ("world_size", "num_workers", "parts", "base")


@dataclass(frozen=True)
class Identity:
    """What a state must match to be loaded: the dataset's fingerprint (its shard names and
    counts), the seed and the pipeline's stage names."""

    dataset: str
    seed: int
    stages: tuple[str, ...]


def new_state(
    identity: Identity,
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
        "dataset": identity.dataset,
        "seed": identity.seed,
        "stages": list(identity.stages),
        "epoch": epoch,
        "world_size": world_size,
        "num_workers": num_workers,
        "parts": [{"rank": r, "worker": w, "stages": s} for r, w, s in parts],
        "next": {str(rank): w for rank, w in (next_worker or {}).items()},
        "base": base,
    }


def check_state(state: Any, identity: Identity) -> None:
    """Raise ResumeError unless ``state`` is a state of the pipeline ``identity`` names."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        version = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise ResumeError(
            f"unknown state version {version!r} (this tarstream reads version {STATE_VERSION})"
        )
    if state["dataset"] != identity.dataset:
        raise ResumeError(
            "the state is from another dataset: its shard names and counts differ "
            f"(fingerprint {state['dataset']}, this dataset {identity.dataset})"
        )
    if state["seed"] != identity.seed:
        raise ResumeError(f"the state was saved with seed {state['seed']}, not {identity.seed}")
    stages = list(identity.stages)
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
