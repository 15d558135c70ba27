"""Packed fields as a reader hands them on: typed where the stage after it asks, else the
bytes a plain member holds (``tarstream.format.packed``).

A packed member holds text, class and JSON values as they are. Read without ``decode()``
a packed dataset gives the same bytes as its plain twin: those values are encoded back
(``tarstream.codecs.encode.stored_bytes``). A ``Decode`` whose built-in decoder would make
the same value from those bytes asks for it as it is (``typed``), and is spared both the
encoding and the decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..codecs.encode import TYPED_KINDS, stored_bytes
from ..codecs.extensions import kind_of
from ..errors import EncodeError, ShardFormatError
from ..format.samples import Sample

__all__ = ["TypedFields", "packed_values"]

#: Which fields are handed on typed (a predicate of the field name), or None: none.
TypedFields = Callable[[str], bool] | None


def packed_values(samples: Iterator[Sample], url: str, typed: TypedFields) -> Iterator[Sample]:
    """``samples`` of a packed shard with each value held as it is kept where ``typed``
    says (the ``Decode`` that asks checks its kind), else turned into the bytes a plain
    member holds."""
    plans: dict[tuple[str, ...], list[str]] = {}
    for sample in samples:
        names = tuple(sample)
        plan = plans.get(names)
        if plan is None:
            if len(plans) > 1000:  # samples of ever new field sets: keep a few
                plans.clear()
            plan = plans[names] = [
                name
                for name in names
                if not name.startswith("__")
                and not (typed and kind_of(name) in TYPED_KINDS and typed(name))
            ]
        for name in plan:
            value = sample[name]
            if type(value) is bytes:
                continue
            try:
                sample[name] = stored_bytes(name, value)
            except EncodeError as e:
                raise ShardFormatError(
                    f"packed field {name!r} of sample {sample['__key__']!r}: {e}",
                    shard=url,
                    member=f"{sample['__key__']}.{name}",
                ) from None
        yield sample
