"""tarstream: WebDataset-style tar shards with sidecar indexes, streamed fast and exactly once.

Write shards with ``ShardWriter`` or the ``tarstream-write`` command; read them back with
``TarStream``. See README.md and FORMAT.md.
"""

from .errors import (
    DuplicateKeyError,
    EncodeError,
    InvalidKeyError,
    ManifestError,
    MemberTooLargeError,
    ShardError,
    ShardFormatError,
    SidecarError,
    TarstreamError,
    TruncatedShardError,
    WriteError,
)
from .index import ShardIndex
from .manifest import Manifest
from .stream import TarStream
from .tar import ReadStats
from .writer import ShardWriter

__version__ = "0.1.0"

__all__ = [
    "DuplicateKeyError",
    "EncodeError",
    "InvalidKeyError",
    "Manifest",
    "ManifestError",
    "MemberTooLargeError",
    "ReadStats",
    "ShardError",
    "ShardFormatError",
    "ShardIndex",
    "ShardWriter",
    "SidecarError",
    "TarStream",
    "TarstreamError",
    "TruncatedShardError",
    "WriteError",
    "__version__",
]
