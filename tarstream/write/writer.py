"""ShardWriter: write samples into numbered tar shards with sidecars and a manifest."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, BinaryIO, cast

from ..errors import DuplicateKeyError, InvalidKeyError, WriteError
from ..format.header import BLOCK, RECORD, archive_end, round_up
from ..format.keys import validate_field, validate_key
from ..format.manifest import Manifest
from ..format.sidecar import ShardIndex, sidecar_url
from ..storage.compressed import is_gzip_name
from ..storage.files import atomic_write, temp_name
from .durable import OneBehind, Sink, complete_shard, put_in_place, remove_temporaries
from .merge import default_manifest_path, manifest_of
from .packing import (
    BLOCK_TARGET,
    DEFAULT_PACK_LIMIT,
    Block,
    Members,
    Pack,
    PackMode,
    member_parts,
    pack_bytes,
)
from .progress import WriteProgress

__all__ = ["ShardWriter", "WriteProgress"]

_PLACEHOLDER = re.compile(r"%(?:0?\d+)?d")
#: The key and the metadata that readers add to samples (ignored, so that read samples can
#: be written back).
_IGNORED_META = frozenset({"__key__", "__url__", "__local_path__"})


class ShardWriter:
    """Write samples into tar shards named by a printf-style pattern.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with ShardWriter(os.path.join(d, "train-%06d.tar"), max_samples=2) as w:
    ...     for i in range(3):
    ...         w.write({"__key__": f"{i:04d}", "txt": f"sample {i}", "cls": i % 2})
    >>> sorted(os.listdir(d))
    ['.tarstream', '_train.manifest.json', 'train-000000.tar', 'train-000001.tar']
    >>> sorted(os.listdir(os.path.join(d, ".tarstream")))
    ['train-000000.tar.idx', 'train-000001.tar.idx']

    Each sample is a mapping with ``__key__`` and fields; values are encoded by the field's
    extension (see ``tarstream.codecs.encode``). Fields are written in sorted order as ustar
    members with mtime 0, uid/gid 0 and mode 0644, so the same input gives byte-identical
    shards. A shard is written under a hidden temporary name, renamed when complete, and
    then its sidecar is written; the manifest is written by ``close()``. Leaving the
    ``with`` block by an exception removes the partial shard and writes no manifest.

    Args:
        pattern: shard path with one printf integer placeholder, e.g. ``out/train-%06d.tar``.
        max_samples: start a new shard after this many samples (None: no limit).
        max_bytes: start a new shard before one would exceed this size (None: no limit).
            A single sample larger than this gets a shard of its own.
        manifest: the manifest's path; None writes none. Default: beside the shards,
            named after the pattern's prefix (``out/_train.manifest.json``).
        start_index: number of the first shard.
        progress: called with a ``WriteProgress`` each time a shard is complete, and once
            more by ``close()`` (the ``progress`` attribute gives the same at any time).
        fsync: make each shard, sidecar and the manifest durable before it is renamed into
            place (and the rename after), so a crash leaves complete files or none.
        resume: continue a write that stopped: the shards from ``start_index`` on that are
            complete (a sidecar that matches the shard) are kept, ``resumed`` says how many
            samples they hold and ``resumed_after`` the last one's key (go on with the
            source's sample after it), the first incomplete shard
            and temporary files are removed, and writing goes on from there. The same
            source then gives the same bytes as a write that never stopped.
        pack: "none" writes each field as a member (the WebDataset layout); "small" packs
            samples whose fields are all small into blocks, one member for many samples;
            "all" also packs the small fields of a sample with large ones into one member
            (``tarstream.write.packing``; FORMAT.md, "Packed fields"). Read the same either
            way; smaller on disk and faster to read and write for small samples.
        pack_limit: bytes values up to this size are small (typed text, class and JSON
            values always are).
    """

    def __init__(
        self,
        pattern: str | os.PathLike[str],
        *,
        max_samples: int | None = None,
        max_bytes: int | None = None,
        manifest: str | os.PathLike[str] | bool | None = True,
        start_index: int = 0,
        progress: Callable[[WriteProgress], None] | None = None,
        fsync: bool = True,
        resume: bool = False,
        pack: PackMode = "none",
        pack_limit: int = DEFAULT_PACK_LIMIT,
    ) -> None:
        pattern = os.fspath(pattern)
        if "://" in pattern:
            raise ValueError(f"ShardWriter writes local paths only, got URL {pattern!r}")
        if len(_PLACEHOLDER.findall(pattern)) != 1 or pattern.count("%") != 1:
            raise ValueError(
                f"pattern must contain exactly one integer placeholder like %06d, got {pattern!r}"
            )
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        if pack not in ("none", "small", "all"):
            raise ValueError(f'pack must be "none", "small" or "all", got {pack!r}')
        self.pattern = pattern
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.manifest_path = _manifest_path(manifest, pattern)
        self._next_index = start_index
        self._keys: set[str] = set()
        self.pack, self.pack_limit = pack, pack_limit
        self._plans: dict[tuple[str, ...], Pack] = {}
        self._block = Block()
        self._packed: set[str] = set()  # fields packed in the current shard
        self._file: BinaryIO | None = None
        self._path = ""
        self._temp = ""
        self._hash, self._size = hashlib.sha256(), 0
        self._samples: list[tuple[str, int, list[tuple[str, int, int]]]] = []
        self._indexes: list[tuple[str, ShardIndex]] = []
        self._closed = False
        self._on_progress = progress
        self._started = time.monotonic()
        self._written, self._written_bytes = 0, 0  # samples and bytes of complete shards
        self._in_flight = (0, 0)  # samples and bytes of the shard being put in place
        self.fsync = fsync
        self._in_place = OneBehind()
        #: Samples in the shards a resumed write kept (skip that many of the source), and
        #: the key of the last of them (None: none kept).
        self.resumed = self._resume() if resume else 0
        self.resumed_after = self._indexes[-1][1].keys[-1] if self._indexes else None

    def _resume(self) -> int:
        """Keep the complete shards of an earlier write; remove what it left unfinished."""
        while True:
            path = self.pattern % self._next_index
            index = complete_shard(path)
            if index is None:
                break
            self._indexes.append((path, index))
            self._keys.update(index.keys)
            self._written += index.count
            self._written_bytes += index.size
            self._next_index += 1
        for leftover in (path, sidecar_url(path)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        remove_temporaries(self.pattern)
        return self._written

    @property
    def progress(self) -> WriteProgress:
        """Samples, shards and bytes written so far (the current shard included; a shard
        still being put in place counts as complete)."""
        samples, size = self._in_flight
        return WriteProgress(
            samples=self._written + samples + len(self._samples) + len(self._block),
            shards=len(self._indexes) + (samples > 0),
            bytes=self._written_bytes + size + self._size,
            seconds=time.monotonic() - self._started,
        )

    @property
    def shards(self) -> list[str]:
        """Paths of the shards completed so far."""
        return [path for path, _ in self._indexes]

    def write(self, sample: Mapping[str, Any]) -> None:
        """Encode and append one sample, starting a new shard first if a limit says so.

        Raises:
            InvalidKeyError: a bad ``__key__`` or field name.
            DuplicateKeyError: the key was already written by this writer.
            EncodeError: a value the field's extension cannot encode.
        """
        if self._closed:
            raise WriteError("write() on a closed ShardWriter")
        if "__key__" not in sample:
            raise InvalidKeyError(f"sample has no '__key__' (fields: {sorted(sample)})")
        key = validate_key(sample["__key__"])
        if key in self._keys:
            raise DuplicateKeyError(f"sample key {key!r} was already written")
        plan = self._plans.get(tuple(sample)) or self._plan(key, sample)
        if self.pack == "none":
            items = [(name, encode(key, sample[name])) for name, encode, _ in plan.fields]
        else:
            small, items = plan.split(key, sample)
            if not items:
                return self._write_element(key, small)
            if self.pack == "all":
                self._packed.update(small)
            items = plan.members(key, sample, small, items)
        if not items:
            raise WriteError(f"sample {key!r} has no fields to write")
        parts, size, members = member_parts(key, items)
        if self._block:
            self._flush_block()
        if self._file is not None and self._full(size):
            self._finish_shard()
        if self._file is None:
            self._open_shard()
        self._keys.add(key)
        self._append(key, parts, size, members)

    def _write_element(self, key: str, small: dict[str, Any]) -> None:
        """Add a sample of small fields only (``small``, led by ``__key__``) to the block."""
        if len(small) == 1:
            raise WriteError(f"sample {key!r} has no fields to write")
        element = pack_bytes(key, small)
        grows = len(element) + (0 if self._block.keys else 4 * BLOCK + 5)
        if self._file is not None and self._full(grows):
            self._finish_shard()
        if self._file is None:
            self._open_shard()
        elif self._block.size + len(element) > BLOCK_TARGET:
            self._flush_block()
        self._packed.update(small)
        self._keys.add(key)
        self._block.add(key, element)

    def _flush_block(self) -> None:
        """Write the block being filled as one member."""
        blob, layout, spans = self._block.take(self._size)
        self._samples += layout
        self._sink.write(blob, spans, block=True)
        self._size += len(blob)

    def _plan(self, key: str, sample: Mapping[str, Any]) -> Pack:
        """The fields of samples with the keys of ``sample`` (in this order), sorted, each
        checked once and with its encoders."""
        if len(self._plans) > 1000:  # samples of ever new field sets: keep a few
            self._plans.clear()
        names = sorted(k for k in sample if k not in _IGNORED_META)
        plan = Pack(self.pack, self.pack_limit, [validate_field(key, name) for name in names])
        self._plans[tuple(sample)] = plan
        return plan

    def _full(self, sample_size: int) -> bool:
        held = len(self._samples) + len(self._block.keys)  # (a call a sample: no __len__)
        if self.max_samples is not None and held >= self.max_samples:
            return True
        if self.max_bytes is None:
            return False
        ends = self._size + self._block.bound() + sample_size + 2 * BLOCK
        return round_up(ends, RECORD) > self.max_bytes

    def _open_shard(self) -> None:
        self._path = self.pattern % self._next_index
        self._next_index += 1
        directory = os.path.dirname(self._path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._temp = temp_name(self._path)
        # closed in _finish_shard (put_in_place) or abort; the Sink writes a MiB at a time
        self._raw = open(self._temp, "wb")  # noqa: SIM115
        self._file = self._raw
        if is_gzip_name(self._path):  # no name or time in the gzip header: reproducible
            gz = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0)
            self._file = cast(BinaryIO, gz)
        self._hash = hashlib.sha256()
        self._sink = Sink(self._file, self._hash)
        self._size = 0
        self._samples = []
        self._packed = set()

    def _append(self, key: str, parts: list[bytes], size: int, members: Members) -> None:
        """Write a sample's members, ``parts`` (``size`` bytes in all), whose data lie at
        ``members``' offsets in them (the sink computes its CRC-32)."""
        start = self._size
        self._samples.append((key, start, [(f, start + at, n) for f, at, n in members]))
        self._sink.record(parts, size)
        self._size += size

    def _finish_shard(self) -> None:
        assert self._file is not None
        if self._block:
            self._flush_block()
        self._in_place.wait()  # the shard before in place (or its error) while this one is open
        end, tail = self._size, archive_end(self._size)
        self._sink.write(tail)
        self._size += len(tail)
        self._sink.close()
        if self._file is not self._raw:
            self._file.close()  # a GzipFile writes its trailer; the file under it stays open
        self._file = None
        path = self._path
        index = ShardIndex.build(
            os.path.basename(path),
            self._size,
            self._hash.hexdigest(),
            self._samples,
            end,
            self._sink.checksums,
            self._packed.difference(["__key__"]),
            self._sink.block_checksums,
            [*self._sink.running, self._sink.running_end],
        )
        self._samples, self._size = [], 0
        job = functools.partial(
            put_in_place, self._raw, self._temp, path, index.to_bytes(), self.fsync
        )

        def done() -> None:  # the shard is in place: the figures of complete shards
            self._indexes.append((path, index))
            self._written += index.count
            self._written_bytes += index.size
            self._in_flight = (0, 0)
            if self._on_progress is not None:
                seconds = time.monotonic() - self._started
                shards = len(self._indexes)
                self._on_progress(
                    WriteProgress(self._written, shards, self._written_bytes, seconds)
                )

        if self.fsync:  # waiting for the disk overlaps with the next shard's samples
            self._in_place.submit(job, done)  # (the shard before is in place first)
            self._in_flight = (index.count, index.size)
        else:
            job()
            done()

    def close(self) -> None:
        """Finish the current shard and write the manifest. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._finish_shard()
        self._in_place.close()
        if self.manifest_path is not None:
            manifest = self.manifest().to_json().encode("utf-8")
            atomic_write(self.manifest_path, manifest, fsync=self.fsync)
        if self._on_progress is not None:
            self._on_progress(self.progress)

    def abort(self) -> None:
        """Stop without finishing: remove the partial shard and write no manifest (the
        shards complete before it stay, with their sidecars)."""
        self._closed = True
        with contextlib.suppress(Exception):  # the error that led here is the one to see
            self._in_place.close()
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._sink.close()
            self._file.close()
            self._raw.close()
            self._file = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)

    def manifest(self) -> Manifest:
        """Return the manifest of the shards completed so far."""
        limits = {"max_samples": self.max_samples, "max_bytes": self.max_bytes}
        return manifest_of(self._indexes, self.manifest_path or self.pattern, limits)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _manifest_path(manifest: str | os.PathLike[str] | bool | None, pattern: str) -> str | None:
    """Where a writer of ``pattern`` told ``manifest`` writes its manifest (None: nowhere)."""
    if manifest is True:
        return default_manifest_path(pattern)
    return None if manifest is False or manifest is None else os.fspath(manifest)
