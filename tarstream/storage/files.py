"""Open shards, sidecars and manifests by local path, ``pipe:`` command or fsspec URL.

Local paths (and ``file://`` URLs) are opened with the built-in ``open`` and unbuffered
reads: the reader does its own large reads, and fsspec's layer costs time there. Any other
URL goes through ``fsspec`` (``tarstream.storage.remote``), and through the storage's
cache where it has one.
"""

from __future__ import annotations

import contextlib
import io
import os
from concurrent.futures import Future
from typing import Any, BinaryIO, cast

from .config import Storage
from .pipe import PipeInput
from .remote import RemoteInput
from .urls import is_local, is_pipe, local_path

__all__ = [
    "BackgroundInput",
    "atomic_write",
    "open_input",
    "read_bytes",
    "sync_directory",
    "temp_name",
]


def open_input(
    url: str,
    storage: Storage | None = None,
    *,
    size: int | None = None,
    sha256: str | None = None,
    background: bool = False,
) -> tuple[BinaryIO, int | None]:
    """Open ``url`` for reading; return the file and its size where known cheaply.

    Local paths are opened directly. Remote URLs are read through ``storage`` (retried
    blocks fetched ahead, see ``tarstream.storage.remote``) or, where it has a cache, from the
    cached copy, filled first and verified against ``size`` and ``sha256`` (the sidecar's).
    ``background=True`` returns at once and fills the cache in a background thread (the
    remote read itself always starts in the background). ``pipe:`` URLs run their command
    (callers allow them explicitly; see ``tarstream.plan.specs.resolve_shards``).

    Raises:
        FileNotFoundError: with the redacted URL, where the object does not exist.
        StorageError: a permanent remote failure, or retries used up.
    """
    if is_pipe(url):
        return cast(BinaryIO, PipeInput(url)), None
    if is_local(url):
        f = open(local_path(url), "rb", buffering=0)  # noqa: SIM115 - caller closes
        return f, os.fstat(f.fileno()).st_size
    if storage is None:  # defaults, read in this thread: no fetch threads for a one-off open
        return cast(BinaryIO, RemoteInput(url, Storage(), prefetch=0)), None
    cache = storage.cache
    if cache is None:
        return cast(BinaryIO, RemoteInput(url, storage)), None

    def fill(out: BinaryIO) -> None:
        # Fetched in this thread (no read-ahead): a fill may itself run in the background.
        with RemoteInput(url, storage, prefetch=0) as source:
            while block := source.read(storage.block_size):
                out.write(block)

    def cached() -> tuple[BinaryIO, int | None]:
        got = cache.open(url, fill, size=size, sha256=sha256)
        return got if got is not None else (cast(BinaryIO, RemoteInput(url, storage)), None)

    if background:
        return cast(BinaryIO, BackgroundInput(storage.executor().submit(cached))), None
    return cached()


class BackgroundInput(io.RawIOBase):
    """A file being opened in a background thread; reading waits for it."""

    def __init__(self, opening: Future[tuple[BinaryIO, int | None]]) -> None:
        super().__init__()
        self._opening = opening
        self._file: BinaryIO | None = None

    def _get(self) -> BinaryIO:
        if self._file is None:
            self._file = self._opening.result()[0]
        return self._file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._get().readinto(buffer)  # type: ignore[attr-defined, no-any-return]

    def read(self, size: int = -1) -> bytes:
        return self._get().read(size)  # the file's own read: no copy through a buffer

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._get().seek(offset, whence)

    def tell(self) -> int:
        return self._get().tell()

    def close(self) -> None:
        if not self.closed:
            if self._file is None and not self._opening.cancel():
                try:
                    self._file = self._opening.result()[0]
                except Exception:  # closing: the error is the reader's to see
                    self._file = None
            if self._file is not None:
                self._file.close()
        super().close()


def read_bytes(url: str, storage: Storage | None = None, *, cached: bool = False) -> bytes:
    """Return the whole content of a small file (a sidecar or manifest).

    ``cached``: keep a remote file in the storage's cache, if it has one (sidecars, which
    are read again every epoch, like the shards they describe).
    """
    if is_local(url) or is_pipe(url):
        f, _ = open_input(url)
        with f:
            return f.read()
    storage = storage if storage is not None else Storage()
    if cached and storage.cache is not None:
        f, _ = open_input(url, storage)
        with f:
            return f.read()
    with RemoteInput(url, storage, prefetch=0) as r:
        return r.read()


def atomic_write(path: str, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to a local ``path`` through a temporary file of its own and a rename
    (making its folder if needed); ``fsync``: on disk before the rename, and the rename
    too."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    temp = temp_name(path)
    try:
        with open(temp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if fsync:
        sync_directory(directory)


def temp_name(path: str) -> str:
    """A hidden temporary name beside ``path``, unique to this process and call
    (``.NAME.PID-RANDOM.partial``): writers to one folder never share one."""
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.{os.getpid()}-{os.urandom(4).hex()}.partial")


def sync_directory(directory: str) -> None:
    """Make the renames in ``directory`` durable (where the system allows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
