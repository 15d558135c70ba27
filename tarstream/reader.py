"""Read one shard: with its sidecar index where there is one, by parsing headers otherwise."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Literal

from .errors import ShardFormatError, SidecarError
from .index import ShardIndex
from .sources import ShardSpec
from .storage import open_input, read_bytes
from .tar import (
    DEFAULT_MAX_MEMBER_SIZE,
    DEFAULT_READ_SIZE,
    ReadStats,
    Sample,
    read_indexed_samples,
    read_samples,
)

__all__ = ["SIDECAR_MODES", "SidecarMode", "load_index", "read_shard", "read_shard_at"]

SidecarMode = Literal["auto", "require", "ignore"]
SIDECAR_MODES = ("auto", "require", "ignore")


def load_index(spec: ShardSpec) -> ShardIndex | None:
    """Return the sidecar index of ``spec``, or None if it has none.

    Raises:
        SidecarError: the sidecar exists but is invalid, or disagrees with the manifest.
    """
    if not spec.sidecar:
        return None
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
    index = _index_for(spec, sidecars)
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
        if first:
            samples = islice(samples, first, None)
        yield from samples


def read_shard_at(
    spec: ShardSpec,
    indices: Iterable[int],
    *,
    sidecars: SidecarMode = "auto",
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
) -> dict[int, Sample]:
    """Return the samples of one shard at ``indices`` (sample numbers), by number.

    With a sidecar only the regions holding those samples are read (seeking over gaps
    longer than a read); without one the shard is parsed up to the last of them.
    """
    wanted = sorted(set(indices))
    if not wanted:
        return {}
    index = _index_for(spec, sidecars)
    f, size = open_input(spec.url)
    with f:
        if index is not None:
            run = read_indexed_samples(f, spec.url, index, only=wanted, file_size=size)
            return dict(zip(wanted, run, strict=True))
        keep = set(wanted)
        out: dict[int, Sample] = {}
        samples = read_samples(f, spec.url, max_member_size=max_member_size)
        for position, sample in enumerate(samples):
            if position in keep:
                out[position] = sample
                if len(out) == len(keep):
                    return out
    raise ShardFormatError(
        f"sample {max(keep - set(out))} asked for, the shard has fewer", shard=spec.url
    )


def _index_for(spec: ShardSpec, sidecars: SidecarMode) -> ShardIndex | None:
    index = None if sidecars == "ignore" else load_index(spec)
    if index is None and sidecars == "require":
        raise SidecarError(
            "shard has no sidecar index (sidecars='require'); build one with "
            "`tarstream index PATTERN`",
            shard=spec.url,
        )
    return index
