"""Image decoding through Pillow: forms, layouts, reduced-size JPEG decode, a pixel limit.

``spec`` names the form: ``"pil"`` (a loaded PIL image); ``"rgb8"``, ``"l8"``, ``"rgba8"``
(uint8 arrays); ``"rgb"``, ``"l"``, ``"rgba"`` (float32 in 0..1); a ``"torch"`` prefix
(``"torchrgb8"``) gives a CxHxW torch tensor. Numpy arrays are HxWxC, or CxHxW with
``layout="CHW"`` (grey images get a channel axis in CHW and torch forms).

With a target ``size`` (an int: the shorter side; a pair: width and height) a JPEG is
decoded at the smallest of 1/2, 1/4, 1/8 scale that still covers the target (Pillow's
draft mode: a fraction of a full decode's work), then resized to it.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "check_image_spec", "decode_image"]

IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "ppm", "pgm", "pbm", "bmp", "tif", "tiff", "gif"}
)
#: The largest image decoded by default (width x height): 8192 x 8192.
DEFAULT_MAX_PIXELS = 1 << 26
_MODES = {"rgb": "RGB", "l": "L", "rgba": "RGBA"}

Size = int | tuple[int, int] | None


class ImageTooLargeError(ValueError):
    """An image declares more pixels than the limit (checked before decoding)."""


def check_image_spec(spec: str) -> tuple[str | None, bool, bool]:
    """Return (PIL mode or None for "pil", as float, as torch) for ``spec``.

    Raises:
        ValueError: ``spec`` is not an image form.
    """
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


def check_size(size: Size) -> None:
    """Raise ValueError unless ``size`` is None, an int >= 1 or a pair of them."""
    pair = (size, size) if isinstance(size, int) else size
    if size is not None and (
        not isinstance(pair, tuple)
        or len(pair) != 2
        or not all(isinstance(v, int) and v >= 1 for v in pair)
    ):
        raise ValueError(f"size must be an int >= 1 or a (width, height) pair, got {size!r}")


def _target(width: int, height: int, size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, tuple):
        return size
    scale = size / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_image(
    data: bytes,
    spec: str = "rgb8",
    *,
    layout: str = "HWC",
    size: Size = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Any:
    """Decode image bytes into the form ``spec`` names (see the module docstring).

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels.
        OSError, ValueError: the data is not a complete image Pillow can decode.
    """
    from PIL import Image

    mode, as_float, torch_out = check_image_spec(spec)
    try:
        with warnings.catch_warnings():
            # Our own limit applies; Pillow's bomb warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Any = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # Pillow's own (larger) limit, from the header
        raise ImageTooLargeError(f"{e} (max_pixels={max_pixels})") from e
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, more than max_pixels="
            f"{max_pixels}"
        )
    target = _target(width, height, size)
    if target is not None and image.format == "JPEG":
        image.draft(mode or image.mode, target)
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    if target is not None and image.size != target:
        image = image.resize(target, Image.Resampling.BILINEAR)
    if mode is None:
        image.load()
        return image
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
