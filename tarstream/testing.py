"""Test helpers for users' own stages and pipelines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .run.pipeline import Pipeline

__all__ = ["assert_resumable", "comparable"]


def comparable(item: Any) -> Any:
    """Return a value that compares equal exactly when two items hold equal data."""
    if isinstance(item, dict):
        return tuple(sorted((k, comparable(v)) for k, v in item.items()))
    if isinstance(item, (list, tuple)):
        return (type(item).__name__, tuple(comparable(v) for v in item))
    if isinstance(item, np.ndarray):
        return ("ndarray", item.dtype.str, item.shape, item.tobytes())
    if type(item).__module__.startswith("torch"):
        return ("tensor", comparable(item.numpy()))
    return item


def assert_resumable(
    make: Callable[[], Pipeline], *, at: Iterable[int] | None = None, epochs: int = 1
) -> list[Any]:
    """Check that stopping after k items, saving and restoring continues exactly.

    For each k in ``at`` (default: 0, 1, the middle, the last but one and the end), a fresh
    pipeline from ``make()`` runs k items; its ``state_dict()`` goes through JSON; another
    fresh pipeline loads it and runs to the end. The k items and the rest must equal one
    uninterrupted run, and, for ``epochs`` > 1, the epochs after must equal it too.

    Returns the uninterrupted run of the first epoch.

    Raises:
        AssertionError: naming k and the first differing position.
    """

    def run_epochs(pipeline: Pipeline, first: list[Any]) -> list[list[Any]]:
        out = [first]
        for epoch in range(1, epochs):
            pipeline.set_epoch(pipeline.epoch + 1 if epoch else 0)
            out.append([comparable(x) for x in pipeline])
        return out

    reference_pipeline = make()
    full = [comparable(x) for x in reference_pipeline]
    reference = run_epochs(reference_pipeline, full)
    n = len(full)
    points = sorted(set(at if at is not None else [0, 1, n // 2, max(n - 1, 0), n]))
    for k in points:
        if not 0 <= k <= n:
            raise ValueError(f"checkpoint {k} is outside 0..{n}")
        first = make()
        iterator = iter(first)
        head = [comparable(next(iterator)) for _ in range(k)]
        state = json.loads(json.dumps(first.state_dict()))
        second = make()
        second.load_state_dict(state)
        tail = [comparable(x) for x in second]
        got = head + tail
        if got != full:
            where = next(
                (i for i, (a, b) in enumerate(zip(got, full, strict=False)) if a != b),
                min(len(got), n),
            )
            raise AssertionError(
                f"resumed at item {k}: items differ from the uninterrupted run at position "
                f"{where} ({len(got)} items vs {n})"
            )
        later = run_epochs(second, got)
        if later != reference:
            raise AssertionError(f"resumed at item {k}: the epochs after the resumed one differ")
    return full
