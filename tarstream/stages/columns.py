"""The columns of a batch of dicts: each key's values, in one list."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

__all__ = ["described", "dict_columns", "same_key_columns"]


def dict_columns(items: Sequence[dict[Any, Any]]) -> dict[Any, list[Any]]:
    """The columns of dicts with the same keys, else a ValueError."""
    columns = same_key_columns(items)
    if columns is None:
        _same_keys(items)  # raises, unless dict subclasses of the same keys
        columns = {key: list(map(itemgetter(key), items)) for key in items[0]}
    return columns


def same_key_columns(items: Sequence[Any]) -> dict[Any, list[Any]] | None:
    """The columns of plain dicts with the same keys (a dict as long as the first that
    holds each of the first's keys holds no other), by the first's keys in its order; else
    None. A pass in C for each key, and one for the types and the lengths."""
    if not items or set(map(type, items)) != {dict} or len(set(map(len, items))) != 1:
        return None
    try:
        return {key: list(map(itemgetter(key), items)) for key in items[0]}
    except KeyError:
        return None


def _same_keys(items: Sequence[dict[Any, Any]]) -> None:
    keys = items[0].keys()
    for item in items:
        if not isinstance(item, dict) or item.keys() != keys:
            raise ValueError(
                f"items of one batch differ: {described(items[0])} then {described(item)}"
            )


def described(value: Any) -> str:
    """An item as an error about a batch names it: a dict by its keys, else its type."""
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value, key=str)}"
    return f"a {type(value).__name__}"
