"""Segments: runs of samples of one shard, and how a sequence of them is split.

An epoch's plan is a list of segments; splitting it by rank and by worker, and the rest of
an epoch after an elastic resume, are arithmetic on segments, never on per-sample arrays
where it can be helped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Even", "Segment", "known_size", "segments_of", "split_segments", "take_range"]

Even = Literal["drop", "pad"] | None


@dataclass(frozen=True)
class Segment:
    """Samples ``start:stop`` of shard number ``shard`` (``stop`` None: to its end)."""

    shard: int
    start: int = 0
    stop: int | None = None

    @property
    def size(self) -> int | None:
        return None if self.stop is None else self.stop - self.start


def split_segments(
    segments: list[Segment], part: int, parts: int, even: Even = None
) -> list[Segment]:
    """Return part ``part`` of ``parts`` of the sample sequence that ``segments`` make.

    With every ``stop`` known the split is by sample: part *p* gets a contiguous share of
    ``n // parts`` or ``n // parts + 1`` samples (``even=None``), exactly ``n // parts``
    (``"drop"``: the last ``n % parts`` samples go unused), or exactly ``ceil(n / parts)``
    (``"pad"``: the sequence repeats from its start to fill the last shares). Otherwise
    whole segments are dealt round-robin, and ``even`` is an error.

    >>> split_segments([Segment(0, 0, 5), Segment(1, 0, 5)], 1, 3)
    [Segment(shard=0, start=3, stop=5), Segment(shard=1, start=0, stop=1)]
    """
    if not 0 <= part < parts:
        raise ValueError(f"part must be in 0..{parts - 1}, got {part}")
    if any(s.stop is None for s in segments):
        if even is not None:
            raise ValueError(
                f"even={even!r} needs sample counts: give a manifest, or build sidecars with "
                "`tarstream index`"
            )
        return segments[part::parts]
    total = sum(known_size(s) for s in segments)
    if total == 0:
        return []
    if even == "drop":
        share = total // parts
        first, last = part * share, (part + 1) * share
    elif even == "pad":
        share = -(-total // parts)
        first, last = part * share, (part + 1) * share
    else:
        first, last = part * total // parts, (part + 1) * total // parts
    return take_range(segments, total, first, last)


def known_size(segment: Segment) -> int:
    if segment.stop is None:
        raise ValueError(f"segment {segment} has no known size")
    return segment.stop - segment.start


def take_range(segments: list[Segment], total: int, first: int, last: int) -> list[Segment]:
    """Segments covering positions first..last of the sequence repeated end to end."""
    out: list[Segment] = []
    position = first
    while position < last:
        lap_start = position - position % total
        offset = lap_start
        for s in segments:
            size = known_size(s)
            lo, hi = max(position, offset), min(last, offset + size)
            if lo < hi:
                out.append(Segment(s.shard, s.start + lo - offset, s.start + hi - offset))
            offset += size
        position = lap_start + total
    return out


def segments_of(refs: np.ndarray, first: np.ndarray) -> tuple[Segment, ...]:
    """Runs of consecutive dataset-wide sample numbers ``refs`` as shard segments
    (``first``: the dataset-wide number of each shard's first sample).

    >>> [(s.shard, s.start, s.stop) for s in segments_of(np.array([1, 2, 3, 5]), np.array([0, 3]))]
    [(0, 1, 3), (1, 0, 1), (1, 2, 3)]
    """
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
