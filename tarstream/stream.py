"""TarStream: iterate the samples of a set of shards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .errors import SidecarError
from .index import ShardIndex
from .sources import ShardSpec, Source, resolve_shards
from .storage import open_input, read_bytes
from .tar import (
    DEFAULT_MAX_MEMBER_SIZE,
    DEFAULT_READ_SIZE,
    ReadStats,
    Sample,
    read_indexed_samples,
    read_samples,
)

__all__ = ["SidecarMode", "TarStream", "load_index", "read_shard"]

SidecarMode = Literal["auto", "require", "ignore"]
_SIDECAR_MODES = ("auto", "require", "ignore")


def load_index(spec: ShardSpec) -> ShardIndex | None:
    """Return the sidecar index of ``spec``, or None if it has none.

    Raises:
        SidecarError: the sidecar exists but is invalid, or disagrees with the manifest.
    """
    try:
        data = read_bytes(spec.sidecar)
    except FileNotFoundError:
        return None
    index = ShardIndex.from_bytes(data, url=spec.sidecar)
    if spec.count is not None and spec.count != index.count:
        raise SidecarError(
            f"manifest says {spec.count} samples, sidecar says {index.count}", shard=spec.url
        )
    if spec.size is not None and spec.size != index.size:
        raise SidecarError(
            f"manifest says {spec.size} bytes, sidecar says {index.size}", shard=spec.url
        )
    return index


def read_shard(
    spec: ShardSpec,
    *,
    sidecars: SidecarMode = "auto",
    first: int = 0,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    read_size: int = DEFAULT_READ_SIZE,
    stats: ReadStats | None = None,
) -> Iterator[Sample]:
    """Yield the samples of one shard, from sample ``first`` on, closing the file at the end.

    With a sidecar (``sidecars`` "auto" or "require") members are sliced at the offsets it
    records and ``first`` seeks; without one, headers are parsed and ``first`` samples are
    read and dropped.
    """
    index = None if sidecars == "ignore" else load_index(spec)
    if index is None and sidecars == "require":
        raise SidecarError(
            "shard has no sidecar index (sidecars='require'); build one with "
            "`tarstream index PATTERN`",
            shard=spec.url,
        )
    f, size = open_input(spec.url)
    with f:
        if index is not None:
            yield from read_indexed_samples(
                f, spec.url, index, first=first, file_size=size, read_size=read_size, stats=stats
            )
            return
        samples = read_samples(
            f, spec.url, max_member_size=max_member_size, read_size=read_size, stats=stats
        )
        for position, sample in enumerate(samples):
            if position >= first:
                yield sample


class TarStream:
    """Iterate the samples of a set of shards, one dict per sample.

    Each sample is ``{"__key__": key, "__url__": shard, field: bytes, ...}``.

    Args:
        source: a brace pattern (``d/train-{000000..000019}.tar``), a manifest
            (``d/train.manifest.json``), or a list of those.
        sidecars: "auto" uses a shard's sidecar index where one exists, "require" raises
            SidecarError for a shard without one, "ignore" always parses tar headers.
        max_member_size: largest member accepted, in bytes.
        read_size: bytes per read from storage.
    """

    def __init__(
        self,
        source: Source,
        *,
        sidecars: SidecarMode = "auto",
        max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
        read_size: int = DEFAULT_READ_SIZE,
    ) -> None:
        if sidecars not in _SIDECAR_MODES:
            raise ValueError(f"sidecars must be one of {_SIDECAR_MODES}, got {sidecars!r}")
        if max_member_size < 1:
            raise ValueError(f"max_member_size must be >= 1, got {max_member_size}")
        if read_size < 512:
            raise ValueError(f"read_size must be >= 512, got {read_size}")
        self.shards = resolve_shards(source)
        self.sidecars: SidecarMode = sidecars
        self.max_member_size = max_member_size
        self.read_size = read_size
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[Sample]:
        for spec in self.shards:
            yield from read_shard(
                spec,
                sidecars=self.sidecars,
                max_member_size=self.max_member_size,
                read_size=self.read_size,
                stats=self.stats,
            )

    def __repr__(self) -> str:
        return f"TarStream({len(self.shards)} shards, sidecars={self.sidecars!r})"
