"""Parallel writing: the shards of one write made by several processes, one manifest.

With ``max_samples`` (and no ``max_bytes``) shard *s* holds source samples
``s * max_samples`` up to the next multiple, whatever process writes it; process *p* of *n*
writes shards ``p, p + n, p + 2n, ...``: it reads the source keeping only its samples (the
others' files are not read, where the source allows), and writes each shard under a
temporary name of its own. The manifest, made from the sidecars in shard order when every
process is done, lists the same shards as a write in one process, byte for byte (as long
as no row is skipped for a failure, which would move later samples into earlier shards in
one process but not here). Run again, each process keeps its complete shards.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import DuplicateKeyError
from ..format.manifest import Manifest
from ..format.sidecar import ShardIndex
from ..storage.files import atomic_write
from .durable import complete_shard, remove_temporaries
from .index_file import Fetch
from .merge import default_manifest_path, manifest_of, part_manifest_path
from .packing import PackMode
from .sources import samples_from
from .writer import ShardWriter

__all__ = ["Part", "write_parallel", "write_part"]


@dataclass(frozen=True)
class Part:
    """What one process of a parallel write does (picklable)."""

    source: str
    pattern: str
    part: int
    parts: int
    max_samples: int
    options: dict[str, Any] = field(default_factory=dict)
    fsync: bool = True
    fetch: Fetch = field(default_factory=Fetch)
    pack: PackMode = "none"

    def shards(self, keep: _Keep) -> Iterator[int]:
        """This part's shard numbers that are not complete yet, in order (``keep`` knows)."""
        return (s for s in itertools.count(self.part, self.parts) if keep.writes(s))


def _write_part(part: Part) -> list[dict[str, Any]]:
    """Write one part's shards; return the rows its source skipped for failures."""
    fetch = dataclasses.replace(part.fetch, failures=[])
    keep = _Keep(part)
    samples = samples_from(part.source, keep=keep, fetch=fetch, **part.options)
    shards = part.shards(keep)
    writer: ShardWriter | None = None
    try:
        for number, sample in enumerate(samples):
            if number % part.max_samples == 0:
                if writer is not None:
                    writer.close()
                start = next(shards)
                writer = ShardWriter(
                    part.pattern,
                    max_samples=part.max_samples,
                    manifest=False,
                    start_index=start,
                    fsync=part.fsync,
                    pack=part.pack,
                )
            assert writer is not None
            writer.write(sample)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return fetch.failures


class _Keep:
    """Whether a source sample is the part's, in a shard not complete yet (each shard
    looked up once)."""

    def __init__(self, part: Part) -> None:
        self.part = part
        self.known: dict[int, bool] = {}

    def __call__(self, number: int) -> bool:
        shard = number // self.part.max_samples
        return shard % self.part.parts == self.part.part and self.writes(shard)

    def writes(self, shard: int) -> bool:
        """Whether shard ``shard`` (of this part) is still to be written."""
        if shard not in self.known:
            self.known[shard] = complete_shard(self.part.pattern % shard) is None
        return self.known[shard]


def write_parallel(
    source: str,
    pattern: str,
    *,
    workers: int,
    max_samples: int,
    fsync: bool = True,
    fetch: Fetch | None = None,
    pack: PackMode = "small",
    **options: Any,
) -> tuple[Manifest, str, list[dict[str, Any]]]:
    """Write ``source`` into shards of ``max_samples`` with ``workers`` processes; return
    the manifest, where it was written, and the rows skipped for failures.

    ``options`` are ``samples_from``'s (files, fields, key); ``fetch`` says how each
    process reads the files an index names; ``pack`` is ``ShardWriter``'s (small samples
    packed by default, as ``tarstream-write`` writes them).

    Raises:
        DuplicateKeyError: a key in two shards.
        WriteError: what a process raised.
    """
    if workers < 1 or max_samples < 1:
        raise ValueError("workers and max_samples must be >= 1")
    fetch = fetch or Fetch()
    parts = [
        Part(source, pattern, p, workers, max_samples, options, fsync, fetch, pack)
        for p in range(workers)
    ]
    remove_temporaries(pattern)  # of a run that was stopped
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        failures = [f for found in pool.map(_write_part, parts) for f in found]
    indexes = _complete_shards(pattern, 0, 1)
    seen: set[str] = set()
    for path, index in indexes:
        repeated = seen.intersection(index.keys)
        if repeated:
            raise DuplicateKeyError(f"{path}: sample key {min(repeated)!r} is in another shard too")
        seen.update(index.keys)
    manifest_path = default_manifest_path(pattern)
    manifest = manifest_of(indexes, manifest_path, {"max_samples": max_samples, "max_bytes": None})
    atomic_write(manifest_path, manifest.to_json().encode("utf-8"), fsync=fsync)
    return manifest, manifest_path, failures


def write_part(
    source: str,
    pattern: str,
    *,
    part: int,
    parts: int,
    max_samples: int,
    fsync: bool = True,
    fetch: Fetch | None = None,
    pack: PackMode = "small",
    **options: Any,
) -> tuple[Manifest, str, list[dict[str, Any]]]:
    """Write part ``part`` of ``parts`` of ``source`` in this process (the shards a process
    of ``write_parallel`` would), for a launcher that runs each part on its own machine
    (a Slurm array, a torchrun rank); write its manifest beside the whole one
    (``part_manifest_path``) for ``merge_manifests``. Return that manifest, its path and
    the rows skipped for failures."""
    if not 0 <= part < parts or max_samples < 1:
        raise ValueError(f"part must be in 0..{parts - 1} and max_samples >= 1")
    remove_temporaries(pattern, lambda shard: shard % parts == part)  # not another part's
    job = Part(source, pattern, part, parts, max_samples, options, fsync, fetch or Fetch(), pack)
    failures = _write_part(job)
    indexes = _complete_shards(pattern, part, parts)
    path = part_manifest_path(default_manifest_path(pattern), part, parts)
    manifest = manifest_of(indexes, path, {"max_samples": max_samples, "max_bytes": None})
    atomic_write(path, manifest.to_json().encode("utf-8"), fsync=fsync)
    return manifest, path, failures


def _complete_shards(pattern: str, first: int, step: int) -> list[tuple[str, ShardIndex]]:
    """(path, sidecar) of the complete shards ``first``, ``first + step``, ... up to the
    first one that is not."""
    indexes: list[tuple[str, ShardIndex]] = []
    shard = first
    while (index := complete_shard(pattern % shard)) is not None:
        indexes.append((pattern % shard, index))
        shard += step
    return indexes
