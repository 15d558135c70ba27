"""Decoders: field bytes to values, by the field's kind (``tarstream.codecs.extensions``).

A decoder is a function of the bytes. Pickles (``pkl``, ``pickle``, ``pyd``) are decoded
only where named unsafe: unpickling runs code. ``EXT.gz`` fields are gunzipped, with a cap
on the size they expand to, before the decoder of ``EXT``.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any

import msgpack
import numpy as np

from ..errors import DecodeError
from .extensions import (
    AUDIO,
    CLASS,
    IMAGE,
    JSON,
    KINDS,
    MSGPACK,
    NPY,
    NPZ,
    PICKLE,
    TEXT,
    TORCH,
    VIDEO,
)
from .media import AudioOptions, VideoOptions

__all__ = [
    "DEFAULT_MAX_SIZE",
    "RECORD_DECODERS",
    "Decoder",
    "builtin_decoder",
    "decode_column",
    "decode_error",
    "gunzip",
]

Decoder = Callable[[bytes], Any]
#: The most bytes a ``.gz`` field may expand to by default: 256 MiB, far above a training
#: sample's field, far below what a crafted few-kilobyte field could make a worker hold.
DEFAULT_MAX_SIZE = 256 << 20


def _text(data: bytes) -> str:
    return data.decode("utf-8")


_JSON = json.JSONDecoder()
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


try:  # the ``fast`` extra: a parser several times the speed of ``json`` on small documents
    from msgspec import DecodeError as _FastError
    from msgspec.json import Decoder as _FastDecoder

    _fast_loads: Callable[[bytes], Any] | None = _FastDecoder().decode
except ImportError:  # pragma: no cover - the fast extra is in the development environment
    _fast_loads = None


def _json(data: bytes) -> Any:
    """``json.loads`` of bytes. With ``msgspec`` (the ``fast`` extra) first, which gives the
    same values (integers of any size, floats correctly rounded); what it refuses and
    ``json`` takes (NaN, 1e400, lone surrogates, a BOM, UTF-16) goes on to ``json``, so the
    values are the same either way and the errors ``json``'s."""
    if _fast_loads is not None:
        try:
            return _fast_loads(data)
        except _FastError:
            pass
    return _json_loads(data)


def decode_column(decoder: Decoder, values: list[bytes]) -> list[Any]:
    """``decoder`` of each of ``values`` (bytes), as a call of it for each would give: the
    built-in text and JSON decoders without a Python call per value (JSON: where msgspec
    takes every value; else each goes ``_json``'s way)."""
    if decoder is _text:
        return list(map(bytes.decode, values))  # UTF-8, strict
    if decoder is _json and _fast_loads is not None:
        try:
            return list(map(_fast_loads, values))
        except _FastError:
            pass
    return list(map(decoder, values))


def _json_loads(data: bytes) -> Any:
    """``json.loads`` of bytes: UTF-8 (what writers write) decoded at once; a BOM or the
    zero bytes of UTF-16 or 32 go to ``json.loads``, which detects the encoding."""
    head = data[:4]
    if b"\x00" in head or head.startswith(_BOMS):
        return json.loads(data)
    return _JSON.decode(data.decode("utf-8", "surrogatepass"))


def _npy(data: bytes) -> Any:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _npz(data: bytes) -> Any:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _torch_weights(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _unpickle(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)


def _msgpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


#: The decoders of the kinds that need no options (read-only).
RECORD_DECODERS: Mapping[str, Decoder] = MappingProxyType(
    {
        TEXT: _text,
        JSON: _json,
        CLASS: int,
        MSGPACK: _msgpack,
        NPY: _npy,
        NPZ: _npz,
        TORCH: _torch_weights,
    }
)


def builtin_decoder(
    ext: str,
    *,
    image: Decoder,
    video: VideoOptions,
    audio: AudioOptions,
    unsafe: Collection[str] = (),
) -> Decoder | None:
    """The built-in decoder of extension ``ext`` (None: the field stays bytes).

    ``image`` decodes images; ``video`` and ``audio`` say how videos and audio are decoded;
    ``unsafe`` names the pickle extensions that may be unpickled.
    """
    kind = KINDS.get(ext)
    if kind == IMAGE:
        return image
    if kind == VIDEO:
        from .media import decode_video

        return lambda data: decode_video(data, ext, video)
    if kind == AUDIO:
        from .media import decode_audio

        return lambda data: decode_audio(data, ext, audio)
    if kind == PICKLE:
        return _unpickle if ext in unsafe else None
    return RECORD_DECODERS.get(kind) if kind is not None else None


def gunzip(data: bytes, max_size: int, inner: Decoder | None) -> Any:
    """Gunzip ``data`` (at most ``max_size`` bytes out), then decode it with ``inner``."""
    inflater = zlib.decompressobj(wbits=31)
    out = inflater.decompress(data, max_size)
    if inflater.unconsumed_tail:
        raise ValueError(f"gzip field expands to more than max_size={max_size} bytes")
    if not inflater.eof:
        raise ValueError("gzip data is truncated")
    return out if inner is None else inner(out)


def decode_error(item: Mapping[str, object], name: str, e: Exception) -> DecodeError:
    """The error for field ``name`` of sample ``item``, naming its shard and member."""
    reason = f"cannot decode field {name!r}: {type(e).__name__}: {e}"
    member = f"{item.get('__key__')}.{name}"
    return DecodeError(reason, shard=str(item.get("__url__", "")), member=member)
