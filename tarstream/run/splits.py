"""``Pipeline.split``: n disjoint pipelines over one epoch, equal in count if asked.

Split *i* of *n* iterates as rank ``rank * n + i`` of ``world_size * n``: the pipeline's
own rank and worker splits give it a disjoint share of every epoch, in any process it is
sent to. With ``equal``, the rank split makes the shares equal ("drop" the last
``N % n`` samples of the epoch, or "pad" by repeating some), and an ``Equalize`` stage at
the end keeps each copy's count equal to what it would be without drops: a filter or a
lenient reader's skips are made up by repeating items from the start of the copy's epoch,
counted in ``stats["equalize"].padded``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import ArgumentError
from ..plan.segments import Even
from ..plan.split import SplitByRank
from ..stage import Stage
from ..world import Context, World

__all__ = ["split_world", "with_even"]


def split_world(world: World, part: tuple[int, int] | None) -> World:
    """``world`` as split ``part`` = (i, n) sees it."""
    if part is None:
        return world
    i, n = part
    return dataclasses.replace(world, rank=world.rank * n + i, world_size=world.world_size * n)


def with_even(stages: Sequence[Stage[Any]], even: Even) -> tuple[Stage[Any], ...]:
    """``stages`` with the rank split's ``even`` policy set where it has none (None:
    unchanged); a pipeline without a rank split cannot be split."""
    out: list[Stage[Any]] = []
    found = False
    for stage in stages:
        if isinstance(stage, SplitByRank):
            found = True
            if stage.even is None and even is not None:
                evened = copy.copy(stage)
                evened.even = even
                stage = evened
        out.append(stage)
    if not found:
        raise ArgumentError("split needs a pipeline that splits by rank (a TarStream)")
    return tuple(out)


class NominalLength:
    """The count a copy of ``pipeline`` delivers in a context if nothing is dropped (what
    ``Equalize`` makes up to); picklable with the pipeline."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def __call__(self, context: Context) -> int:
        return int(self.pipeline.count_items(context, nominal=True))
