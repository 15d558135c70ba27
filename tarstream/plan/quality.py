"""How well an order is shuffled: figures to compare shuffles by, on sample numbers.

An order is the sequence of dataset-wide sample numbers a stream delivered (or would
deliver), with each shard's first number (``ShardList.sample_starts``). Three figures,
each beside what a uniform random permutation of the same samples gives:

- **same-shard successor rate**: the share of neighbours from the same shard (1.0 for a
  stream read shard by shard; for a uniform permutation about the sum of the shards'
  squared shares);
- **displacement**: how far each sample lands from its place in dataset order, as a
  fraction of the order's length (quantiles; for a uniform permutation the distance of two
  uniform points: median 0.29);
- **entropy** of the distances between neighbouring sample numbers, and between their
  shard numbers, in bits: MosaicML streaming's shuffle-quality measure, so figures compare
  with its simulator's (higher is better mixed; the uniform reference is a seeded
  permutation of the same samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["OrderQuality", "order_quality"]

_QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class OrderQuality:
    """Figures of one order and of a uniform permutation of the same samples."""

    samples: int
    same_shard_successor: float
    same_shard_successor_uniform: float
    displacement: dict[str, float]
    displacement_uniform: dict[str, float]
    sample_entropy: float
    sample_entropy_uniform: float
    shard_entropy: float
    shard_entropy_uniform: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def order_quality(numbers: Sequence[int] | np.ndarray, shard_starts: np.ndarray) -> OrderQuality:
    """The figures of the order ``numbers`` (dataset-wide sample numbers) over shards that
    start at ``shard_starts`` (the first number of each shard; a last total is allowed)."""
    order = np.asarray(numbers, dtype=np.int64)
    starts = np.asarray(shard_starts, dtype=np.int64)
    uniform = np.random.default_rng(0).permutation(order)
    shards, shards_uniform = (
        np.searchsorted(starts, o, side="right") - 1 for o in (order, uniform)
    )
    n = len(order)
    ranks = np.empty(n, np.int64)
    ranks[np.argsort(order, kind="stable")] = np.arange(n)
    moved = np.abs(np.arange(n) - ranks) / max(n, 1)
    return OrderQuality(
        samples=n,
        same_shard_successor=_same_successor(shards),
        same_shard_successor_uniform=_same_successor(shards_uniform),
        displacement={
            f"p{int(q * 100)}": round(float(np.quantile(moved, q)), 4) for q in _QUANTILES
        }
        if n
        else {},
        displacement_uniform={f"p{int(q * 100)}": round(1 - (1 - q) ** 0.5, 4) for q in _QUANTILES},
        sample_entropy=_entropy(order),
        sample_entropy_uniform=_entropy(uniform),
        shard_entropy=_entropy(shards),
        shard_entropy_uniform=_entropy(shards_uniform),
    )


def _same_successor(shards: np.ndarray) -> float:
    if len(shards) < 2:
        return 0.0
    return round(float(np.mean(shards[1:] == shards[:-1])), 4)


def _entropy(values: np.ndarray) -> float:
    """Entropy in bits of the distances between neighbours of ``values``."""
    if len(values) < 2:
        return 0.0
    _, counts = np.unique(np.abs(np.diff(values)), return_counts=True)
    p = counts / counts.sum()
    return round(float(-(p * np.log2(p)).sum()), 4)
