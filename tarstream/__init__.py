"""tarstream: WebDataset-style tar shards with sidecar indexes, streamed fast and exactly once.

Write shards with ``ShardWriter`` or the ``tarstream-write`` command; read them back with
``TarStream``. See README.md and FORMAT.md.
"""

from .errors import (
    DecodeError,
    DuplicateKeyError,
    EncodeError,
    InvalidKeyError,
    ManifestError,
    MemberTooLargeError,
    ResumeError,
    ShardChangedError,
    ShardError,
    ShardFormatError,
    SidecarError,
    StorageError,
    TarstreamError,
    TruncatedShardError,
    WriteError,
)
from .index import ShardIndex
from .manifest import Manifest
from .tar import ReadStats
from .writer import ShardWriter

__version__ = "0.1.0"

_LAZY = {
    "AudioOptions": "media",
    # Pipeline modules import torch when it is installed (a Pipeline is then an
    # IterableDataset); loading them on first use keeps `import tarstream` and the writer light.
    "Batch": "batch",
    "Decode": "decode",
    "Filter": "transform",
    "Loader": "loader",
    "Map": "transform",
    "Pipeline": "pipeline",
    "ReadShards": "shards",
    "Rename": "transform",
    "Repeat": "slicing",
    "Retry": "retry",
    "Select": "transform",
    "ShardList": "shards",
    "Shuffle": "shuffle",
    "ShuffleShards": "shards",
    "Skip": "slicing",
    "SplitByRank": "shards",
    "SplitByWorker": "shards",
    "Stage": "stage",
    "Storage": "remote",
    "Take": "slicing",
    "TarStream": "stream",
    "ToTuple": "transform",
    "Unbatch": "batch",
    "VideoOptions": "media",
    "World": "world",
    "merge_states": "resume",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tarstream' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AudioOptions",
    "Batch",
    "Decode",
    "DecodeError",
    "DuplicateKeyError",
    "EncodeError",
    "Filter",
    "InvalidKeyError",
    "Loader",
    "Manifest",
    "ManifestError",
    "Map",
    "MemberTooLargeError",
    "Pipeline",
    "ReadShards",
    "ReadStats",
    "Rename",
    "Repeat",
    "ResumeError",
    "Retry",
    "Select",
    "ShardChangedError",
    "ShardError",
    "ShardFormatError",
    "ShardIndex",
    "ShardList",
    "ShardWriter",
    "Shuffle",
    "ShuffleShards",
    "SidecarError",
    "Skip",
    "SplitByRank",
    "SplitByWorker",
    "Stage",
    "Storage",
    "StorageError",
    "Take",
    "TarStream",
    "TarstreamError",
    "ToTuple",
    "TruncatedShardError",
    "Unbatch",
    "VideoOptions",
    "World",
    "WriteError",
    "__version__",
    "merge_states",
]
