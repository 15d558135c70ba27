"""Interleaved order: a copy's plan read several segments at a time.

A reader that interleaves ``k`` takes its plan's segments in groups of ``k`` consecutive
ones and, within a group, draws each next sample from one of the group's segments, each
read front to back, in a seeded order: a uniform random merge (every interleaving of the
segments' samples is equally likely). Groups follow each other in plan order, so item
numbers (samples produced) and plan positions meet at every group's start; within a group
the order is a permutation that is regenerated from the group's seed alone. Finding where
item *t* is, or which plan positions the items before it took, costs one group's size,
never the epoch's.
"""

from __future__ import annotations

import numpy as np

from ..world import derive_seed
from .segments import Plan

__all__ = ["Interleaved"]

_SALT = 0x1A7E


class Interleaved:
    """The interleaved order of ``plan`` (sizes known) for ``k`` segments at a time;
    ``seed``: the copy's (derived from seed, epoch, rank and worker)."""

    def __init__(self, plan: Plan, k: int, seed: int) -> None:
        bounds = plan.bounds
        if bounds is None:
            raise ValueError("interleaved reading needs sample counts")
        self.plan, self.k, self.seed = plan, k, seed
        self.bounds = bounds
        self._cached: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))
        self._places: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    def group_of(self, segment: int) -> int:
        """The first segment of the group ``segment`` is in."""
        return segment - segment % self.k

    def group_end(self, first: int) -> int:
        """The segment after the last of the group that starts at ``first``."""
        return min(first + self.k, len(self.plan))

    def group_at(self, item: int) -> int:
        """The first segment of the group that holds item number ``item``."""
        segment = int(np.searchsorted(self.bounds, item, "right")) - 1
        return self.group_of(min(segment, len(self.plan) - 1))

    def labels(self, first: int) -> np.ndarray:
        """For each item of the group starting at segment ``first``, in order, which of
        its segments (0..k-1) it comes from."""
        if self._cached[0] != first:
            sizes = np.diff(self.bounds[first : self.group_end(first) + 1])
            labels = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
            rng = np.random.default_rng(derive_seed(self.seed, first, _SALT))
            self._cached = (first, rng.permutation(labels))
        return self._cached[1]

    def offsets(self, first: int, taken: int) -> np.ndarray:
        """Samples taken from each segment of the group at ``first`` after ``taken`` items."""
        labels = self.labels(first)
        return np.bincount(labels[:taken], minlength=self.group_end(first) - first)

    def delivered(self, first: int, taken: int) -> np.ndarray:
        """The plan positions of the items before item ``taken`` of group ``first``, as
        spans: every group before it, and each of its segments' first samples."""
        done = self.offsets(first, taken)
        starts = self.bounds[first : first + len(done)]
        rows = np.concatenate([[[0, self.bounds[first]]], np.stack([starts, starts + done], 1)])
        return rows[rows[:, 0] < rows[:, 1]]

    def positions(self, items: np.ndarray) -> np.ndarray:
        """The plan position of each item number of ``items``."""
        items = np.asarray(items, dtype=np.int64)
        out = np.empty(len(items), np.int64)
        segments = np.searchsorted(self.bounds, items, "right") - 1
        segments = np.minimum(segments, len(self.plan) - 1)
        groups = segments - segments % self.k
        for first in np.unique(groups).tolist():
            where = np.flatnonzero(groups == first)
            place = self._place(first)
            start = int(self.bounds[first])
            out[where] = start + place[items[where] - start]
        return out

    def _place(self, first: int) -> np.ndarray:
        """Each item's place in plan order within the group at ``first``: a stable sort by
        segment (items of segment 0 in order, then 1, ...) is plan order."""
        if self._places[0] != first:
            labels = self.labels(first)
            place = np.empty(len(labels), np.int64)
            place[np.argsort(labels, kind="stable")] = np.arange(len(labels))
            self._places = (first, place)
        return self._places[1]
