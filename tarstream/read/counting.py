"""Counting the samples a reader gives without a Python step per sample.

A reader's position is how many samples it gave. Counted in a Python loop, that costs a
generator resume and an attribute update per sample. Here the samples pass through C
iterators (``zip``, ``map``) beside an iterator of labels or ticks, and the count is read
off that iterator's remaining length (``operator.length_hint``) when it is asked for: by
a state, an error, the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from operator import itemgetter, length_hint
from typing import Any, TypeVar

__all__ = ["GroupEnd", "counted", "no_count", "taken_in_order"]

T = TypeVar("T")

_MANY = sys.maxsize


def no_count() -> int:
    """The count where nothing is being counted."""
    return 0


def counted(items: Iterator[T]) -> tuple[Iterator[T], Callable[[], int]]:
    """``items`` passed on in C, and a function giving how many have been passed on."""
    ticks = iter(range(_MANY))
    return map(itemgetter(0), zip(items, ticks, strict=False)), lambda: _MANY - length_hint(ticks)


class GroupEnd(Exception):
    """Raised by ``taken_in_order`` after the last label's item."""


class _End:
    def __next__(self) -> Any:
        raise GroupEnd


def taken_in_order(
    sources: list[Iterator[T]], labels: list[int]
) -> tuple[Iterator[T], Callable[[], int]]:
    """The next item of ``sources[label]`` for each of ``labels`` in turn, in C; and a
    function giving how many labels were taken, the one whose item is being made included.

    After the last label's item it raises ``GroupEnd``. A source that raises ends it with
    that error; one that ends early (``StopIteration``) ends it quietly, before
    ``GroupEnd``."""
    order = iter([*labels, len(sources)])
    n = len(labels) + 1
    lookup: list[Any] = [*sources, _End()]
    return map(next, map(lookup.__getitem__, order)), lambda: n - length_hint(order)
