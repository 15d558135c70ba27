"""References: a reader that yields sample numbers instead of samples, reading nothing.

It follows the plan exactly as ``ReadShards`` does (the same segments, the same
interleaved order, the same positions and states), but each item is the sample's
dataset-wide number (the shards' samples end to end), so an order can be worked out,
measured and audited without opening a shard: the shuffle-quality figures, the
``tarstream plan`` simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..stage import State
from .read_shards import ReadShards
from .shard import OpenShard

__all__ = ["References"]


class References(ReadShards):
    """``ReadShards`` over numbers: needs every shard's sample count."""

    reads_samples = False  # a Decode after it never applies its decoding here

    def segment_samples(
        self, number: int, offset: int, opener: Callable[[int], OpenShard] | None = None
    ) -> Iterator[Any]:
        segment = self._plan[number]
        first = int(self.shard_list().sample_starts()[segment.shard])
        yield from range(first + segment.start + offset, first + (segment.stop or 0))

    def check_count(self, number: int, taken: int) -> None:
        pass  # numbers come from the counts themselves

    def fetch(self, state: State | None, offsets: list[int]) -> list[Any]:
        numbers: list[Any] = self.numbers(self.positions(state, offsets)).tolist()
        return numbers

    def numbers(self, positions: np.ndarray) -> np.ndarray:
        """The dataset-wide numbers of the samples at plan ``positions``."""
        self._bounds()  # says when counts are missing
        shard, sample = self.current_plan().locate(positions)
        out: np.ndarray = self.shard_list().sample_starts()[shard] + sample
        return out
