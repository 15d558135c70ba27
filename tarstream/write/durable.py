"""Shards on disk: a written shard put in place, durably, while the writer goes on with
the next one; and what a stopped write left.

Waiting for the disk (fsync) is most of what a durable write costs; it needs no Python, so
a thread of its own does it while the writer encodes the next shard's samples. The order
on disk is the same as done in line: the shard's bytes, its rename, then its sidecar.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from ..errors import TarstreamError
from ..format.checksum import crc32
from ..format.sidecar import ShardIndex, sidecar_url
from ..storage.compressed import is_gzip_name
from ..storage.files import atomic_write, sync_directory

__all__ = ["OneBehind", "Sink", "complete_shard", "put_in_place", "remove_temporaries"]


def put_in_place(raw: BinaryIO, temp: str, path: str, sidecar: bytes, fsync: bool) -> None:
    """Close the shard written to ``raw`` (at ``temp``), rename it to ``path`` and write
    its ``sidecar``; ``fsync``: each on disk before the next step. A failure removes the
    temporary file (the shard is then not there; an earlier shard is untouched)."""
    try:
        if fsync:
            raw.flush()
            os.fsync(raw.fileno())
        raw.close()
        os.replace(temp, path)
    except BaseException:
        raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if fsync:
        sync_directory(os.path.dirname(path))
    atomic_write(sidecar_url(path), sidecar, fsync=fsync)


class Sink:
    """Bytes written to ``file`` and hashed into ``digest`` by a thread of their own, in
    order, a chunk of about ``chunk`` bytes at a time (both release the GIL on large
    buffers: the writer goes on encoding meanwhile). Each record (a sample's bytes) also
    gets its CRC-32 there, appended to ``checksums`` in order, with the running CRC-32 of
    every byte written before it to ``running`` (and after the last, ``running_end``), and
    each block (a write of records at once: a block member) its own, appended to
    ``block_checksums``. ``write`` raises a failed chunk's error, ``close`` waits for every
    chunk."""

    def __init__(self, file: BinaryIO, digest: Any, chunk: int = 1 << 20) -> None:
        self.file, self.digest, self.chunk = file, digest, chunk
        self.checksums: list[int] = []
        self.block_checksums: list[int] = []
        self.running: list[int] = []
        self.running_end = 0
        self._crc = 0  # the running CRC-32 of the chunks written
        self._parts: list[bytes] = []
        self._records: list[tuple[int, int]] = []  # where each record lies in the chunk
        self._blocks: list[tuple[int, int]] = []  # and each block
        self._held = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tarstream-sink")
        self._futures: deque[Future[None]] = deque()

    def write(
        self, data: bytes, records: list[tuple[int, int]] | None = None, block: bool = False
    ) -> None:
        """Write ``data``; ``records``: the spans of it (from, to) that are records;
        ``block``: ``data`` is a block member (its CRC-32 goes to ``block_checksums``)."""
        held = self._held
        if records:
            self._records += [(held + a, held + b) for a, b in records]
        if block:
            self._blocks.append((held, held + len(data)))
        self._parts.append(data)
        self._held += len(data)
        if self._held >= self.chunk:
            self._hand_over()

    def record(self, parts: list[bytes], size: int) -> None:
        """Write ``parts`` (``size`` bytes in all, copied once: into the chunk) as one
        record. Records get their CRC-32 on the sink's thread, not the writer's: computing
        one over a large record releases the GIL, and waiting to take it back would cost
        the writer more than the CRC."""
        self._parts += parts
        self._records.append((self._held, self._held + size))
        self._held += size
        if self._held >= self.chunk:
            self._hand_over()

    def _hand_over(self) -> None:
        while self._futures and self._futures[0].done():
            self._futures.popleft().result()
        if len(self._futures) > 4:  # bounded: at most a few chunks in flight
            self._futures.popleft().result()
        data = b"".join(self._parts)
        records, blocks = self._records, self._blocks
        self._parts, self._held, self._records, self._blocks = [], 0, [], []
        self._futures.append(self._pool.submit(self._put, data, records, blocks))

    def _put(
        self, data: bytes, records: list[tuple[int, int]], blocks: list[tuple[int, int]]
    ) -> None:
        self.file.write(data)
        self.digest.update(data)
        view = memoryview(data)
        self.checksums += [crc32(view[start:end]) for start, end in records]
        self.block_checksums += [crc32(view[start:end]) for start, end in blocks]
        crc, at = self._crc, 0
        for start, end in records:
            self.running.append(crc := crc32(view[at:start], crc))
            self.running_end = crc = crc32(view[start:end], crc)
            at = end
        self._crc = crc32(view[at:], crc)

    def close(self) -> None:
        """Write what is held and wait for every chunk (the file stays open)."""
        try:
            if self._parts:
                self._hand_over()
            while self._futures:
                self._futures.popleft().result()
        finally:
            self._pool.shutdown()


class OneBehind:
    """Jobs run in order on one thread while the caller goes on; a job waits for the one
    before it to end (so one runs at a time, at most one behind), and ``then`` runs in
    the caller once its job is done. A job's error is raised by the next ``submit`` or
    ``wait``."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[None], Callable[[], None]] | None = None

    def submit(self, job: Callable[[], None], then: Callable[[], None]) -> None:
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tarstream-put-in-place")
        self._pending = (self._pool.submit(job), then)

    def wait(self) -> None:
        """Wait for the job in flight (if any), raise its error or run its ``then``."""
        if self._pending is None:
            return
        future, then = self._pending
        self._pending = None
        future.result()
        then()

    def close(self) -> None:
        """Wait for the job in flight and end the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


def complete_shard(path: str) -> ShardIndex | None:
    """The sidecar of the shard at ``path`` if both are there and agree (the name it
    records and, for an uncompressed shard, its size), else None."""
    try:
        data = open(sidecar_url(path), "rb").read()  # noqa: SIM115 - read at once
        index = ShardIndex.from_bytes(data, url=path)
        size = os.path.getsize(path)
    except (OSError, ValueError, TarstreamError):
        return None
    if is_gzip_name(path):
        return index
    return index if size == index.size and index.shard == os.path.basename(path) else None


def remove_temporaries(pattern: str, owns: Callable[[int], bool] | None = None) -> None:
    """Remove the temporary files an earlier write to ``pattern`` left (it was stopped):
    of every shard, or of the shard numbers ``owns`` (a part's: another part writing
    beside it keeps its own)."""
    directory = os.path.dirname(pattern) or "."
    head, tail = re.split(r"%(?:0?\d+)?d", os.path.basename(pattern), maxsplit=1)
    temporary = re.compile(
        re.escape("." + head) + r"(\d+)" + re.escape(tail) + r"\.\d+-[0-9a-f]+\.partial"
    )
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        found = temporary.fullmatch(name)
        if found and (owns is None or owns(int(found[1]))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
