"""Decode: turn field bytes into values, selectively, safely, strict or lenient.

==============================  ===============================================
extension                       decoded to
==============================  ===============================================
txt, text                       str (UTF-8)
json, jsn                       the JSON value
cls, cls2, index, inx, id       int
msgpack, mpk, mp                the msgpack value
npy                             numpy array (object arrays, which need pickle, refused)
npz                             dict of numpy arrays (likewise)
pth, pt                         torch.load(weights_only=True): tensors and plain data
jpg, jpeg, png, webp, ...       an image, as ``image`` says (``tarstream.images``)
mp4, webm, mkv, mov, avi, m4v   ``Video`` (``tarstream.media``)
wav, flac, mp3, ogg, opus, ...  ``Audio``
pkl, pickle, pyd                left as bytes unless named in ``unsafe``: unpickling
                                runs code
EXT.gz                          gunzipped (at most ``max_size`` bytes), then EXT
anything else                   left as bytes
==============================  ===============================================

Which decoder a field gets, first match wins: a key of ``decoders`` equal to the field's
name (``"seg.png"``); a key that is a glob pattern matching it (``"*.png"``), in the order
given; the built-in decoder of its extension (the part after the last dot). A decoder is a
function of the bytes, or None to leave the field as bytes.
"""

from __future__ import annotations

import fnmatch
import io
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import numpy as np

from .errors import DecodeError
from .images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    Size,
    check_image_spec,
    check_size,
    image_value,
    open_image,
    pack_image,
    pixel_shape,
)
from .images import decode_image as decode_image
from .media import AUDIO_FORMATS, VIDEO_FORMATS, AudioOptions, VideoOptions
from .stage import State, Transform
from .tar import Sample

__all__ = ["IMAGE_EXTENSIONS", "PICKLE_EXTENSIONS", "Decode", "DecodeStats", "decode_image"]

Decoder = Callable[[bytes], Any]
PICKLE_EXTENSIONS = frozenset({"pkl", "pickle", "pyd"})
DEFAULT_MAX_SIZE = 1 << 30
_KEEP, _DROP, _DECODE, _IMAGE = 0, 1, 2, 3


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


_RECORDS: dict[str, Decoder] = {
    "txt": lambda b: b.decode("utf-8"),
    "text": lambda b: b.decode("utf-8"),
    "json": json.loads,
    "jsn": json.loads,
    "cls": int,
    "cls2": int,
    "index": int,
    "inx": int,
    "id": int,
    "msgpack": _msgpack,
    "mpk": _msgpack,
    "mp": _msgpack,
    "npy": _npy,
    "npz": _npz,
    "pth": _torch_weights,
    "pt": _torch_weights,
}


@dataclass
class DecodeStats:
    """What a Decode stage did in this process: samples decoded and skipped (lenient mode),
    and the skipped samples' errors by field."""

    samples: int = 0
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Decode(Transform[Sample]):
    """Decode the fields of each sample; see the module docstring for the decoders.

    Args:
        image: the image form (``tarstream.images``), default "rgb8".
        layout: "HWC" or "CHW" for numpy images.
        size: decode images to this size (an int: the shorter side; a pair: width, height),
            JPEGs at reduced scale first.
        max_pixels: refuse images larger than this (from the header, before decoding).
        video, audio: how videos and audio are decoded.
        only: decode only these fields (names or glob patterns); the others stay bytes, or
            are dropped with ``drop_others=True``.
        decoders: custom decoders by field name or glob pattern (None: leave as bytes).
        unsafe: extensions whose decoders run code, allowed here (``("pkl",)``).
        max_size: the most bytes a ``.gz`` field may expand to.
        errors: "strict" raises ``DecodeError``; "skip" drops a sample that fails and
            counts it in ``stats``, up to ``max_errors`` per epoch (then it raises).

    State: the source's; decoding keeps nothing between samples.
    """

    def __init__(
        self,
        image: str = "rgb8",
        *,
        layout: str = "HWC",
        size: Size = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        video: VideoOptions | None = None,
        audio: AudioOptions | None = None,
        only: Iterable[str] | None = None,
        drop_others: bool = False,
        decoders: Mapping[str, Decoder | None] | None = None,
        unsafe: Iterable[str] = (),
        max_size: int = DEFAULT_MAX_SIZE,
        errors: Literal["strict", "skip"] = "strict",
        max_errors: int | None = None,
    ) -> None:
        super().__init__()
        check_image_spec(image)
        check_size(size)
        if layout not in ("HWC", "CHW"):
            raise ValueError(f"layout must be 'HWC' or 'CHW', got {layout!r}")
        if errors not in ("strict", "skip"):
            raise ValueError(f"errors must be 'strict' or 'skip', got {errors!r}")
        if max_errors is not None and max_errors < 0:
            raise ValueError(f"max_errors must be >= 0, got {max_errors}")
        if max_pixels < 1 or max_size < 1:
            raise ValueError(f"max_pixels and max_size must be >= 1, got {max_pixels}, {max_size}")
        unsafe = frozenset(unsafe)
        if unsafe - PICKLE_EXTENSIONS:
            raise ValueError(
                f"unsafe takes extensions of {sorted(PICKLE_EXTENSIONS)}, got {sorted(unsafe)}"
            )
        if drop_others and only is None:
            raise ValueError("drop_others=True needs only=[fields to keep]")
        for name, decoder in (decoders or {}).items():
            if decoder is not None and not callable(decoder):
                raise TypeError(f"decoder for {name!r} must be a function or None")
        self.image, self.layout, self.size, self.max_pixels = image, layout, size, max_pixels
        self.video, self.audio = video or VideoOptions(), audio or AudioOptions()
        self.only = None if only is None else tuple(only)
        self.drop_others = drop_others
        self.decoders = dict(decoders or {})
        self.unsafe = unsafe
        self.max_size = max_size
        self.errors = errors
        self.max_errors = max_errors
        self.preserves_count = errors == "strict"
        self.stats = DecodeStats()
        self._defer = False
        self._plans: dict[str, tuple[int, Decoder | None]] = {}

    # -- choosing a decoder -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_plans"] = {}  # holds closures; rebuilt on first use
        return state

    def decoder_for(self, name: str) -> Decoder | None:
        """The decoder field ``name`` gets (None: it stays bytes); see the module docstring."""
        return self._plan(name)[1]

    def _plan(self, name: str) -> tuple[int, Decoder | None]:
        """(what to do with field ``name``: _KEEP, _DROP, _DECODE or _IMAGE (the built-in
        image decoder); its decoder), memoized."""
        plan = self._plans.get(name)
        if plan is None and name.startswith("__"):  # metadata (__key__, __url__)
            plan = self._plans[name] = (_KEEP, None)
        if plan is None:
            wanted = self.only is None or any(
                name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in self.only
            )
            decoder = self._choose(name) if wanted else None
            if not wanted:
                plan = (_DROP if self.drop_others else _KEEP, None)
            elif decoder is None:
                plan = (_KEEP, None)
            else:
                image = getattr(decoder, "__func__", None) is Decode._image
                plan = (_IMAGE if image else _DECODE, decoder)
            self._plans[name] = plan
        return plan

    def _choose(self, name: str) -> Decoder | None:
        if name in self.decoders:
            return self.decoders[name]
        for pattern, decoder in self.decoders.items():
            if fnmatch.fnmatchcase(name, pattern):
                return decoder
        if name.lower().endswith(".gz"):
            inner = self._choose(name[:-3])
            return lambda data: _gunzip(data, self.max_size, inner)
        return self._builtin(name.rsplit(".", 1)[-1].lower())

    def _builtin(self, ext: str) -> Decoder | None:
        if ext in IMAGE_EXTENSIONS:
            return self._image
        if ext in VIDEO_FORMATS:
            from .media import decode_video

            return lambda data: decode_video(data, ext, self.video)
        if ext in AUDIO_FORMATS:
            from .media import decode_audio

            return lambda data: decode_audio(data, ext, self.audio)
        if ext in PICKLE_EXTENSIONS:
            return _unpickle if ext in self.unsafe else None
        return _RECORDS.get(ext)

    def _image(self, data: bytes) -> Any:
        return decode_image(
            data, self.image, layout=self.layout, size=self.size, max_pixels=self.max_pixels
        )

    def defer_images(self) -> bool:
        """Leave built-in image decoding to the ``Batch`` this stage feeds directly (through
        to_tuple, select or rename only): images become ``PendingImage`` values, which the
        batch decodes straight into its memory, saving a copy of every image. Only for
        uint8 forms that batch in the layout they are decoded in, and strict errors (a
        failure then surfaces from the batch, with the same ``DecodeError``). Returns
        whether images are deferred."""
        mode, as_float, torch_out = check_image_spec(self.image)
        if mode is not None and not as_float and (torch_out or self.layout == "HWC"):
            self._defer = self.errors == "strict"
            self._image_mode, self._image_torch = mode, torch_out
        return self._defer

    # -- decoding ---------------------------------------------------------------------------
    def apply(self, item: Sample) -> Sample:
        out: Sample = {}
        plans = self._plans
        for name, value in item.items():
            action, decoder = plans.get(name) or self._plan(name)
            if action == _KEEP or not isinstance(value, bytes):
                out[name] = value
            elif action == _IMAGE and self._defer:
                out[name] = PendingImage(value, self, item, name)
            elif action != _DROP:
                try:
                    out[name] = decoder(value)  # type: ignore[misc]
                except Exception as e:
                    raise _decode_error(item, name, e) from e
        self.stats.samples += 1
        return out

    def reset(self, state: State | None = None) -> None:
        super().reset(state)
        self._errors_this_epoch = 0

    def next(self) -> Sample:
        source = self.require_source()
        while True:
            item = source.next()
            try:
                return self.apply(item)
            except DecodeError as e:
                if self.errors == "strict":
                    raise
                self.stats.skipped += 1
                self.stats.errors[str(e.member).rsplit(".", 1)[-1]] += 1
                self._errors_this_epoch += 1
                if self.max_errors is not None and self._errors_this_epoch > self.max_errors:
                    raise DecodeError(
                        f"more than max_errors={self.max_errors} samples failed to decode "
                        f"this epoch; the last: {e.reason}",
                        shard=e.shard,
                        member=e.member,
                    ) from e

    def get_state(self) -> State:
        return {"source": self.require_source().get_state()}

    def __repr__(self) -> str:
        return f"Decode({self.image!r}, layout={self.layout!r}, errors={self.errors!r})"


def _gunzip(data: bytes, max_size: int, inner: Decoder | None) -> Any:
    inflater = zlib.decompressobj(wbits=31)
    out = inflater.decompress(data, max_size)
    if inflater.unconsumed_tail:
        raise ValueError(f"gzip field expands to more than max_size={max_size} bytes")
    if not inflater.eof:
        raise ValueError("gzip data is truncated")
    return out if inner is None else inner(out)


def _decode_error(item: Sample, name: str, e: Exception) -> DecodeError:
    """The error for field ``name`` of ``item``, naming its shard and member."""
    reason = f"cannot decode field {name!r}: {type(e).__name__}: {e}"
    member = f"{item.get('__key__')}.{name}"
    return DecodeError(reason, shard=str(item.get("__url__", "")), member=member)


class PendingImage:
    """An image field of a ``Decode`` that defers to its ``Batch`` (``Decode.defer_images``).

    The batch opens it (``open``: the header checks and the decode), then either packs the
    pixels into its own memory (``pack``) or, for an image that does not fit there, takes
    ``value``: what ``Decode`` would have returned. Never leaves the batch.
    """

    __slots__ = ("data", "decode", "item", "name")

    def __init__(self, data: bytes, decode: Decode, item: Sample, name: str) -> None:
        # The sample and field name, for the error only: formatted if decoding fails.
        self.data, self.decode, self.item, self.name = data, decode, item, name

    def open(self) -> Any:
        """The decoded PIL image. Raises ``DecodeError`` naming the shard and member."""
        d = self.decode
        try:
            return open_image(self.data, d._image_mode, size=d.size, max_pixels=d.max_pixels)
        except Exception as e:
            raise _decode_error(self.item, self.name, e) from e

    def value(self, image: Any = None, *, pixels: bool = True) -> Any:
        """The decoded value (of ``image`` from ``open``, if given); with ``pixels=False``
        its shape and type only, the pixels unwritten."""
        image = self.open() if image is None else image
        return image_value(image, self.decode.image, self.decode.layout, pixels=pixels)

    def shape(self, image: Any) -> tuple[int, ...]:
        """The shape ``value(image)`` has, without making it."""
        if self.decode._image_torch:
            height, width, channels = pixel_shape(image)
            return (channels, height, width)
        return pixel_shape(image, channel_axis=False)

    @staticmethod
    def pack(image: Any, out: np.ndarray) -> None:
        """Write the pixels of ``image`` into ``out``: C-contiguous uint8 memory of the
        value's size, in the value's memory order (H x W x C)."""
        pack_image(image, out)
