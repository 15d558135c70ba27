"""Segments and plans: runs of samples of one shard, and sequences of them as arrays.

An epoch's plan is a ``Plan``: three integer arrays (shard, first sample, end) of runs, one
per segment. Splitting it by rank and by worker, a global skip or take, and the rest of an
epoch after an elastic resume are arithmetic on those arrays, in time and memory that grow
with the number of runs, never with the number of samples. Positions in a plan (the
samples of its runs end to end) are handled as *spans*: an ``(n, 2)`` array of sorted,
disjoint ``[first, end)`` ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

__all__ = [
    "Even",
    "Plan",
    "Segment",
    "complement_spans",
    "concat",
    "known_size",
    "merge_runs",
    "spans_of_positions",
    "split_segments",
    "subtract_spans",
    "union_spans",
]

Even = Literal["drop", "pad"] | None

_UNKNOWN = -1  # the end of a run whose shard's sample count is not known


@dataclass(frozen=True)
class Segment:
    """Samples ``start:stop`` of shard number ``shard`` (``stop`` None: to its end)."""

    shard: int
    start: int = 0
    stop: int | None = None

    @property
    def size(self) -> int | None:
        return None if self.stop is None else self.stop - self.start


def known_size(segment: Segment) -> int:
    if segment.stop is None:
        raise ValueError(f"segment {segment} has no known size")
    return segment.stop - segment.start


def _array(values: Iterable[int] | np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=np.int64)
    array.flags.writeable = False
    return array


class Plan(Sequence[Segment]):
    """A sequence of segments held as arrays ``shard``, ``start`` and ``stop`` (-1 where the
    shard's count is unknown). Immutable; indexing gives a ``Segment`` (a slice: a Plan)."""

    __slots__ = ("_bounds", "shard", "start", "stop")

    def __init__(self, shard: Iterable[int], start: Iterable[int], stop: Iterable[int]) -> None:
        self.shard, self.start, self.stop = _array(shard), _array(start), _array(stop)
        self._bounds: np.ndarray | None = None

    @classmethod
    def of(cls, segments: Iterable[Segment]) -> Plan:
        """The plan of ``segments`` (a Plan is returned as it is)."""
        if isinstance(segments, Plan):
            return segments
        rows = [(s.shard, s.start, _UNKNOWN if s.stop is None else s.stop) for s in segments]
        if not rows:
            return cls.empty()
        shard, start, stop = zip(*rows, strict=True)
        return cls(shard, start, stop)

    @classmethod
    def empty(cls) -> Plan:
        return cls([], [], [])

    @classmethod
    def of_counts(cls, counts: Sequence[int | None] | np.ndarray) -> Plan:
        """Every sample of every shard, in shard order (None or -1: count unknown)."""
        stop = np.asarray(
            [_UNKNOWN if c is None else c for c in counts]
            if not isinstance(counts, np.ndarray)
            else counts,
            dtype=np.int64,
        )
        return cls(np.arange(len(stop)), np.zeros(len(stop), np.int64), stop)

    def __len__(self) -> int:
        return len(self.shard)

    @overload
    def __getitem__(self, index: int) -> Segment: ...
    @overload
    def __getitem__(self, index: slice) -> Plan: ...
    def __getitem__(self, index: int | slice) -> Segment | Plan:
        if isinstance(index, slice):
            return Plan(self.shard[index], self.start[index], self.stop[index])
        stop = int(self.stop[index])
        return Segment(int(self.shard[index]), int(self.start[index]), None if stop < 0 else stop)

    def __iter__(self) -> Iterator[Segment]:
        for shard, start, stop in zip(
            self.shard.tolist(), self.start.tolist(), self.stop.tolist(), strict=True
        ):
            yield Segment(shard, start, None if stop < 0 else stop)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return all(
            np.array_equal(a, b)
            for a, b in zip(
                (self.shard, self.start, self.stop),
                (other.shard, other.start, other.stop),
                strict=True,
            )
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Plan({len(self)} segments, {self.total} samples)"

    @property
    def known(self) -> bool:
        """Whether every segment's size is known."""
        return not bool((self.stop < 0).any())

    @property
    def bounds(self) -> np.ndarray | None:
        """The plan position where each segment starts, and the plan's size at the end
        (None when a size is unknown). Computed once."""
        if self._bounds is None and self.known:
            bounds = np.zeros(len(self) + 1, np.int64)
            np.cumsum(self.stop - self.start, out=bounds[1:])
            bounds.flags.writeable = False
            self._bounds = bounds
        return self._bounds

    @property
    def total(self) -> int | None:
        """Samples in the plan (None when a size is unknown)."""
        bounds = self.bounds
        return None if bounds is None else int(bounds[-1])

    def permuted(self, order: np.ndarray) -> Plan:
        """The segments in the order ``order`` (indices)."""
        return Plan(self.shard[order], self.start[order], self.stop[order])

    def take(self, first: int, last: int) -> Plan:
        """The runs at positions ``first..last`` of the plan repeated end to end."""
        total = self._require_total()
        if first >= last or total == 0:
            return Plan.empty()
        laps = []
        position = first
        while position < last:
            lap = position - position % total
            laps.append(self.spans(np.array([[position - lap, min(last - lap, total)]])))
            position = lap + total
        return laps[0] if len(laps) == 1 else concat(laps)

    def split(self, part: int, parts: int, even: Even = None) -> Plan:
        """Part ``part`` of ``parts`` of the sample sequence (see ``split_segments``)."""
        if not 0 <= part < parts:
            raise ValueError(f"part must be in 0..{parts - 1}, got {part}")
        total = self.total
        if total is None:
            if even is not None:
                raise ValueError(
                    f"even={even!r} needs sample counts: give a manifest, or build sidecars "
                    "with `tarstream index`"
                )
            return self[part::parts]
        if total == 0:
            return Plan.empty()
        if even == "drop":
            share = total // parts
            first, last = part * share, (part + 1) * share
        elif even == "pad":
            share = -(-total // parts)
            first, last = part * share, (part + 1) * share
        else:
            first, last = part * total // parts, (part + 1) * total // parts
        return self.take(first, last)

    def spans(self, spans: np.ndarray) -> Plan:
        """The runs at plan positions ``spans`` (sorted, disjoint ``[first, end)`` rows within
        the plan), in plan order; vectorized over spans and segments."""
        bounds = self._require_bounds()
        spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        spans = spans[spans[:, 0] < spans[:, 1]]
        lo, hi = spans[:, 0], spans[:, 1]
        first = np.searchsorted(bounds, lo, "right") - 1
        count = np.searchsorted(bounds, hi, "left") - first
        span = np.repeat(np.arange(len(spans)), count)
        segment = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        segment += first[span]
        piece_lo = np.maximum(bounds[segment], lo[span])
        piece_hi = np.minimum(bounds[segment + 1], hi[span])
        start = self.start[segment] + piece_lo - bounds[segment]
        return Plan(self.shard[segment], start, start + piece_hi - piece_lo)

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shard of each plan position, and the sample's number within that shard."""
        bounds = self._require_bounds()
        segment = np.searchsorted(bounds, positions, "right") - 1
        return self.shard[segment], self.start[segment] + positions - bounds[segment]

    def _require_bounds(self) -> np.ndarray:
        bounds = self.bounds
        if bounds is None:
            raise ValueError(
                "this needs sample counts: give a manifest, or build sidecars with "
                "`tarstream index`"
            )
        return bounds

    def _require_total(self) -> int:
        return int(self._require_bounds()[-1])


def concat(plans: Sequence[Plan]) -> Plan:
    """The plans end to end."""
    if not plans:
        return Plan.empty()
    return Plan(*(np.concatenate([getattr(p, k) for p in plans]) for k in Plan.__slots__[1:]))


def split_segments(segments: Iterable[Segment], part: int, parts: int, even: Even = None) -> Plan:
    """Return part ``part`` of ``parts`` of the sample sequence that ``segments`` make.

    With every ``stop`` known the split is by sample: part *p* gets a contiguous share of
    ``n // parts`` or ``n // parts + 1`` samples (``even=None``), exactly ``n // parts``
    (``"drop"``: the last ``n % parts`` samples go unused), or exactly ``ceil(n / parts)``
    (``"pad"``: the sequence repeats from its start to fill the last shares). Otherwise
    whole segments are dealt round-robin, and ``even`` is an error.

    >>> list(split_segments([Segment(0, 0, 5), Segment(1, 0, 5)], 1, 3))
    [Segment(shard=0, start=3, stop=5), Segment(shard=1, start=0, stop=1)]
    """
    return Plan.of(segments).split(part, parts, even)


def spans_of_positions(positions: np.ndarray) -> np.ndarray:
    """Sorted, distinct positions as spans of consecutive ones.

    >>> spans_of_positions(np.array([1, 2, 3, 7])).tolist()
    [[1, 4], [7, 8]]
    """
    positions = np.asarray(positions, dtype=np.int64)
    if not len(positions):
        return np.zeros((0, 2), np.int64)
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = positions[np.concatenate([[0], breaks])]
    ends = positions[np.concatenate([breaks - 1, [len(positions) - 1]])] + 1
    return np.stack([starts, ends], axis=1)


def union_spans(*spans: np.ndarray) -> np.ndarray:
    """The positions in any of ``spans``, as sorted, disjoint spans (touching ones joined).

    >>> union_spans(np.array([[0, 2]]), np.array([[2, 3], [5, 6]])).tolist()
    [[0, 3], [5, 6]]
    """
    rows = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1, 2) for s in spans])
    rows = rows[rows[:, 0] < rows[:, 1]]
    if not len(rows):
        return rows
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    reach = np.maximum.accumulate(rows[:, 1])
    new = np.concatenate([[True], rows[1:, 0] > reach[:-1]])
    starts = rows[new, 0]
    ends = reach[np.concatenate([np.flatnonzero(new)[1:] - 1, [len(rows) - 1]])]
    return np.stack([starts, ends], axis=1)


def subtract_spans(spans: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """The positions in ``spans`` and not in ``holes`` (both sorted and disjoint), as spans.

    >>> subtract_spans(np.array([[0, 10]]), np.array([[2, 3], [5, 7]])).tolist()
    [[0, 2], [3, 5], [7, 10]]
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    holes = np.asarray(holes, dtype=np.int64).reshape(-1, 2)
    points = np.unique(np.concatenate([spans.ravel(), holes.ravel()]))
    if len(points) < 2:
        return np.zeros((0, 2), np.int64)
    lo = points[:-1]

    def inside(rows: np.ndarray) -> np.ndarray:
        opened = np.searchsorted(rows[:, 0], lo, "right")
        closed = np.searchsorted(rows[:, 1], lo, "right")
        return opened > closed

    keep = inside(spans) & ~inside(holes)
    return union_spans(np.stack([lo[keep], points[1:][keep]], axis=1))


def complement_spans(spans: np.ndarray, total: int) -> np.ndarray:
    """The positions of ``0..total`` not in ``spans`` (sorted and disjoint), as spans.

    >>> complement_spans(np.array([[0, 2], [5, 6]]), 8).tolist()
    [[2, 5], [6, 8]]
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    edges = np.concatenate([[0], spans.ravel(), [total]]).reshape(-1, 2)
    return edges[edges[:, 0] < edges[:, 1]]


def merge_runs(plan: Plan, shard_starts: np.ndarray) -> Plan:
    """``plan``'s samples in dataset order (shard by shard), neighbouring runs joined: the
    plans of several copies, concatenated, become one plan of what they hold together."""
    plan = plan.permuted(np.flatnonzero(plan.stop > plan.start))  # no empty runs
    if not len(plan):
        return plan
    lo = shard_starts[plan.shard] + plan.start
    hi = shard_starts[plan.shard] + plan.stop
    order = np.lexsort((hi, lo))
    lo, hi, shard = lo[order], hi[order], plan.shard[order]
    joined = np.concatenate([[False], (lo[1:] == hi[:-1]) & (shard[1:] == shard[:-1])])
    keep = np.flatnonzero(~joined)
    ends = np.concatenate([keep[1:] - 1, [len(lo) - 1]])
    shard = shard[keep]
    first = lo[keep] - shard_starts[shard]
    return Plan(shard, first, first + hi[ends] - lo[keep])
