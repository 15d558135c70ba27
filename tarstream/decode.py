"""Decode: turn field bytes into values by the field's extension.

==========================  ===================================================
extension                   decoded to
==========================  ===================================================
txt, text                   str (UTF-8)
json, jsn                   the JSON value
cls, cls2, index, inx, id   int
msgpack, mpk, mp            the msgpack value
npy                         numpy array (pickled arrays refused)
npz                         dict of numpy arrays (pickled arrays refused)
jpg, jpeg, png, webp, ...   an image, as ``image`` says (default ``"rgb8"``)
anything else               left as bytes
==========================  ===================================================

``image`` names the image form: ``"pil"``; ``"rgb8"``, ``"l8"``, ``"rgba8"`` (uint8,
HxWxC numpy); ``"rgb"``, ``"l"``, ``"rgba"`` (float32 in 0..1); a ``"torch"`` prefix
(``"torchrgb8"``) gives a CxHxW torch tensor. ``layout="CHW"`` gives CxHxW numpy arrays.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
import numpy as np

from .stage import State, Transform
from .tar import Sample

__all__ = ["IMAGE_EXTENSIONS", "Decode", "decode_image"]

IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "ppm", "pgm", "pbm", "bmp", "tif", "tiff", "gif"}
)
_MODES = {"rgb": "RGB", "l": "L", "rgba": "RGBA"}


def _npy(data: bytes) -> Any:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _npz(data: bytes) -> Any:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


_BY_EXTENSION: dict[str, Callable[[bytes], Any]] = {
    "txt": lambda b: b.decode("utf-8"),
    "text": lambda b: b.decode("utf-8"),
    "json": json.loads,
    "jsn": json.loads,
    "cls": int,
    "cls2": int,
    "index": int,
    "inx": int,
    "id": int,
    "msgpack": lambda b: msgpack.unpackb(b, raw=False),
    "mpk": lambda b: msgpack.unpackb(b, raw=False),
    "mp": lambda b: msgpack.unpackb(b, raw=False),
    "npy": _npy,
    "npz": _npz,
}


def _parse_image_spec(spec: str) -> tuple[str | None, bool, bool]:
    """Return (PIL mode or None for "pil", as float, as torch)."""
    if spec == "pil":
        return None, False, False
    torch_out = spec.startswith("torch")
    name = spec[len("torch") :] if torch_out else spec
    as_float = not name.endswith("8")
    mode = _MODES.get(name.rstrip("8"))
    if mode is None:
        raise ValueError(
            f"image must be 'pil' or one of rgb8, l8, rgba8, rgb, l, rgba (optionally with a "
            f"'torch' prefix), got {spec!r}"
        )
    return mode, as_float, torch_out


def decode_image(data: bytes, spec: str = "rgb8", *, layout: str = "HWC") -> Any:
    """Decode image bytes into the form ``spec`` names (see the module docstring)."""
    from PIL import Image

    mode, as_float, torch_out = _parse_image_spec(spec)
    image: Any = Image.open(io.BytesIO(data))
    if mode is None:
        image.load()
        return image
    if image.mode != mode:
        image = image.convert(mode)
    array = np.asarray(image)
    if as_float:
        array = array.astype(np.float32) / np.float32(255)
    if array.ndim == 2 and (torch_out or layout == "CHW"):
        array = array[:, :, None]
    if torch_out:
        return _tensor(array).permute(2, 0, 1)
    return array.transpose(2, 0, 1) if layout == "CHW" else array


def _tensor(array: np.ndarray) -> Any:
    """Wrap an image array as a tensor without a copy (batching makes the one copy).

    Pillow's array lies over a bytes object that only this array holds, so letting torch
    write to it is safe; torch warns about read-only arrays regardless, and only that
    warning is silenced here.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class Decode(Transform[Sample]):
    """Decode the fields of each sample by extension; other fields stay bytes.

    Args:
        image: the image form (see module docstring), default "rgb8".
        layout: "HWC" or "CHW" for numpy images.
        only: decode only these fields (others stay bytes); default all.

    State: the source's; decoding keeps nothing between samples.
    """

    def __init__(
        self, image: str = "rgb8", *, layout: str = "HWC", only: Iterable[str] | None = None
    ) -> None:
        super().__init__()
        _parse_image_spec(image)
        if layout not in ("HWC", "CHW"):
            raise ValueError(f"layout must be 'HWC' or 'CHW', got {layout!r}")
        self.image = image
        self.layout = layout
        self.only = None if only is None else frozenset(only)

    def apply(self, item: Sample) -> Sample:
        out: Sample = {}
        for field, value in item.items():
            if (
                field.startswith("__")
                or not isinstance(value, bytes)
                or (self.only is not None and field not in self.only)
            ):
                out[field] = value
                continue
            ext = field.rsplit(".", 1)[-1].lower()
            if ext in IMAGE_EXTENSIONS:
                out[field] = decode_image(value, self.image, layout=self.layout)
            else:
                decoder = _BY_EXTENSION.get(ext)
                out[field] = value if decoder is None else decoder(value)
        return out

    def get_state(self) -> State:
        return {"source": self.require_source().get_state()}

    def __repr__(self) -> str:
        return f"Decode({self.image!r}, layout={self.layout!r})"
