"""TarStream: the pipeline that reads a set of shards, ready for a fluent chain."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Literal

from ..format.scan import DEFAULT_MAX_MEMBER_SIZE, DEFAULT_READ_SIZE, ReadStats
from ..plan.segments import Even
from ..plan.shard_list import ShardList
from ..plan.specs import SidecarMode, Source
from ..plan.split import ShuffleShards, SplitByRank, SplitByWorker
from ..read.read_shards import ReadShards
from ..stage import Stage, upstream
from ..storage.config import Storage
from .pipeline import Pipeline

__all__ = ["TarStream"]


class TarStream(Pipeline):
    """Stream the samples of a set of shards, one dict per sample.

    Each sample is ``{"__key__": key, "__url__": shard, field: bytes, ...}``. The pipeline
    is shard list -> shard shuffle (if asked) -> split by rank -> split by worker -> read;
    chain more stages fluently::

        TarStream("d/train-{000000..000019}.tar", seed=1, shuffle_shards=True)
            .shuffle(10_000).decode("torchrgb8").to_tuple("jpg", "cls").batch(64)

    Across ranks and DataLoader workers every sample of an epoch is read exactly once.

    Args:
        source: a brace pattern, a manifest (``*.json``) or a list of those.
        seed: seed of the shard and sample shuffles (combined with the epoch).
        shuffle_shards: shuffle the shard order each epoch.
        even: with sample counts, give every rank the same number of samples: "drop" the
            last ``n % world_size`` samples of the epoch, or "pad" by repeating samples.
        sidecars: "auto" uses sidecar indexes where present, "require" raises for a shard
            without one, "ignore" parses tar headers.
        rank, world_size: override the world detected when iteration starts.
        max_member_size: largest member accepted, in bytes.
        read_size: bytes per read from storage (default 512 KiB; a larger sample is read
            whole).
        allow_pipe: accept ``pipe:COMMAND`` shards (the command's output is the shard; it
            runs as an argument list, without a shell). Off by default: a source string
            could otherwise run commands.
        storage: how remote (fsspec) URLs are read: options, credentials, retries,
            read-ahead and a local cache (see ``tarstream.Storage``).
        verify: with sidecars, check every byte of each sample against the CRC-32 its
            sidecar records before yielding it (the default); False skips that check (the
            sidecar's layout, each sample's first member name, the shard's size and its end
            marker are still checked).
        errors, max_errors: "skip" ends a shard that fails (truncated, corrupt, not
            matching its sidecar) and goes on with the next, counting it in ``stats``;
            more than ``max_errors`` such shards in an epoch raise (see ``ReadShards``).
        lowercase_fields: lower-case field names as webdataset does (``0001.JPG`` gives
            field ``jpg``, matched by ``"jpg"``); False keeps them as stored.
        fields: read only these fields (see ``select_columns``).
        interleave: read this many shards at once, drawing each next sample from one of
            them in a seeded order, so a shuffle buffer after the reader mixes samples of
            several shards (see ``ReadShards``). Default: 4 with ``shuffle_shards`` (where
            sample counts are known), else 1: shards read one after another, in order.
    """

    def __init__(
        self,
        source: Source,
        *,
        seed: int = 0,
        shuffle_shards: bool = False,
        even: Even = None,
        sidecars: SidecarMode = "auto",
        rank: int | None = None,
        world_size: int | None = None,
        max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
        read_size: int = DEFAULT_READ_SIZE,
        allow_pipe: bool = False,
        storage: Storage | None = None,
        verify: bool = True,
        errors: Literal["strict", "skip"] = "strict",
        max_errors: int | None = None,
        lowercase_fields: bool = True,
        fields: Iterable[str] | None = None,
        interleave: int | None = None,
    ) -> None:
        self.shard_list = ShardList(
            source, sidecars=sidecars, allow_pipe=allow_pipe, storage=storage
        )
        self.reader = ReadShards(
            sidecars=sidecars,
            max_member_size=max_member_size,
            read_size=read_size,
            verify=verify,
            errors=errors,
            max_errors=max_errors,
            lowercase_fields=lowercase_fields,
            fields=fields,
            interleave=interleave if interleave is not None or shuffle_shards else 1,
        )
        stages: list[Stage[Any]] = [self.shard_list]
        stages += [ShuffleShards()] if shuffle_shards else []
        stages += [SplitByRank(even=even), SplitByWorker(), self.reader]
        super().__init__(*stages, seed=seed, rank=rank, world_size=world_size)
        self.sidecars = sidecars
        self.even = even

    def select_columns(self, *names: str) -> TarStream:
        """A copy that reads only fields ``names`` (and ``__key__``, ``__url__``): with
        sidecars the other members' bytes are never read (each chosen member's header is
        checked against the sidecar instead of the sample's checksum); without, they are
        read and dropped. Unlike ``select``, it applies at the reader, wherever it is
        called in the chain."""
        clone = self.then()
        reader = copy.copy(self.reader)
        reader.fields = frozenset(n for name in names for n in name.split())
        clone._stages = tuple(reader if s is self.reader else s for s in self._stages)
        clone.reader = reader
        return clone

    @property
    def shards(self) -> list[str]:
        """URLs of the dataset's shards, in order."""
        return [spec.url for spec in self.shard_list.specs]

    @property
    def stats(self) -> ReadStats:
        """What the reader saw in this process (skipped members, samples, bytes)."""
        reader = upstream(self._chain, ReadShards)
        return reader.stats if reader is not None else self.reader.stats
