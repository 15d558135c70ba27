"""``simulate``: what an epoch of a pipeline does in a world, worked out without data.

From the plan alone (a manifest's counts and sizes; no shard or sidecar is opened): per
rank, the samples and batches it delivers, the shards it opens and the bytes it reads; the
hit rate of a per-rank cache of whole shards over the epochs simulated; the memory its
shuffle buffers and open shards hold; and the shuffle-quality figures of rank 0's order
as its loader delivers it (``tarstream.run.order``). ``tarstream plan`` prints it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..plan.quality import order_quality
from ..read.read_shards import DEFAULT_INTERLEAVE, ReadShards
from ..stage import connect_chain, upstream
from ..stages.shuffle import Shuffle
from ..world import Context, World
from .order import rank_order, reference_stages
from .stream import TarStream

__all__ = ["Layout", "simulate"]


@dataclass(frozen=True)
class Layout:
    """A training world: ranks, DataLoader workers per rank, batch size, and a cache of
    ``cache_shards`` whole shards per rank (0: none)."""

    ranks: int = 1
    workers: int = 1
    batch: int = 1
    cache_shards: int = 0


def simulate(
    stream: TarStream, layout: Layout, *, epochs: int = 1, quality_samples: int = 200_000
) -> dict[str, Any]:
    """The figures of ``epochs`` epochs of ``stream`` (and the stages chained on it, up to
    its last order-defining one) in ``layout``; quality over rank 0's first epoch, cut at
    ``quality_samples`` samples."""
    sizes = _bytes_per_sample(stream)
    stages = reference_stages(stream)
    caches: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(layout.ranks)]
    per_epoch = []
    for epoch in range(epochs):
        per_rank = []
        for rank in range(layout.ranks):
            per_rank.append(_rank(stages, stream.seed, epoch, rank, layout, sizes, caches[rank]))
        per_epoch.append(per_rank)
    first = per_epoch[0]
    order = rank_order(stream, 0, layout.ranks, layout.workers, batch=layout.batch, epoch=0)
    starts = stream.shard_list.sample_starts()
    return {
        "shards": len(stream.shard_list.specs),
        "samples": int(starts[-1]),
        "layout": vars(layout),
        "per_rank": {
            "samples": _spread([r["samples"] for r in first]),
            "batches": _spread([r["samples"] // layout.batch for r in first]),
            "shards_opened": _spread([r["opened"] for r in first]),
            "bytes_read": _spread([r["bytes"] for r in first]),
        },
        "per_epoch": {
            "shards_opened": sum(r["opened"] for r in first),
            "bytes_read": sum(r["bytes"] for r in first),
        },
        "cache_hit_rate": _hit_rate(per_epoch) if layout.cache_shards else None,
        "peak_memory_per_rank": _memory(stream, layout, sizes),
        "quality_rank0": order_quality(order[:quality_samples], starts[:-1]).to_dict(),
    }


def _rank(
    stages: list[Any],
    seed: int,
    epoch: int,
    rank: int,
    layout: Layout,
    sizes: np.ndarray,
    cache: OrderedDict[int, None],
) -> dict[str, Any]:
    samples = opened = hits = 0
    read = 0.0
    for worker in range(layout.workers):
        world = World(rank, layout.ranks, worker, layout.workers)
        reader = upstream(connect_chain(stages, Context(seed, epoch, world)), ReadShards)
        assert reader is not None  # reference_stages has one
        plan = reader.current_plan()
        counts = plan.stop - plan.start
        samples += int(counts.sum())
        opened += len(plan)
        read += float((counts * sizes[plan.shard]).sum())
        for shard in plan.shard.tolist():
            if layout.cache_shards:
                hits += _touch(cache, shard, layout.cache_shards)
    return {"samples": samples, "opened": opened, "bytes": int(read), "hits": hits}


def _touch(cache: OrderedDict[int, None], shard: int, size: int) -> int:
    """Open ``shard`` through an LRU cache of ``size`` shards: 1 for a hit."""
    if shard in cache:
        cache.move_to_end(shard)
        return 1
    cache[shard] = None
    if len(cache) > size:
        cache.popitem(last=False)
    return 0


def _hit_rate(per_epoch: list[list[dict[str, Any]]]) -> list[float]:
    return [
        round(sum(r["hits"] for r in ranks) / max(1, sum(r["opened"] for r in ranks)), 4)
        for ranks in per_epoch
    ]


def _bytes_per_sample(stream: TarStream) -> np.ndarray:
    """Each shard's mean bytes per sample (its size over its count; 0 where unknown)."""
    counts = np.asarray([c or 0 for c in stream.shard_list.counts()], dtype=np.float64)
    sizes = np.asarray([s or 0 for s in stream.shard_list.specs.sizes()], dtype=np.float64)
    return np.divide(sizes, counts, out=np.zeros_like(sizes), where=counts > 0)


def _memory(stream: TarStream, layout: Layout, sizes: np.ndarray) -> dict[str, int]:
    """What a rank's workers hold at most: shuffle buffers (items of the largest mean
    sample size) and each reader's open shards' read buffers."""
    buffered = sum(s.buffer_size for s in stream.stages if isinstance(s, Shuffle))
    reader = stream.reader
    k = reader.interleave or DEFAULT_INTERLEAVE
    largest = float(sizes.max()) if len(sizes) else 0.0
    return {
        "shuffle_buffer_samples": buffered * layout.workers,
        "shuffle_buffer_bytes": int(buffered * largest) * layout.workers,
        "open_shards": k * layout.workers,
        "read_buffer_bytes": k * reader.read_size * layout.workers,
    }


def _spread(values: list[int]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"min": float(array.min()), "max": float(array.max()), "mean": float(array.mean())}
