"""The fluent chain: one method per stage, each returning a new pipeline with it appended.

Each method takes exactly what its stage's constructor takes (the signature is the
stage's, through ``ParamSpec``), so the two ways to build a pipeline cannot drift apart:
``pipeline.decode("rgb8", max_pixels=1 << 20)`` appends ``Decode("rgb8", max_pixels=1 << 20)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..stage import Stage
from ..stages.batch import Batch, Unbatch
from ..stages.decode import Decode
from ..stages.formats import WithFormat, columns
from ..stages.shuffle import Shuffle
from ..stages.slicing import Repeat, Skip, Take
from ..stages.transform import Filter, Map, Rename, Select, ToTuple

__all__ = ["Fluent"]

P = ParamSpec("P")
F = TypeVar("F", bound="Fluent")


def _appends(stage: Callable[P, Stage[Any]], name: str) -> Callable[Concatenate[F, P], F]:
    """A method that appends ``stage(*args, **options)`` (the stage's own signature)."""

    def method(self: F, /, *args: P.args, **options: P.kwargs) -> F:
        return self.then(stage(*args, **options))

    summary = (inspect.getdoc(stage) or "").split("\n", 1)[0]
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Append ``{stage.__name__}(...)``: {summary}"
    own = inspect.signature(stage)
    method.__signature__ = own.replace(  # type: ignore[attr-defined]
        parameters=[
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
            *own.parameters.values(),
        ]
    )
    return method


class Fluent:
    """The fluent methods of ``Pipeline``; ``then`` appends stages to a copy."""

    def then(self: F, *stages: Stage[Any] | Callable[..., Any]) -> F:
        raise NotImplementedError

    shuffle = _appends(Shuffle, "shuffle")
    decode = _appends(Decode, "decode")
    with_format = _appends(WithFormat, "with_format")

    def map(
        self: F, fn: Callable[[Any], Any], *, batched: bool = False, batch_size: int = 1000
    ) -> F:
        """Append ``Map(fn)``: apply ``fn`` to each item. With ``batched=True``, ``fn`` gets
        ``batch_size`` items at a time as columns (a dict of lists for dicts, else a list;
        the last group may be smaller) and returns columns of any length, which are split
        into items again (Hugging Face's ``map(batched=True)``)."""
        if not batched:
            return self.then(Map(fn))
        return self.then(Batch(batch_size, collate=columns, tensors="numpy"), Map(fn), Unbatch())

    filter = _appends(Filter, "filter")
    select = _appends(Select, "select")
    rename = _appends(Rename, "rename")
    to_tuple = _appends(ToTuple, "to_tuple")
    batch = _appends(Batch, "batch")
    unbatch = _appends(Unbatch, "unbatch")
    take = _appends(Take, "take")
    skip = _appends(Skip, "skip")
    repeat = _appends(Repeat, "repeat")
