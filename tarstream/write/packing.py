"""How the writer packs small fields (``tarstream.format.packed``): which fields of a sample
are small, the block of small samples being filled, and the members of the rest.

``pack="small"`` puts every sample whose fields are all small into blocks of about
``BLOCK_TARGET`` bytes; a sample with a large field is written as plain members.
``pack="all"`` also puts the small fields of such a sample into one ``tarstream.mp``
member. A field is small when the value a packed member holds for it
(``tarstream.codecs.encode.packed_encoder``) is a typed value, or bytes of at most
``limit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any, Literal

from ..codecs.encode import field_encoder, packed_encoder
from ..errors import EncodeError, InvalidKeyError
from ..format.header import BLOCK, member_header
from ..format.packed import BLOCK_FIELD, PACKED_FIELD, RESERVED_FIELDS, block_data, pack_fields

__all__ = [
    "BLOCK_TARGET",
    "DEFAULT_PACK_LIMIT",
    "Block",
    "Pack",
    "PackMode",
    "member_blob",
    "member_parts",
    "pack_bytes",
]

PackMode = Literal["none", "small", "all"]
#: A block member is closed once its elements reach this many bytes.
BLOCK_TARGET = 64 << 10
#: Bytes values up to this size are small (packed); larger ones are members of their own.
DEFAULT_PACK_LIMIT = 4096
_ZEROS = bytes(BLOCK)
#: Where each member's data lies in a blob: (field, offset in the blob, size).
Members = list[tuple[str, int, int]]


def member_blob(key: str, items: list[tuple[str, bytes]]) -> tuple[bytes, Members]:
    """The members of sample ``key`` (``(field, data)`` in order) as one piece of tar, and
    where each member's data lies in it."""
    parts, _, members = member_parts(key, items)
    return b"".join(parts), members


def member_parts(key: str, items: list[tuple[str, bytes]]) -> tuple[list[bytes], int, Members]:
    """``member_blob``'s piece of tar in its parts (headers, the data uncopied, padding),
    its size, and where each member's data lies in it."""
    members: Members = []
    parts: list[bytes] = []
    offset = 0
    for field, data in items:
        header = member_header(f"{key}.{field}", len(data))
        offset += len(header)
        members.append((field, offset, len(data)))
        pad = -len(data) % BLOCK
        parts += (header, data, _ZEROS[:pad]) if pad else (header, data)
        offset += len(data) + pad
    return parts, offset, members


class Pack:
    """The packing of one field set: each field's encoder and packed encoder."""

    def __init__(self, mode: PackMode, limit: int, names: list[str]) -> None:
        for name in RESERVED_FIELDS.intersection(names):
            raise InvalidKeyError(f"field {name!r} is reserved for packed fields")
        self.mode, self.limit = mode, limit
        self.fields = [(name, field_encoder(name), packed_encoder(name)) for name in names]
        self.encoders = {name: encode for name, encode, _ in self.fields}

    def split(
        self, key: str, sample: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        """The small fields of ``sample`` (a map led by ``__key__``, as a block element
        holds them) and its large ones (encoded)."""
        small: dict[str, Any] = {"__key__": key}
        large: list[tuple[str, bytes]] = []
        limit = self.limit
        for name, _, pack in self.fields:
            value = pack(key, sample[name])
            if type(value) is bytes and len(value) > limit:
                large.append((name, value))
            else:
                small[name] = value
        return small, large

    def members(
        self, key: str, sample: Mapping[str, Any], small: dict[str, Any], large: list[Any]
    ) -> list[tuple[str, bytes]]:
        """The members of a sample with large fields, in field order: its small fields in
        one ``tarstream.mp`` member (``pack="all"``) or each a member of its own."""
        del small["__key__"]
        if not small:
            return large
        if self.mode == "all":
            return sorted([*large, (PACKED_FIELD, pack_bytes(key, small))])
        own = [  # values split() already encoded are the member's bytes
            (name, value if type(value) is bytes else self.encoders[name](key, sample[name]))
            for name, value in small.items()
        ]
        return sorted(own + large)


def pack_bytes(key: str, values: dict[str, Any]) -> bytes:
    """``values`` packed (``pack_fields``): a ``tarstream.mp`` member's data, or a block's
    element (``values`` led by ``__key__``). A value msgpack cannot hold (a str that is not
    valid Unicode) is an EncodeError naming the sample."""
    try:
        return pack_fields(values)
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"sample {key!r}: cannot pack its small fields: {e}") from None


class Block:
    """The samples of the block being filled: their keys and packed elements."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.elements: list[bytes] = []
        self.size = 0

    def __len__(self) -> int:
        return len(self.keys)

    def bound(self) -> int:
        """The most bytes the block takes once written (headers and padding included)."""
        return 3 * BLOCK + self.size + 5 + BLOCK if self.keys else 0

    def add(self, key: str, element: bytes) -> None:
        self.keys.append(key)
        self.elements.append(element)
        self.size += len(element)

    def take(
        self, start: int
    ) -> tuple[bytes, list[tuple[str, int, Members]], list[tuple[int, int]]]:
        """Empty the block into one member written at byte ``start`` of the shard: its
        bytes, where each sample lies (``ShardIndex.build``'s layout) and each sample's
        bytes in the blob (from, to: what its CRC-32 covers). A sample's bytes run from
        its element to the next one's; the first's from the block's header, the last's to
        the end of the padding."""
        data, starts = block_data(self.elements)
        blob, members = member_blob(self.keys[0], [(BLOCK_FIELD, data)])
        at = members[0][1]  # the data's offset in the blob
        spans = [0, *(at + s for s in starts[1:]), len(blob)]
        layout = [
            (key, start + spans[i], [(BLOCK_FIELD, start + at + starts[i], len(element))])
            for i, (key, element) in enumerate(zip(self.keys, self.elements, strict=True))
        ]
        self.keys, self.elements, self.size = [], [], 0
        return blob, layout, list(pairwise(spans))
