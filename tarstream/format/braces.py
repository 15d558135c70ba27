"""Brace patterns (``train-{000000..000127}.tar``), counted before they are expanded.

``braceexpand`` builds every name of a range in memory: a pattern of a billion names, from a
user or from a manifest read off the network, would take all of it. ``count_names`` works
the number out from the pattern's text (an upper bound where the syntax is unusual) and
``expand`` refuses a pattern above its limit before expanding anything.
"""

from __future__ import annotations

import re

from braceexpand import braceexpand

__all__ = ["MAX_NAMES", "count_names", "expand"]

#: The most names one pattern may expand to by default.
MAX_NAMES = 10_000_000
_NUMERIC = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")
_ALPHA = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?$")
#: One ascending range of equal-width numbers and nothing else to expand: the pattern a
#: writer makes, expanded without braceexpand (the same names, without its per-name cost).
_ONE_RANGE = re.compile(r"^([^{}\\,]*)\{(\d+)\.\.(\d+)\}([^{}\\,]*)$")


def count_names(pattern: str) -> int:
    """How many names ``pattern`` expands to (never fewer than ``braceexpand`` gives).

    >>> count_names("t-{000000..000127}.tar"), count_names("{a,b{1..3}}-{x,y}"), count_names("x")
    (128, 8, 1)
    """
    return _sequence(pattern, 0, top=True)[0]


def _sequence(text: str, pos: int, *, top: bool) -> tuple[int, int]:
    """The count of the alternatives from ``pos`` to the closing brace (or the end at the
    top), and the position after it."""
    alternatives, product = 0, 1
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
        elif char == "{":
            count, pos = _group(text, pos)
            product *= count
        elif char == "," and not top:
            alternatives += product
            product, pos = 1, pos + 1
        elif char == "}" and not top:
            return alternatives + product, pos + 1
        else:
            pos += 1
    return alternatives + product, pos


def _group(text: str, start: int) -> tuple[int, int]:
    """The count of the group opening at ``start``, and the position after it."""
    depth, pos = 0, start
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            break
        pos += 1
    if pos >= len(text):  # unbalanced: taken literally
        return 1, start + 1
    inner = text[start + 1 : pos]
    found = _NUMERIC.match(inner) or _ALPHA.match(inner)
    if found:
        first, last, step = found.groups()
        if first.isdigit() or first.lstrip("-").isdigit():
            span = abs(int(last) - int(first))
        else:
            span = abs(ord(last) - ord(first))
        return span // max(abs(int(step or 1)), 1) + 1, pos + 1
    count, _ = _sequence(text, start + 1, top=False)
    return max(count, 1), pos + 1


def expand(pattern: str, *, limit: int = MAX_NAMES, what: str = "pattern") -> list[str]:
    """The names of ``pattern``, refused before expanding when there would be more than
    ``limit``.

    Raises:
        ValueError: ``pattern`` names more than ``limit`` names.
    """
    count = count_names(pattern)
    if count > limit:
        raise ValueError(
            f"{what} {pattern[:200]!r} names {count:,} shards, more than the limit {limit:,}"
        )
    simple = _ONE_RANGE.match(pattern)
    if simple:
        head, first, last, tail = simple.groups()
        if len(first) == len(last) and int(first) <= int(last):
            width = len(first)
            return [f"{head}{n:0{width}d}{tail}" for n in range(int(first), int(last) + 1)]
    return list(braceexpand(pattern))
