"""tarstream: WebDataset-style tar shards with sidecar indexes, streamed fast and exactly once.

Write shards with ``ShardWriter`` or the ``tarstream-write`` command; read them back with
``TarStream``. See README.md and FORMAT.md.

The package is layered the way a sample travels, each layer importing only from those
below it: ``errors``, ``world``, ``stage`` (the foundation); ``format`` (bytes on disk);
``codecs`` (field values); ``storage`` (bytes from anywhere); ``plan`` (order on
references); ``read`` (references to samples); ``stages`` (samples to batches); ``run``
(pipelines, loaders, resume); ``write`` (making shards); then ``cli`` and ``testing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (
    ArgumentError,
    CacheWarning,
    DecodeError,
    DuplicateKeyError,
    EncodeError,
    EpochWarning,
    ImageTooLargeError,
    InvalidKeyError,
    ManifestError,
    MemberTooLargeError,
    RedactedCause,
    ResumeError,
    ResumeWarning,
    ShardChangedError,
    ShardError,
    ShardFormatError,
    SidecarError,
    StorageError,
    TarstreamError,
    TarstreamWarning,
    TruncatedShardError,
    WriteError,
)
from .format.manifest import Manifest
from .format.scan import ReadStats
from .format.sidecar import ShardIndex
from .write.writer import ShardWriter, WriteProgress

if TYPE_CHECKING:  # what the lazy names below are, for type checkers
    from .codecs.media import AudioOptions, VideoOptions
    from .plan.shard_list import ShardList
    from .plan.split import ShuffleShards, SplitByRank, SplitByWorker
    from .read.read_shards import ReadShards
    from .run.loader import Loader
    from .run.mapped import ShardDataset
    from .run.mixed import mix
    from .run.order import planned_order, rank_order
    from .run.pipeline import Pipeline
    from .run.quality import measure_order
    from .run.resume import merge_states
    from .run.stream import TarStream
    from .stage import Stage
    from .stages.batch import Batch, Unbatch
    from .stages.decode import Decode
    from .stages.shuffle import Shuffle
    from .stages.slicing import Repeat, Skip, Take
    from .stages.transform import Filter, Map, Rename, Select, ToTuple
    from .storage.config import Storage
    from .storage.retry import Retry
    from .world import World
    from .write.merge import merge_manifests
    from .write.parallel import write_parallel, write_part
    from .write.ray_write import write_with_ray
    from .write.sources import write_samples

__version__ = "0.1.0"

# Pipeline modules import torch when it is installed (a Pipeline is then an IterableDataset);
# loading them on first use keeps `import tarstream` and the writer light.
_LAZY = {
    "AudioOptions": "codecs.media",
    "Batch": "stages.batch",
    "Decode": "stages.decode",
    "Filter": "stages.transform",
    "Loader": "run.loader",
    "Map": "stages.transform",
    "Pipeline": "run.pipeline",
    "ReadShards": "read.read_shards",
    "Rename": "stages.transform",
    "Repeat": "stages.slicing",
    "Retry": "storage.retry",
    "Select": "stages.transform",
    "ShardDataset": "run.mapped",
    "ShardList": "plan.shard_list",
    "Shuffle": "stages.shuffle",
    "ShuffleShards": "plan.split",
    "Skip": "stages.slicing",
    "SplitByRank": "plan.split",
    "SplitByWorker": "plan.split",
    "Stage": "stage",
    "Storage": "storage.config",
    "Take": "stages.slicing",
    "TarStream": "run.stream",
    "ToTuple": "stages.transform",
    "Unbatch": "stages.batch",
    "VideoOptions": "codecs.media",
    "World": "world",
    "measure_order": "run.quality",
    "planned_order": "run.order",
    "rank_order": "run.order",
    "merge_states": "run.resume",
    "mix": "run.mixed",
    "merge_manifests": "write.merge",
    "write_parallel": "write.parallel",
    "write_part": "write.parallel",
    "write_samples": "write.sources",
    "write_with_ray": "write.ray_write",
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
    "ArgumentError",
    "AudioOptions",
    "Batch",
    "CacheWarning",
    "Decode",
    "DecodeError",
    "DuplicateKeyError",
    "EncodeError",
    "EpochWarning",
    "Filter",
    "ImageTooLargeError",
    "InvalidKeyError",
    "Loader",
    "Manifest",
    "ManifestError",
    "Map",
    "MemberTooLargeError",
    "Pipeline",
    "ReadShards",
    "ReadStats",
    "RedactedCause",
    "Rename",
    "Repeat",
    "ResumeError",
    "ResumeWarning",
    "Retry",
    "Select",
    "ShardChangedError",
    "ShardDataset",
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
    "TarstreamWarning",
    "ToTuple",
    "TruncatedShardError",
    "Unbatch",
    "VideoOptions",
    "World",
    "WriteError",
    "WriteProgress",
    "__version__",
    "measure_order",
    "merge_manifests",
    "merge_states",
    "mix",
    "planned_order",
    "rank_order",
    "write_parallel",
    "write_part",
    "write_samples",
    "write_with_ray",
]
