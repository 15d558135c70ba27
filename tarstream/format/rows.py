"""A block's samples unpacked with their fields' kinds checked: as rows for a batch, as dicts
for a reader that decodes.

A block read whole (``tarstream.format.blocks``) is unpacked into one dict per sample whose
values msgspec takes as JSON-like values of any type; a ``Decode`` then checks each field's
values are of its kind (str for text, int for a class, a map or array for JSON), and a
``Batch`` that takes many samples a field at a time takes each field's values out of those
dicts again. ``unpacker`` makes both unnecessary: it unpacks a block into samples of the
shard's packed fields, each value checked to be of its field's kind as it is unpacked.

- As dicts (a ``TypedDict``), for a reader that applies its ``Decode``: the kinds known,
  the ``Decode`` does not look at the values again (``Block.kinds``). msgspec leaves out a
  field a ``TypedDict`` does not name, so the reader first checks that every sample's map
  has as many entries as the shard has fields (``blocks._maps_of``).
- As rows (a msgspec ``Struct``, one slot per field), where the reader is told its samples
  go to a ``Batch`` that takes them a field at a time (``ReadShards.rows``): a block in
  about 60% of a list of dicts' time, its columns taken at once (``columns``). A row stands
  for its sample only between the reader and that batch: anything else gets the sample
  (``as_sample``), with the same values.

A block neither takes (a sample without one of the fields, or with another, a value of
another kind) is left to the dicts' path, which takes it or names the culprit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple, TypedDict, Union, cast

from .packed import _is_field, plain_value
from .samples import Sample

__all__ = [
    "Row",
    "Unpacker",
    "as_sample",
    "columns",
    "plain_row",
    "sample_of",
    "samples_of",
    "unpacker",
]

try:
    from msgspec import Struct
    from msgspec.msgpack import Decoder
    from msgspec.structs import astuple
except ImportError:  # pragma: no cover - depends on the environment (the fast extra)
    Struct = object  # type: ignore[assignment,misc]
    Decoder = None  # type: ignore[assignment,misc]


class Row(Struct):
    """A sample of a block as the reader hands it to a batch (``unpacker``'s types)."""

    #: The sample's names in its dict's order (``__key__``, the fields, ``__url__``).
    names: ClassVar[tuple[str, ...]] = ()
    #: The types each name's values have (checked as they were unpacked).
    kinds: ClassVar[dict[str, frozenset[type]]] = {}


def as_sample(row: Row) -> Sample:
    """The sample ``row`` stands for: a dict of its names and values."""
    return dict(zip(row.names, astuple(row), strict=True))


def sample_of(item: Any) -> Any:
    """``item``, or the sample it stands for where it is a row."""
    return as_sample(item) if isinstance(item, Row) else item


def samples_of(items: list[Any]) -> list[Any]:
    """``items`` with each row as the sample it stands for (the list itself where there
    are no rows)."""
    if not any(issubclass(kind, Row) for kind in set(map(type, items))):
        return items
    return list(map(sample_of, items))


def columns(items: Sequence[Any]) -> dict[str, list[Any]] | None:
    """The columns of rows of one type, by their names; None where ``items`` are not that
    (rows of several field sets, dicts among them)."""
    kind = type(items[0])
    if not issubclass(kind, Row) or set(map(type, items)) != {kind}:
        return None
    return dict(zip(kind.names, map(list, zip(*map(astuple, items), strict=True)), strict=True))


class Unpacker(NamedTuple):
    """The unpacking of a shard's blocks into samples of one field set, each value of its
    field's kinds (``unpacker``): rows or dicts."""

    #: A block's data to its samples, else an exception.
    decode: Callable[[Any], list[Any]]
    #: Whether it makes rows (else dicts, as ``packed.FAST_BLOCK`` makes them).
    rows: bool
    #: The types each field's values have (``__key__``'s: str).
    kinds: dict[str, frozenset[type]]


@lru_cache(maxsize=64)
def unpacker(kinds: tuple[tuple[str, tuple[type, ...]], ...], rows: bool) -> Unpacker | None:
    """The unpacking of a block's data into samples of the fields ``kinds`` names (in
    sorted order), each value of one of the types it gives (``str``, ``int``, ``float``,
    ``bool``, ``None``, ``list`` and ``dict``: JSON's values, six levels deep, as
    ``packed.FAST_BLOCK`` takes them): a sample without one of the fields, or of a value
    of another type, is refused with an exception, and with ``rows`` one with another
    field (dicts leave another field out: their caller tests that, by the size of each
    sample's map). None without msgspec, or where a name is not a field's or a type not
    one of those."""
    fields = tuple(name for name, _ in kinds)
    if Decoder is None or not all(map(_is_field, fields)):
        return None
    from msgspec import defstruct

    value: Any = plain_value()
    plain: dict[type, Any] = {str: str, int: int, float: float, bool: bool, type(None): None}
    plain.update({list: list[value], dict: dict[str, value]})
    if not all(t in plain for _, types in kinds for t in types):
        return None
    typed = {name: Union[tuple(plain[t] for t in types)] for name, types in kinds}  # noqa: UP007
    kind_sets = {"__key__": frozenset({str}), **{n: frozenset(t) for n, t in kinds}}
    if not rows:
        sample = TypedDict("BlockSample", {"__key__": str, **typed})  # type: ignore[misc]
        return Unpacker(Decoder(list[sample]).decode, False, kind_sets)
    slots = [f"f{i}" for i in range(len(fields))]
    # The url is set by the reader; a sample that holds one is refused (typed None).
    row = defstruct(
        "BlockRow",
        [
            ("key", str),
            *((slot, typed[name]) for slot, name in zip(slots, fields, strict=True)),
            ("url", None, None),
        ],
        bases=(Row,),
        rename={"key": "__key__", "url": "__url__", **dict(zip(slots, fields, strict=True))},
        forbid_unknown_fields=True,
        gc=False,
        namespace={
            "names": ("__key__", *fields, "__url__"),
            "kinds": {**kind_sets, "__url__": frozenset({str})},
        },
    )
    return Unpacker(Decoder(list[row]).decode, True, kind_sets)  # type: ignore[valid-type]


@lru_cache(maxsize=64)
def plain_row(fields: tuple[str, ...]) -> type[Row] | None:
    """The row of a plain sample of ``fields`` (its members' names, in their order), each
    value bytes (``tarstream.format.columns``): names ``__key__``, ``__url__``, then the
    fields, as the sample's dict has them. None without msgspec."""
    if Decoder is None:
        return None
    from msgspec import defstruct

    slots = [f"f{i}" for i in range(len(fields))]
    row = defstruct(
        "PlainRow",
        [("key", str), ("url", str), *((slot, bytes) for slot in slots)],
        bases=(Row,),
        gc=False,
        namespace={
            "names": ("__key__", "__url__", *fields),
            "kinds": {"__key__": frozenset({str}), "__url__": frozenset({str})}
            | dict.fromkeys(fields, frozenset({bytes})),
        },
    )
    return cast(type[Row], row)
