"""The one table of field extensions, for writing (encoders) and reading (decoders).

A field's extension is the last dot-separated part of its name, lower-cased
(``seg.png`` -> ``png``). Each extension belongs to one kind; the writer encodes a value by
its field's kind and ``decode()`` turns the bytes back into a value of that kind.

=========  ======================================  ===============================
kind       extensions                              value
=========  ======================================  ===============================
text       txt, text                               str (UTF-8)
json       json, jsn                               a JSON value
class      cls, cls2, index, inx, id               int (its decimal text)
msgpack    msgpack, mpk, mp                        a msgpack value
npy        npy                                     numpy array (never pickled)
npz        npz                                     dict of numpy arrays
torch      pth, pt                                 torch.load(weights_only=True)
pickle     pkl, pickle, pyd                        bytes unless named unsafe
image      IMAGE_FORMATS (jpg, png, webp, ...)     an image (Pillow)
video      VIDEO_FORMATS (mp4, webm, mkv, ...)     ``Video`` (PyAV)
audio      AUDIO_FORMATS (wav, flac, mp3, ...)     ``Audio`` (PyAV)
=========  ======================================  ===============================
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "AUDIO",
    "AUDIO_FORMATS",
    "CLASS",
    "IMAGE",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "JSON",
    "KINDS",
    "MSGPACK",
    "NPY",
    "NPZ",
    "PICKLE",
    "PICKLE_EXTENSIONS",
    "TEXT",
    "TORCH",
    "VIDEO",
    "VIDEO_FORMATS",
    "extension",
    "kind_of",
]

TEXT, JSON, CLASS, MSGPACK = "text", "json", "class", "msgpack"
NPY, NPZ, TORCH, PICKLE = "npy", "npz", "torch", "pickle"
IMAGE, VIDEO, AUDIO = "image", "video", "audio"

#: Image extensions and the Pillow format an image is written in.
IMAGE_FORMATS: Mapping[str, str] = MappingProxyType(
    {
        "jpg": "JPEG",
        "jpeg": "JPEG",
        "png": "PNG",
        "webp": "WEBP",
        "bmp": "BMP",
        "tif": "TIFF",
        "tiff": "TIFF",
        "gif": "GIF",
        "ppm": "PPM",
        "pgm": "PPM",
        "pbm": "PPM",
    }
)
#: Video extensions and the FFmpeg demuxer that reads them.
VIDEO_FORMATS: Mapping[str, str] = MappingProxyType(
    {"mp4": "mp4", "m4v": "mp4", "mov": "mov", "webm": "matroska", "mkv": "matroska", "avi": "avi"}
)
#: Audio extensions and the FFmpeg demuxer that reads them.
AUDIO_FORMATS: Mapping[str, str] = MappingProxyType(
    {
        "wav": "wav",
        "flac": "flac",
        "mp3": "mp3",
        "ogg": "ogg",
        "opus": "ogg",
        "m4a": "mp4",
        "aac": "aac",
    }
)

_BY_KIND: dict[str, tuple[str, ...]] = {
    TEXT: ("txt", "text"),
    JSON: ("json", "jsn"),
    CLASS: ("cls", "cls2", "index", "inx", "id"),
    MSGPACK: ("msgpack", "mpk", "mp"),
    NPY: ("npy",),
    NPZ: ("npz",),
    TORCH: ("pth", "pt"),
    PICKLE: ("pkl", "pickle", "pyd"),
    IMAGE: tuple(IMAGE_FORMATS),
    VIDEO: tuple(VIDEO_FORMATS),
    AUDIO: tuple(AUDIO_FORMATS),
}
#: Every known extension and its kind (read-only).
KINDS: Mapping[str, str] = MappingProxyType(
    {ext: kind for kind, exts in _BY_KIND.items() for ext in exts}
)
IMAGE_EXTENSIONS = frozenset(IMAGE_FORMATS)
PICKLE_EXTENSIONS = frozenset(_BY_KIND[PICKLE])


def extension(field: str) -> str:
    """The extension of a field name.

    >>> extension("seg.PNG")
    'png'
    """
    return field.rsplit(".", 1)[-1].lower()


def kind_of(field: str) -> str | None:
    """The kind of a field (by its extension), None for an unknown extension.

    >>> kind_of("seg.png"), kind_of("label.cls"), kind_of("blob.bin")
    ('image', 'class', None)
    """
    return KINDS.get(extension(field))
