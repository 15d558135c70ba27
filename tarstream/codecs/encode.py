"""Encode field values to bytes by the field's extension (``tarstream.codecs.extensions``),
for the writer.

========================  ==========================================================
value                     bytes written
========================  ==========================================================
bytes-like                as is, whatever the extension
str                       UTF-8
bool, int, float          their decimal text (``cls`` -> ``b"7"``; see below)
dict, list, tuple         JSON (UTF-8); msgpack for ``msgpack``/``mpk``/``mp``
numpy.ndarray             ``.npy`` (no pickle) for ``npy``; an image for image extensions
dict of arrays            ``.npz`` for ``npz``
PIL.Image.Image           the image format named by the extension (png, jpg, webp, ...)
========================  ==========================================================

By kind, so that ``decode()`` gives the value back: a ``cls`` field holds an integer
(``True`` is ``1``; ``3.5`` is refused); a ``json`` field holds any JSON value, numbers and
booleans included; a ``pth``/``pt`` field holds what ``torch.save`` writes (tensors, and
lists, dicts and numbers of them; bytes stay as they are); an image field takes a PIL image
or a uint8 array of H x W, H x W x 1, 3 or 4. ``EXT.gz`` is the value encoded for ``EXT``,
then gzip-compressed (bytes already in gzip format are stored as they are).

Anything else raises EncodeError naming the sample, the field and the type.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
import numpy as np

from ..errors import EncodeError
from .extensions import (
    CLASS,
    IMAGE,
    IMAGE_FORMATS,
    JSON,
    KINDS,
    MSGPACK,
    NPY,
    NPZ,
    TEXT,
    TORCH,
    extension,
)

__all__ = ["TYPED_KINDS", "encode_field", "field_encoder", "packed_encoder", "stored_bytes"]

#: The kinds whose values a packed member holds as they are (``packed_encoder``), and the
#: types it holds them as; their built-in decoders make the same values from the bytes a
#: plain member holds.
TYPED_KINDS: dict[str | None, tuple[type, ...]] = {TEXT: (str,), CLASS: (int,), JSON: (dict, list)}


#: Compact JSON; one encoder for all calls (``json.dumps`` with options makes one per call).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_field(key: str, field: str, value: Any) -> bytes:
    """Return the bytes stored for ``value`` in member ``key.field``."""
    ext = extension(field)
    try:
        if ext == "gz":
            return _gzipped(field[: -len(".gz")], value)
        return _encode(ext, value)
    except EncodeError as e:
        raise EncodeError(f"sample {key!r}: field {field!r}: {e}") from None
    except (TypeError, ValueError, OSError, RuntimeError) as e:
        message = f"sample {key!r}: field {field!r}: cannot encode {type(value).__name__}: {e}"
    raise EncodeError(message)


def field_encoder(field: str) -> Callable[[str, Any], bytes]:
    """``encode_field`` for one field, as ``encode(key, value)``: its extension is looked
    up once, and the usual values (bytes; str; an int for a class; a dict or list for
    JSON) are encoded at once, to the same bytes; anything else goes to ``encode_field``."""
    ext = extension(field)
    kind = KINDS.get(ext)
    if ext == "gz" or kind == TORCH:
        return lambda key, value: encode_field(key, field, value)

    def encode(key: str, value: Any) -> bytes:
        of = type(value)
        try:
            if of is bytes:
                return value  # type: ignore[no-any-return]
            if of is str:
                return value.encode("utf-8")  # type: ignore[no-any-return]
            if of is int and kind == CLASS:
                return b"%d" % value
            if (of is dict or of is list) and kind == JSON:
                return _JSON.encode(value).encode("utf-8")
        except (TypeError, ValueError):
            pass  # encode_field says what is wrong
        return encode_field(key, field, value)

    return encode


def packed_encoder(field: str) -> Callable[[str, Any], Any]:
    """What a packed member (``tarstream.format.packed``) holds for ``field``, as
    ``pack(key, value)``: the value itself where msgpack gives back what ``decode()`` makes
    of its bytes (a str for text, an int of 64 bits for a class, a JSON map or list of
    string keys, numbers, strings, booleans and null), else the bytes ``field_encoder``
    makes. ``stored_bytes`` turns a value held as it is back into those bytes."""
    encode = field_encoder(field)
    kind = KINDS.get(extension(field))
    if kind not in TYPED_KINDS or field.lower().endswith(".gz"):
        return encode

    def pack(key: str, value: Any) -> Any:
        of = type(value)
        if of is str and kind == TEXT:
            return value
        if of is int and kind == CLASS and _INT64[0] <= value <= _INT64[1]:
            return value
        if (of is dict or of is list) and kind == JSON and _plain_json(value, 0):
            return value
        return encode(key, value)

    return pack


#: The integers msgpack holds.
_INT64 = (-(2**63), 2**64 - 1)
_SCALARS = frozenset({str, float, bool, type(None)})


def _plain_json(value: Any, depth: int) -> bool:
    """Whether ``value`` comes back from msgpack as ``json.loads`` gives it back from its
    JSON text (string keys; no tuples of tuples needed: msgpack and JSON both give lists).
    A container's scalars are looked at in its own loop (a call only per container)."""
    of = type(value)
    if of in _SCALARS:
        return True
    if of is int:
        return bool(_INT64[0] <= value <= _INT64[1])
    if depth > 64:
        return False
    if of is dict:
        for k in value:
            if type(k) is not str:
                return False
        return _plain_values(value.values(), depth)
    if of is list or of is tuple:
        return _plain_values(value, depth)
    return False


def _plain_values(values: Iterable[Any], depth: int) -> bool:
    """``_plain_json`` of each of a container's ``values`` (the container at ``depth``)."""
    low, high = _INT64
    for v in values:
        of = type(v)
        if of in _SCALARS:
            continue
        if of is int:
            if not low <= v <= high:
                return False
        elif not _plain_json(v, depth + 1):
            return False
    return True


def stored_bytes(field: str, value: Any) -> bytes:
    """The bytes a plain member holds for ``value``, a value a packed member holds as it is
    (``packed_encoder``): the inverse that makes packed fields read as bytes where asked."""
    if type(value) is bytes:
        return value
    kind = KINDS.get(extension(field))
    if type(value) is str and kind == TEXT:
        return value.encode("utf-8", "surrogateescape")
    if type(value) is int and kind == CLASS:
        return b"%d" % value
    if (type(value) is dict or type(value) is list) and kind == JSON:
        return _JSON.encode(value).encode("utf-8", "surrogatepass")
    raise EncodeError(f"a packed {field!r} field cannot hold a {type(value).__name__}")


def _gzipped(inner: str, value: Any) -> bytes:
    """``value`` encoded for the field ``inner`` names (``json`` of ``json.gz``), then
    gzip-compressed (no time in the header: the same value gives the same bytes)."""
    if isinstance(value, (bytes, bytearray, memoryview)) and bytes(value[:2]) == b"\x1f\x8b":
        return bytes(value)  # already compressed
    return gzip.compress(_encode(extension(inner), value) if inner else bytes(value), mtime=0)


def _encode(ext: str, value: Any) -> bytes:
    kind = KINDS.get(ext)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if kind == TORCH:
        return _torch_save(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return _scalar(kind, value.item() if isinstance(value, np.generic) else value)
    return _encode_structured(ext, value)


def _scalar(kind: str | None, value: bool | int | float) -> bytes:
    if kind == JSON:
        return json.dumps(value).encode("ascii")
    if kind == CLASS:
        if isinstance(value, float) and not value.is_integer():
            raise EncodeError(f"a class field holds an integer, not {value!r}")
        return str(int(value)).encode("ascii")
    return str(value).encode("ascii")


def _torch_save(value: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


def _encode_structured(ext: str, value: Any) -> bytes:
    kind = KINDS.get(ext)
    if isinstance(value, np.ndarray):
        if kind == IMAGE:
            from PIL import Image

            return _encode_image(Image.fromarray(_image_array(value)), ext)
        if kind != NPY:
            raise EncodeError(
                f"a numpy array needs extension npy or an image extension, not {ext!r}"
            )
        if value.dtype.hasobject:
            raise EncodeError("object arrays cannot be stored without pickle")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return buf.getvalue()
    if kind == NPZ and isinstance(value, dict):
        buf = io.BytesIO()
        arrays: dict[str, Any] = {str(k): np.asarray(v) for k, v in value.items()}
        np.savez(buf, **arrays)
        return buf.getvalue()
    if isinstance(value, (dict, list, tuple)):
        if kind == MSGPACK:
            return bytes(msgpack.packb(value, use_bin_type=True))
        return _JSON.encode(value).encode("utf-8")
    image_type = _pil_image_type()
    if image_type is not None and isinstance(value, image_type):
        if kind != IMAGE:
            raise EncodeError(f"a PIL image needs an image extension, not {ext!r}")
        return _encode_image(value, ext)
    raise EncodeError(f"cannot encode a value of type {type(value).__name__} as {ext!r}")


def _image_array(value: np.ndarray) -> np.ndarray:
    """``value`` as Pillow takes it, or EncodeError saying what an image array is."""
    shape_ok = value.ndim == 2 or (value.ndim == 3 and value.shape[2] in (1, 3, 4))
    if value.dtype != np.uint8 or not shape_ok:
        raise EncodeError(
            f"an image field takes a uint8 array of H x W, or H x W x 1, 3 or 4, not "
            f"{value.dtype} {value.shape}; convert floats in 0..1 with "
            "(a * 255).round().astype(numpy.uint8)"
        )
    return value[:, :, 0] if value.ndim == 3 and value.shape[2] == 1 else value


def _encode_image(image: Any, ext: str) -> bytes:
    fmt = IMAGE_FORMATS[ext]
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _pil_image_type() -> type | None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        return None
    return Image.Image
