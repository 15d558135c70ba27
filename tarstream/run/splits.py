"""``Pipeline.split``: n disjoint pipelines over one epoch, equal in count if asked; and
``skip_global``/``take_global``, which cut the epoch's sequence before it is split.

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
from typing import Any, TypeVar

from ..errors import ArgumentError
from ..plan.segments import Even
from ..plan.split import SliceEpoch, SplitByRank
from ..stage import Stage
from ..stages.slicing import Equalize
from ..world import Context, World

_S = TypeVar("_S", bound="Splitting")


class Splitting:
    """The methods of ``Pipeline`` that cut each epoch: ``split``, ``skip_global`` and
    ``take_global``."""

    _stages: tuple[Stage[Any], ...]
    _split: tuple[int, int] | None

    def then(self: _S, *stages: Any) -> _S:
        raise NotImplementedError

    def split(self: _S, n: int, *, equal: bool | Even = False) -> list[_S]:
        """``n`` pipelines over disjoint parts of each epoch (see the module docstring).

        Each is picklable, iterated and resumed on its own (``state_dict``), anywhere: in
        another process, in a DataLoader with workers; ``set_epoch`` re-plans it. With
        ``equal`` (True or "drop"; "pad") every split delivers the same count, also after
        filters and lenient skips (made up by repeating items, counted in stats).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        even: Even = "drop" if equal is True else (equal or None)
        if even not in (None, "drop", "pad"):
            raise ValueError(f"equal must be True, False, 'drop' or 'pad', got {equal!r}")
        stages = with_even(self._stages, even)
        j, m = self._split or (0, 1)  # a split of a split: part i of part j
        out = []
        for i in range(n):
            clone = self.then()
            clone._stages, clone._split = stages, (j * n + i, m * n)
            if even:
                clone = clone.then(Equalize(NominalLength(clone)))
            out.append(clone)
        return out

    def skip_global(self: _S, n: int) -> _S:
        """Skip the first ``n`` samples of each epoch's sequence, over all ranks and workers
        together (``skip`` counts per pipeline copy); by sidecar offsets, nothing read."""
        return self._sliced(SliceEpoch(skip=n))

    def take_global(self: _S, n: int) -> _S:
        """Keep the first ``n`` samples of each epoch's sequence, over all ranks and workers
        together (``take`` counts per pipeline copy), split among them as the epoch is."""
        return self._sliced(SliceEpoch(take=n))

    def _sliced(self: _S, stage: SliceEpoch) -> _S:
        clone = self.then()
        clone._stages = before_rank_split(self._stages, stage)
        return clone


__all__ = ["Splitting", "split_world"]


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


def before_rank_split(stages: Sequence[Stage[Any]], stage: Stage[Any]) -> tuple[Stage[Any], ...]:
    """``stages`` with ``stage`` inserted before the rank split (a global plan stage)."""
    for i, existing in enumerate(stages):
        if isinstance(existing, SplitByRank):
            return (*stages[:i], stage, *stages[i:])
    raise ArgumentError("a global skip or take needs a pipeline that splits by rank (a TarStream)")


class NominalLength:
    """The count a copy of ``pipeline`` delivers in a context if nothing is dropped (what
    ``Equalize`` makes up to); picklable with the pipeline."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def __call__(self, context: Context) -> int:
        return int(self.pipeline.count_items(context, nominal=True))
