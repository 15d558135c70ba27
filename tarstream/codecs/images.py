"""Image decoding through Pillow: forms, layouts, reduced-size JPEG decode, a pixel limit.

``spec`` names the form: ``"pil"`` (a loaded PIL image in RGB, as webdataset gives it;
``"pill"``, ``"pilrgb"``, ``"pilrgba"`` in that mode, ``"pilany"`` in the mode it is stored
in); ``"rgb8"``, ``"l8"``, ``"rgba8"``
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ArgumentError, ImageTooLargeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "PIL_FORMS",
    "ImageForm",
    "Size",
    "check_image_spec",
    "check_size",
    "decode_image",
    "image_value",
    "open_image",
    "pack_image",
    "pixel_shape",
]

#: The largest image decoded by default (width x height): 8192 x 8192.
DEFAULT_MAX_PIXELS = 1 << 26
_MODES = {"rgb": "RGB", "l": "L", "rgba": "RGBA"}
#: The PIL forms and the mode each converts to (None: the stored mode).
PIL_FORMS: dict[str, str | None] = {
    "pil": "RGB",
    "pilrgb": "RGB",
    "pill": "L",
    "pilrgba": "RGBA",
    "pilany": None,
}

Size = int | tuple[int, int] | None


def check_image_spec(spec: str) -> tuple[str | None, bool, bool]:
    """Return (PIL mode, None: as stored; as float; as torch) for ``spec``.

    Raises:
        ValueError: ``spec`` is not an image form.
    """
    if not isinstance(spec, str):
        raise ArgumentError(
            f"the image form is a string such as 'rgb8' or 'pil', got {spec!r} (custom "
            "decoders go in decoders={'jpg': function})"
        )
    if spec in PIL_FORMS:
        return PIL_FORMS[spec], False, False
    torch_out = spec.startswith("torch")
    name = spec[len("torch") :] if torch_out else spec
    as_float = not name.endswith("8")
    mode = _MODES.get(name.rstrip("8"))
    if mode is None:
        raise ValueError(
            f"image must be one of {', '.join(PIL_FORMS)}, or one of rgb8, l8, rgba8, rgb, l, "
            f"rgba (optionally with a 'torch' prefix), got {spec!r}"
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


@dataclass(frozen=True)
class ImageForm:
    """How images are decoded: the form ``spec`` names, the layout of numpy arrays, a
    target ``size`` and the pixel limit. Checked when made.

    Raises:
        ValueError: a form, layout, size or limit that is not one.
    """

    spec: str = "rgb8"
    layout: str = "HWC"
    size: Size = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: The PIL mode (None: as stored), whether values are float and whether torch tensors.
    parsed: tuple[str | None, bool, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", check_image_spec(self.spec))
        check_size(self.size)
        if self.layout not in ("HWC", "CHW"):
            raise ValueError(f"layout must be 'HWC' or 'CHW', got {self.layout!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")

    def decode(self, data: bytes) -> Any:
        """The value of image bytes in this form (``decode_image``)."""
        return self.value(self.open(data))

    def open(self, data: bytes) -> Any:
        """The decoded PIL image (``open_image``) of image bytes."""
        return open_image(data, self.parsed[0], size=self.size, max_pixels=self.max_pixels)

    def value(self, image: Any, *, pixels: bool = True) -> Any:
        """The value of a PIL image from ``open`` (``image_value``)."""
        return image_value(image, self.spec, self.layout, pixels=pixels)

    def shape(self, image: Any) -> tuple[int, ...]:
        """The shape ``value(image)`` has, without making it."""
        if self.parsed[2]:
            height, width, channels = pixel_shape(image)
            return (channels, height, width)
        return pixel_shape(image, channel_axis=self.layout == "CHW")

    def packs_in_place(self) -> bool:
        """Whether a value's memory is the image's pixels as ``pack_image`` writes them
        (uint8, H x W x C memory order): a batch can then decode images into its rows."""
        _, as_float, torch_out = self.parsed
        pil = self.spec in PIL_FORMS
        return not pil and not as_float and (torch_out or self.layout == "HWC")


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
    mode, _, _ = check_image_spec(spec)
    return image_value(open_image(data, mode, size=size, max_pixels=max_pixels), spec, layout)


def image_value(image: Any, spec: str, layout: str = "HWC", *, pixels: bool = True) -> Any:
    """The form ``spec`` names (in ``layout``) of a PIL image from ``open_image``; with
    ``pixels=False``, of its size and type only, the pixels left unwritten."""
    _, as_float, torch_out = check_image_spec(spec)
    if spec in PIL_FORMS:
        return image
    array = np.empty(pixel_shape(image, channel_axis=torch_out or layout == "CHW"), np.uint8)
    if pixels:
        pack_image(image, array)
    if as_float:
        array = array.astype(np.float32) / np.float32(255)
    if torch_out:
        import torch

        return torch.from_numpy(array).permute(2, 0, 1)
    return array.transpose(2, 0, 1) if layout == "CHW" else array


def open_image(
    data: bytes, mode: str | None, *, size: Size = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Any:
    """Decode ``data`` to a loaded PIL image in ``mode`` (None: as stored), at ``size``.

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels.
        OSError, ValueError: the data is not a complete image Pillow can decode.
    """
    from PIL import Image

    image = _open(data)
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
    image.load()
    return image


def _open(data: bytes) -> Any:
    """Pillow's image over ``data``, its header read, not decoded.

    A JPEG goes straight to the opener Pillow registers for JPEG: ``Image.open`` would find
    the same one, after checking Pillow's own pixel limit, whose warning must then be
    silenced per image, since our ``max_pixels`` applies instead.
    """
    from PIL import Image, UnidentifiedImageError

    if data.startswith(b"\xff\xd8\xff"):
        Image.preinit()
        try:
            return Image.OPEN["JPEG"][0](io.BytesIO(data), "")
        except SyntaxError as e:  # what Pillow's openers raise for a header they reject
            raise UnidentifiedImageError(f"cannot identify image file: {e}") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # Pillow's own (larger) limit, from the header
        raise ImageTooLargeError(f"{e} (larger than Pillow's own limit)") from e


def pixel_shape(image: Any, *, channel_axis: bool = True) -> tuple[int, ...]:
    """The H x W x C shape of an L, RGB or RGBA image's pixels (H x W for L without
    ``channel_axis``)."""
    width, height = image.size
    channels = len(image.getbands())
    if channels == 1 and not channel_axis:
        return (height, width)
    return (height, width, channels)


def pack_image(image: Any, out: np.ndarray) -> None:
    """Write a loaded L, RGB or RGBA image's pixels into ``out`` (C-contiguous uint8 of
    ``pixel_shape``), as ``np.asarray(image)`` would give them.

    Pillow keeps RGB as 4 bytes a pixel; its raw encoder packs them in 64 KiB pieces.
    Copying each piece into ``out`` while it is in cache replaces ``tobytes`` (the pieces
    joined into a new bytes object) plus the copy from there: about one image's worth of
    memory traffic less, and the destination can be a batch being stacked.
    """
    from PIL import Image

    view = out.reshape(-1).data
    encoder = Image._getencoder(image.mode, "raw", image.mode)
    try:
        encoder.setimage(image.im, (0, 0, *image.size))
        position, status = 0, 0
        while not status:
            _, status, piece = encoder.encode(max(1 << 16, image.size[0] * 4))
            view[position : position + len(piece)] = piece
            position += len(piece)
    finally:
        encoder.cleanup()
    if status < 0 or position != len(view):
        raise ValueError(f"raw encoder error {status} after {position} of {len(view)} bytes")
