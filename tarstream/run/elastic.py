"""Elastic resume: the rest of an epoch saved in one layout, to be split over another.

Each old copy's chain is connected in its own world (through a ``connect`` callable, so
this module knows pipelines only as chains of stages); its reader's plan, less the spans of
plan positions the copy delivered (``tarstream.stage.delivered``: shuffles replayed on
positions), is what it still owed: runs of samples. The union, in dataset order, becomes
the new epoch's plan. Everything is arithmetic on runs and spans, so the cost grows with
the shards and the shuffle buffers, not with the samples of the epoch.

A chain that starts with a ``Mix`` has a reader per source: the rest is computed per
source (each copy's part of the mix state holds each source's state) and is a dict of
segments by source name, which the mix hands to each source. The stages after the mix
must keep only their source's state (maps, decoding, batching), and no source may have
been started again (``stop="all"`` or ``"never"`` after a source ended): then each copy
is in its own epoch of that source, and "the rest" has no single meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ResumeError
from ..plan.mix import Mix
from ..plan.segments import Plan, concat, merge_runs
from ..read.read_shards import ReadShards
from ..stage import Stage, State, delivered, upstream
from ..world import Context, World
from .resume import parts_of

__all__ = ["Connect", "delivered_runs", "rest_of_epoch"]

#: Connects a fresh chain of a pipeline's stages in a context; returns its last stage.
Connect = Callable[[Context], Stage[Any]]
#: The rest of an epoch: a plan, or plans by source name (a mix).
Rest = Plan | dict[str, Plan]


def rest_of_epoch(connect: Connect, seed: int, epoch: int, base: State | None) -> Rest | None:
    """The plan of what the epoch has not delivered in layout ``base`` (None: no resume,
    the whole epoch).

    Raises:
        ResumeError: the pipeline has no reader with sample counts, or a stage on the way
            cannot account for what it consumed.
    """
    if base is None:
        return None
    inner = rest_of_epoch(connect, seed, epoch, base["base"])
    owed: dict[str | None, list[Plan]] = {}
    firsts: dict[str | None, np.ndarray] = {}
    parts = parts_of(base)
    for rank in range(base["world_size"]):
        for worker in range(base["num_workers"]):
            world = World(rank, base["world_size"], worker, base["num_workers"])
            chain = connect(Context(seed, epoch, world, inner))
            stages = parts.get((rank, worker))
            for name, (runs, first) in _owed(chain, stages).items():
                owed.setdefault(name, []).append(runs)
                firsts[name] = first
    if not owed:
        raise ResumeError("the saved layout has no copies")
    rest = {name: merge_runs(concat(runs), firsts[name]) for name, runs in owed.items()}
    return rest[None] if None in rest else {str(name): r for name, r in rest.items()}


def _owed(chain: Stage[Any], state: State | None) -> dict[str | None, tuple[Plan, np.ndarray]]:
    """What one old copy still owed: (runs, each shard's first sample number) by source
    name (None: the pipeline's one reader)."""
    mix = upstream(chain, Mix)
    if mix is None:
        return {None: _reader_owed(chain, state)}
    mix_state = _part_of(chain, mix, state)
    if mix_state is not None and any(mix_state[Mix.LOOPS_KEY]):
        raise ResumeError(
            "elastic resume through a mix needs every source still in its first epoch; a "
            "source was started again (stop='all' or 'never')"
        )
    parts = mix_state[Mix.SOURCES_KEY] if mix_state is not None else {}
    return {
        name: _reader_owed(source, parts.get(name) if mix_state is not None else None)
        for name, source in mix.sources.items()
    }


def _reader_owed(chain: Stage[Any], state: State | None) -> tuple[Plan, np.ndarray]:
    reader, spans = _accounted(chain, state)
    return reader.owed(spans), reader.shard_list().sample_starts()


def delivered_runs(chain: Stage[Any], state: State | None) -> Plan:
    """The runs of samples a copy (``chain``, connected in its context) delivered at
    ``state``, in plan order.

    Raises:
        ResumeError: as ``rest_of_epoch`` (no reader with counts, a stage that cannot
            account for its items, or a mix).
    """
    if upstream(chain, Mix) is not None:
        raise ResumeError("what a mix of datasets delivered is not worked out by position")
    reader, spans = _accounted(chain, state)
    return reader.current_plan().spans(spans)


def _accounted(chain: Stage[Any], state: State | None) -> tuple[ReadShards, np.ndarray]:
    """The chain's reader and the spans of its plan the chain consumed at ``state``."""
    reader = upstream(chain, ReadShards)
    if reader is None:
        raise ResumeError("elastic resume needs a ReadShards stage in the pipeline")
    reader.shard_list().sample_starts()  # first: says when counts are missing
    spans = delivered(chain, state) if state is not None else np.zeros((0, 2), np.int64)
    return reader, spans


def _part_of(chain: Stage[Any], target: Stage[Any], state: State | None) -> State | None:
    """``target``'s part of ``chain``'s state, through stages that keep only their
    source's state."""
    node = chain
    while node is not target and state is not None:
        if set(state) != {Stage.SOURCE_KEY} or node.source is None:
            raise ResumeError(
                f"{node!r} after a mix keeps a state of its own, so elastic resume through "
                "the mix is not possible"
            )
        node, state = node.source, state[Stage.SOURCE_KEY]
    return state
