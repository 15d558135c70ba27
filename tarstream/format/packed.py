"""Packed small fields (format version 2; see FORMAT.md): one member for many small values.

A tar member costs a 512-byte header and pads its data to 512 bytes, so a sample of three
10-byte fields takes 3 KiB. Packed, a sample's small fields travel as one msgpack map, in
one of two members that are plain tar members to any other tool:

- ``KEY.tarstream.mp``: the small fields of one sample whose large fields (images, audio)
  are members of their own, ``{field: value}``;
- ``KEY.tarstream-block.mp``: several whole samples, an array of maps
  ``{"__key__": key, field: value, ...}``, ``KEY`` being the first one's. Each element is
  itself a msgpack value, so a sample in a block is read (and checked) on its own: the
  sidecar records where each element starts.

A value is bytes (the field's stored bytes, as a plain member would hold them) or, for the
kinds the writer stores typed, the value itself (``tarstream.codecs.encode.packed_encoder``).
``.mp`` is the msgpack extension webdataset decodes too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from ..errors import ShardFormatError
from .keys import unsafe_key
from .scan import ReadStats

__all__ = [
    "BLOCK_FIELD",
    "FAST_BLOCK",
    "FAST_UNPACK",
    "PACKED_FIELD",
    "RESERVED_FIELDS",
    "block_data",
    "lowered",
    "merge_packed",
    "pack_fields",
    "plain_value",
    "split_block",
    "unpack_element",
    "unpack_fields",
    "unpack_samples",
    "unpacked_or_none",
]

PACKED_FIELD = "tarstream.mp"
BLOCK_FIELD = "tarstream-block.mp"
RESERVED_FIELDS = frozenset({PACKED_FIELD, BLOCK_FIELD})


def _fast_unpack(block: bool = False) -> Callable[[Any], Any] | None:
    """msgspec's decoder of a map of field names to values that are text, numbers, bools,
    nil, and arrays and maps of them with string keys (six levels deep): what msgpack
    makes of such data, in about 60% of its time. Anything else (bytes, ext types, other
    keys, deeper values) it refuses, and the reader leaves to msgpack. ``block``: of an
    array of such maps (a block's data)."""
    try:
        from msgspec.msgpack import Decoder
    except ImportError:  # pragma: no cover - depends on the environment (the fast extra)
        return None
    value: Any = plain_value()
    return Decoder(list[dict[str, value]] if block else dict[str, value]).decode


def plain_value() -> Any:
    """The type of the values ``FAST_UNPACK`` takes: text, numbers, bools, nil, and arrays
    and maps of them with string keys, six levels deep."""
    value: Any = None | bool | int | float | str
    for _ in range(6):
        value = None | bool | int | float | str | list[value] | dict[str, value]
    return value


#: ``FAST_UNPACK(data)``: the map packed in ``data`` where it holds only plain values, else
#: an exception; None without msgspec. Never gives what ``msgpack.unpackb`` would not.
FAST_UNPACK = _fast_unpack()
#: ``FAST_BLOCK(data)``: the list of such maps a block's data holds (``FAST_UNPACK`` of
#: each element at once), else an exception; None without msgspec.
FAST_BLOCK = _fast_unpack(block=True)


def pack_fields(values: dict[str, Any]) -> bytes:
    """The data of a ``tarstream.mp`` member holding ``values`` (field -> value)."""
    return bytes(msgpack.packb(values, use_bin_type=True))


def block_data(elements: list[bytes]) -> tuple[bytes, list[int]]:
    """The data of a ``tarstream-block.mp`` member of packed ``elements`` (each a sample's
    map with its ``__key__``), and where each element starts in it."""
    head = msgpack.Packer().pack_array_header(len(elements))
    starts = []
    at = len(head)
    for element in elements:
        starts.append(at)
        at += len(element)
    return head + b"".join(elements), starts


def _bad(url: str, member: str, offset: int | None, what: str) -> ShardFormatError:
    return ShardFormatError(
        f"packed member {member!r} is not valid: {what}", shard=url, member=member, offset=offset
    )


def unpack_fields(data: Any, url: str, member: str, offset: int | None) -> dict[str, Any]:
    """The fields a ``tarstream.mp`` member holds (its bytes ``data``), checked: a map of
    field names to values."""
    try:
        values = msgpack.unpackb(data, raw=False)
    except Exception as e:  # msgpack raises several unrelated types on bad input
        raise _bad(url, member, offset, f"msgpack: {e}") from None
    if type(values) is not dict or not all(_is_field(k) for k in values):
        raise _bad(url, member, offset, "not a map of field names")
    return values


def unpacked_or_none(data: Any) -> Any:
    """What msgpack unpacks from ``data``, or None (``unpack_element`` says what is wrong)."""
    try:
        return msgpack.unpackb(data, raw=False)
    except Exception:  # msgpack raises several unrelated types on bad input
        return None


def unpack_element(
    data: Any, key: str, url: str, offset: int | None, fields: frozenset[str] | None = None
) -> dict[str, Any]:
    """Sample ``key`` from its element of a block (bytes ``data``): its fields, with
    ``__key__`` first. The element must name the same key, and hold only field names
    (only ``fields`` where given: the sidecar's list)."""
    try:
        values = msgpack.unpackb(data, raw=False)
    except Exception as e:  # msgpack raises several unrelated types on bad input
        raise _bad(url, f"{key}.{BLOCK_FIELD}", offset, f"msgpack: {e}") from None
    if type(values) is not dict or values.get("__key__") != key:
        found = values.get("__key__") if type(values) is dict else type(values).__name__
        raise _bad(
            url, f"{key}.{BLOCK_FIELD}", offset, f"the sidecar's sample {key!r} holds {found!r}"
        )
    names = tuple(values)
    if names not in _CHECKED or fields is not None:
        if not all(_is_field(k) and (fields is None or k in fields) for k in names[1:]):
            raise _bad(
                url, f"{key}.{BLOCK_FIELD}", offset, f"not a map of the shard's fields: {names}"
            )
        if len(_CHECKED) > 1000:  # ever new field sets: keep a few
            _CHECKED.clear()
        _CHECKED.add(names)
    return values


def split_block(
    data: bytes, url: str, member: str, offset: int
) -> Iterator[tuple[str, int, int, dict[str, Any]]]:
    """The samples of a block member (its bytes ``data`` at ``offset`` of the shard):
    ``(key, element start, element end, its map)`` with offsets in ``data``, each key and
    field name checked."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        n = unpacker.read_array_header()
        for _ in range(n):
            start = unpacker.tell()
            values = unpacker.unpack()
            key = values.get("__key__") if type(values) is dict else None
            if type(key) is not str or unsafe_key(key) is not None:
                raise _bad(url, member, offset + start, f"element {_} has no safe __key__")
            if not all(_is_field(k) for k in list(values)[1:]):
                raise _bad(url, member, offset + start, f"element {_} is not a map of fields")
            yield key, start, unpacker.tell(), values
    except (msgpack.OutOfData, ValueError, TypeError) as e:
        raise _bad(url, member, offset, f"msgpack: {e}") from None
    if unpacker.tell() != len(data):
        raise _bad(url, member, offset, "bytes after its last element")


#: The field-name tuples of block elements already checked (``__key__`` first).
_CHECKED: set[tuple[str, ...]] = set()


def _is_field(name: object) -> bool:
    return type(name) is str and bool(name) and not name.startswith("__") and "/" not in name


def merge_packed(
    sample: dict[str, Any], url: str, lowercase: bool = False, fields: frozenset[str] | None = None
) -> None:
    """Replace the ``tarstream.mp`` member of ``sample`` by the fields it holds (only
    ``fields`` where given: the sidecar's list)."""
    key = sample["__key__"]
    member = f"{key}.{PACKED_FIELD}"
    values = unpack_fields(sample.pop(PACKED_FIELD), url, member, None)
    if fields is not None and not fields.issuperset(values):
        raise _bad(url, member, None, f"fields {sorted(values)} are not all in its sidecar")
    for name, value in values.items():
        name = name.lower() if lowercase else name
        if name in sample:
            raise ShardFormatError(
                f"field {name!r} appears twice in sample {key!r} (a member and in "
                f"{PACKED_FIELD}, or twice when lower-cased)",
                shard=url,
                member=member,
            )
        sample[name] = value


def lowered(sample: dict[str, Any], url: str) -> dict[str, Any]:
    """``sample`` (an element of a block) with its field names lower-cased."""
    names = tuple(sample)
    if names in _LOWER:
        return sample
    out = {name if name.startswith("__") else name.lower(): v for name, v in sample.items()}
    if len(out) < len(sample):
        raise ShardFormatError(
            f"fields of sample {sample['__key__']!r} differ only in case and become one "
            "field when lower-cased; read with lowercase_fields=False to keep them apart",
            shard=url,
            member=f"{sample['__key__']}.{BLOCK_FIELD}",
        )
    if tuple(out) == names:
        if len(_LOWER) > 1000:  # ever new field sets: keep a few
            _LOWER.clear()
        _LOWER.add(names)
    return out


#: Field-name tuples of samples already lower-case.
_LOWER: set[tuple[str, ...]] = set()


def unpack_samples(
    samples: Iterator[dict[str, Any]],
    url: str,
    lowercase: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[dict[str, Any]]:
    """The samples of a shard read member by member, with packed members unpacked: a
    block's samples in its place, a ``tarstream.mp`` member's fields in its sample. A key
    that comes back (in a block, or after it) is an error, as it is for members. ``stats``:
    count a block's samples (``read_samples`` counted the block as one)."""
    seen: set[str] = set()
    for sample in samples:
        key = str(sample["__key__"])
        member = f"{key}.{BLOCK_FIELD}"
        if PACKED_FIELD in sample:
            merge_packed(sample, url, lowercase)
        if BLOCK_FIELD in sample and len(sample) > 3:
            raise _bad(url, member, None, "a block shares its key with other members")
        inside = split_block(sample[BLOCK_FIELD], url, member, 0) if BLOCK_FIELD in sample else None
        for i, (inner, _, _, values) in enumerate(inside or [(key, 0, 0, sample)]):
            if inner in seen or (i == 0 and inner != key):
                raise _bad(url, member, None, f"sample {inner!r} is out of place or named twice")
            seen.add(inner)
            if inside is None:
                yield sample
                continue
            if i and stats is not None:
                stats.samples += 1
            values["__url__"] = sample["__url__"]
            yield lowered(values, url) if lowercase else values
