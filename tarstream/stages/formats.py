"""WithFormat: batches as Python lists, numpy arrays, torch tensors or an Arrow table; and
``columns``, the collate of a batched map."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from ..errors import ArgumentError
from ..stage import Transform
from .collate import to_torch

__all__ = ["WithFormat", "columns"]

Format = Literal["python", "numpy", "torch", "arrow"]


def columns(items: Sequence[Any]) -> Any:
    """Items as columns, unconverted: dicts as a dict of lists, anything else a list (what
    a batched map's function gets, as Hugging Face's ``map(batched=True)`` does)."""
    if items and isinstance(items[0], dict):
        return {key: [item[key] for item in items] for key in items[0]}
    return list(items)


class WithFormat(Transform[Any]):
    """Convert each item (a batch, usually) to ``kind``:

    - "python": arrays and tensors become (nested) lists, numpy scalars Python numbers;
    - "numpy": tensors and lists of numbers become numpy arrays;
    - "torch": numpy arrays become tensors (sharing memory);
    - "arrow": a batch of dicts (a dict of columns) or of tuples (columns "0", "1", ...)
      becomes a ``pyarrow.Table``; an array column of several dimensions becomes a column
      of nested lists. Needs pyarrow (the ``arrow`` extra).

    Containers (dicts, tuples, lists) keep their shape except for "arrow". State: the
    source's.
    """

    def __init__(self, kind: Format) -> None:
        super().__init__()
        if kind not in ("python", "numpy", "torch", "arrow"):
            raise ArgumentError(
                f"format must be 'python', 'numpy', 'torch' or 'arrow', got {kind!r}"
            )
        if kind == "arrow":
            import pyarrow  # type: ignore[import-untyped]  # noqa: F401 - fail now, not later
        self.kind = kind

    def apply(self, item: Any) -> Any:
        if self.kind == "torch":
            return to_torch(_numpy(item))
        if self.kind == "numpy":
            return _numpy(item)
        if self.kind == "python":
            return _python(item)
        return _arrow(item)

    def __repr__(self) -> str:
        return f"WithFormat({self.kind!r})"


_WALK_ON = object()


def _walk(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``value`` with ``leaf`` applied throughout: to it first (``_WALK_ON``: not a leaf),
    then into dicts, tuples (named ones kept) and lists."""
    out = leaf(value)
    if out is not _WALK_ON:
        return out
    if isinstance(value, dict):
        return {k: _walk(v, leaf) for k, v in value.items()}
    if isinstance(value, tuple):
        items = [_walk(v, leaf) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_walk(v, leaf) for v in value]
    return value


def _numpy_leaf(value: Any) -> Any:
    """A non-empty list of numbers as an array, a torch tensor as numpy."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value)
    ):
        return np.asarray(value)
    if hasattr(value, "numpy") and hasattr(value, "device"):  # a torch tensor
        return value.detach().cpu().numpy()
    return _WALK_ON


def _python_leaf(value: Any) -> Any:
    """An array, numpy scalar or tensor as Python values."""
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "tolist"):
        return value.tolist()
    return _WALK_ON


def _numpy(value: Any) -> Any:
    return _walk(value, _numpy_leaf)


def _python(value: Any) -> Any:
    return _walk(value, _python_leaf)


def _arrow(batch: Any) -> Any:
    import pyarrow as pa

    if isinstance(batch, tuple):
        batch = {str(i): column for i, column in enumerate(batch)}
    if not isinstance(batch, dict):
        raise ArgumentError(
            f"with_format('arrow') needs batches of dicts or tuples, got {type(batch).__name__}"
        )
    data = {}
    for name, column in _numpy(batch).items():
        if isinstance(column, np.ndarray) and column.ndim > 1:
            column = column.tolist()  # rows as nested lists: a list column
        data[str(name)] = pa.array(column)
    return pa.table(data)
