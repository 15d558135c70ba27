"""Encode field values to bytes by the field's extension (``tarstream.codecs.extensions``),
for the writer.

========================  ==========================================================
value                     bytes written
========================  ==========================================================
bytes-like                as is, whatever the extension
str                       UTF-8
bool, int, float          their decimal text (``cls`` -> ``b"7"``)
dict, list, tuple         JSON (UTF-8); msgpack for ``msgpack``/``mpk``/``mp``
numpy.ndarray             ``.npy`` (no pickle) for ``npy``; an image for image extensions
dict of arrays            ``.npz`` for ``npz``
PIL.Image.Image           the image format named by the extension (png, jpg, webp, ...)
========================  ==========================================================

Anything else raises EncodeError naming the sample, the field and the type.
"""

from __future__ import annotations

import io
import json
from typing import Any

import msgpack
import numpy as np

from ..errors import EncodeError
from .extensions import IMAGE, IMAGE_FORMATS, KINDS, MSGPACK, NPY, NPZ, extension

__all__ = ["encode_field"]


def encode_field(key: str, field: str, value: Any) -> bytes:
    """Return the bytes stored for ``value`` in member ``key.field``."""
    ext = extension(field)
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bool, int, float, np.integer, np.floating)) and not isinstance(
        value, np.ndarray
    ):
        return str(value.item() if isinstance(value, np.generic) else value).encode("ascii")
    try:
        return _encode_structured(ext, value)
    except EncodeError as e:
        raise EncodeError(f"sample {key!r}: field {field!r}: {e}") from None
    except (TypeError, ValueError, OSError) as e:
        raise EncodeError(
            f"sample {key!r}: field {field!r}: cannot encode {type(value).__name__}: {e}"
        ) from e


def _encode_structured(ext: str, value: Any) -> bytes:
    kind = KINDS.get(ext)
    if isinstance(value, np.ndarray):
        if kind == IMAGE:
            from PIL import Image

            return _encode_image(Image.fromarray(value), ext)
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
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    image_type = _pil_image_type()
    if image_type is not None and isinstance(value, image_type):
        if kind != IMAGE:
            raise EncodeError(f"a PIL image needs an image extension, not {ext!r}")
        return _encode_image(value, ext)
    raise EncodeError(f"cannot encode a value of type {type(value).__name__} as {ext!r}")


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
