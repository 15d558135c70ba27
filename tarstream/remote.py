"""Remote shards: storage options, retried ranged reads and read-ahead over fsspec.

A ``Storage`` says how to reach remote URLs (fsspec options, where credentials come from,
retries, block size, read-ahead, an optional local cache). It pickles without secrets:
options that hold credentials stay in the process that was given them, so a spawn worker
gets them only from a ``credentials`` function (pickled by reference and called where files
are opened), from a profile, or from the environment.

``RemoteInput`` reads one object in blocks of ``block_size`` through fsspec. Each block is
fetched by a background thread up to ``prefetch`` blocks ahead of the reader, so network
time overlaps parsing and decoding; the memory held is at most ``1 + prefetch`` blocks. A
transient failure (connection reset, timeout, a body ending early, 5xx, SlowDown) is retried
with exponential backoff and jitter from the byte already reached, so no byte is read twice
or skipped; a permanent one (403, 404) fails at once. An object that changes during the
read (its ETag or size differs on a retry, or S3 refuses the read's If-Match) raises
``ShardChangedError``: bytes of two versions are never mixed.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .errors import ShardChangedError, ShardError, StorageError, redact_url
from .retry import Retry, is_transient

if TYPE_CHECKING:
    from .cache import ShardCache

__all__ = ["RemoteInput", "Storage"]

DEFAULT_BLOCK_SIZE = 8 << 20

# Option names (at any depth) whose values are credentials.
_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "auth", "signature")
_NOT_SECRET = frozenset({"anon", "use_ssl", "requester_pays", "key_prefix"})


def _is_secret(name: str, value: Any) -> bool:
    lowered = name.lower()
    if lowered not in _NOT_SECRET and any(word in lowered for word in _SECRET_WORDS):
        return True
    if isinstance(value, Mapping):
        return any(_is_secret(str(k), v) for k, v in value.items())
    return False


class Storage:
    """How to reach remote shards, sidecars and manifests.

    Args:
        options: fsspec options (``endpoint_url``, ``profile``, ``anon``, ``client_kwargs``,
            ...). Options that hold credentials (names with key, secret, token, password,
            credential, auth) are kept out of pickles, ``repr`` and errors; they reach
            forked DataLoader workers but not spawned ones.
        credentials: a function returning more options (typically the secrets), called in
            each process when it first opens a remote file. It pickles by reference, so it
            must be importable (a module-level function).
        retry: the retry policy for transient failures.
        block_size: bytes per ranged read.
        prefetch: blocks fetched ahead of the reader in a background thread (0: none).
            Memory per reader: at most ``(1 + 2 * prefetch) * block_size`` (the current
            shard and the start of the next).
        cache_dir: cache whole remote shards here (see ``tarstream.cache.ShardCache``).
        cache_limit: the cache's size limit in bytes (None: no limit).
        cache_verify: "stat" checks a cached shard's size and modification time against
            what was recorded when its checksum was verified; "checksum" re-hashes it on
            every use.
    """

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        credentials: Callable[[], Mapping[str, Any]] | None = None,
        retry: Retry | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        prefetch: int = 2,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | None = None,
        cache_verify: str = "stat",
    ) -> None:
        if block_size < 4096:
            raise ValueError(f"block_size must be >= 4096, got {block_size}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if credentials is not None and not callable(credentials):
            raise TypeError("credentials must be a function returning a dict of options")
        options = dict(options or {})
        self.options = {k: v for k, v in options.items() if not _is_secret(k, v)}
        self._secrets: dict[str, Any] | None = {
            k: v for k, v in options.items() if _is_secret(k, v)
        }
        self._secret_names = sorted(self._secrets)
        self.credentials = credentials
        self.retry = retry if retry is not None else Retry()
        self.block_size = block_size
        self.prefetch = prefetch
        self.cache: ShardCache | None = None
        if cache_dir is not None:
            from .cache import ShardCache

            self.cache = ShardCache(cache_dir, limit=cache_limit, verify=cache_verify)
        elif cache_limit is not None:
            raise ValueError("cache_limit needs cache_dir")
        self._local = _ProcessLocal()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_secrets"] = None  # never pickled: a spawned process must get them anew
        state["_local"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = _ProcessLocal()

    def __repr__(self) -> str:
        parts = [f"options={self.options!r}"]
        if self._secret_names:
            parts.append(f"secrets=[{', '.join(self._secret_names)}: ***]")
        if self.credentials is not None:
            name = getattr(self.credentials, "__qualname__", type(self.credentials).__name__)
            parts.append(f"credentials={getattr(self.credentials, '__module__', '?')}.{name}")
        if self.cache is not None:
            parts.append(f"cache={self.cache!r}")
        return f"Storage({', '.join(parts)})"

    def filesystem(self, url: str) -> tuple[Any, str]:
        """Return the fsspec filesystem for ``url`` and the path within it."""
        import fsspec.core

        if self._secrets is None and self._secret_names:
            raise StorageError(
                f"{redact_url(url)}: the storage options {self._secret_names} hold credentials, "
                "which are not sent to other processes (spawned DataLoader workers); pass them "
                "through credentials=FUNCTION (an importable function), a profile, or the "
                "environment"
            )
        options = dict(self.options)
        options.update(self._secrets or {})
        if self.credentials is not None:
            options.update(self.credentials())
        return fsspec.core.url_to_fs(url, **options)  # type: ignore[no-any-return]

    def executor(self) -> ThreadPoolExecutor:
        """This process's background fetch threads (made on first use, anew after fork)."""
        return self._local.executor()


class _ProcessLocal:
    """Things that belong to one process: the fetch threads."""

    def __init__(self) -> None:
        self._pid = -1
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="tarstream-fetch")
                self._pid = os.getpid()
            return self._executor


class RemoteInput(io.RawIOBase):
    """Read a remote object sequentially in retried blocks, fetched ahead in the background.

    Seeking is supported (it drops the blocks fetched ahead). Where the object's size is
    unknown (an HTTP server without Content-Length) it is streamed, and a retry reopens it
    and skips to the byte reached.
    """

    def __init__(
        self, url: str, storage: Storage, *, start: int = 0, prefetch: int | None = None
    ) -> None:
        super().__init__()
        self.url = url
        self.storage = storage
        self.prefetch = storage.prefetch if prefetch is None else prefetch
        self._lock = threading.Lock()  # one fetch at a time uses the file object
        self._rng = random.Random()
        self._file: Any = None
        self._file_pos = 0
        self._identity: tuple[Any, ...] | None = None
        self.size: int | None = None
        self._pos = start
        self._block = b""
        self._block_start = start
        self._ahead: deque[tuple[int, Future[bytes]]] = deque()
        self._next_fetch = start
        self._stream_end: int | None = None
        self._closing = False  # set by close(): a fetch still running stops at its next try
        self._fill_ahead()  # starts opening the object and fetching its first block

    # -- the background side (called with the lock held) ------------------------------------
    def _reopen(self, position: int) -> None:
        self._close_file()
        fs, path = self.storage.filesystem(self.url)
        f = fs.open(path, "rb", block_size=self.storage.block_size, cache_type="none")
        details = getattr(f, "details", None) or {}
        size = getattr(f, "size", None)
        identity = (size, details.get("ETag"), details.get("VersionId"))
        if self._identity is None:
            self._identity, self.size = identity, size
        elif identity != self._identity:
            f.close()
            raise ShardChangedError(
                f"object changed during the read (size, ETag, version were {self._identity}, "
                f"now {identity})",
                shard=self.url,
                offset=position,
            )
        self._file, self._file_pos = f, 0
        self._move_to(position)

    def _move_to(self, position: int) -> None:
        if self.size is not None:
            self._file.seek(position)
        elif position < self._file_pos:  # a stream cannot go back: start it again
            self._reopen(position)
            return
        else:  # a stream: read up to the byte reached
            while self._file_pos < position:
                got = len(self._file.read(min(position - self._file_pos, 1 << 20)))
                if not got:
                    raise ConnectionError("stream ended before the byte reached")
                self._file_pos += got
        self._file_pos = position

    def _fetch(self, start: int, n: int) -> bytes:
        """Bytes ``start:start+n`` (fewer only at the end of the object), retried."""
        parts: list[bytes] = []
        got = 0

        def attempt() -> None:
            nonlocal got
            with self._lock:
                while got < n and not self._closing:
                    position = start + got
                    if self._file is None:
                        self._reopen(position)
                    elif self._file_pos != position:
                        self._move_to(position)
                    if self.size is not None and position >= self.size:
                        return
                    chunk = self._file.read(n - got)
                    self._file_pos += len(chunk)
                    if not chunk:
                        if self.size is None:
                            return  # the end of a stream
                        raise ConnectionError(
                            f"response body ended at byte {position} of {self.size}"
                        )
                    parts.append(chunk)
                    got += len(chunk)

        self._with_retries(f"read at byte {start}", attempt, on_retry=self._drop_file)
        return b"".join(parts)

    def _drop_file(self) -> None:
        with self._lock:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                self._file.close()
            self._file = None

    def _with_retries(
        self, what: str, action: Callable[[], None], on_retry: Callable[[], None] | None = None
    ) -> None:
        retry = self.storage.retry
        for attempt in range(1, retry.attempts + 1):
            try:
                action()
                return
            except ShardError:
                raise
            except Exception as e:
                if type(e).__name__ == "FileExpired":
                    raise ShardChangedError(
                        "object changed during the read (its ETag no longer matches)",
                        shard=self.url,
                    ) from e
                if isinstance(e, FileNotFoundError):
                    raise FileNotFoundError(f"{redact_url(self.url)}: no such object") from e
                if not is_transient(e):
                    raise StorageError(
                        f"{redact_url(self.url)}: {what} failed: {_describe(e)}"
                    ) from e
                if attempt == retry.attempts:
                    raise StorageError(
                        f"{redact_url(self.url)}: {what} failed after {attempt} attempts: "
                        f"{_describe(e)}"
                    ) from e
                if on_retry is not None:
                    on_retry()
                time.sleep(retry.delay(attempt, self._rng))
                if self._closing:
                    return  # closed while waiting: nobody reads this block

    # -- the reader's side ------------------------------------------------------------------
    def _fill_ahead(self) -> None:
        if not self.prefetch:
            return  # blocks are fetched when read, in the reader's thread
        # ``prefetch`` blocks beyond the one being read; until the object is open (and for
        # a stream of unknown size) one block at a time.
        known = self._identity is not None and self.size is not None
        limit = self.prefetch if known else 1
        while len(self._ahead) < limit and (not known or self._next_fetch < (self.size or 0)):
            start, n = self._next_fetch, self.storage.block_size
            self._ahead.append((start, self.storage.executor().submit(self._fetch, start, n)))
            self._next_fetch += n

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        if not self._block_start <= offset <= self._block_start + len(self._block):
            self._cancel_ahead()
            self._block, self._block_start = b"", offset
            self._next_fetch = offset
        self._pos = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all to the end for -1), sliced from the fetched blocks."""
        if size is None or size < 0:
            return self.readall()
        at = self._pos - self._block_start
        if at >= len(self._block):
            if not size or not self._next_block():
                return b""
            at = self._pos - self._block_start
        data = self._block[at : at + size]
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _next_block(self) -> bool:
        end = self.size if self.size is not None else self._stream_end
        if end is not None and self._pos >= end:
            return False
        if not self._ahead:
            self._next_fetch = self._pos
        self._fill_ahead()
        if self._ahead:
            start, future = self._ahead.popleft()
            self._block, self._block_start = future.result(), start
        else:
            start = self._next_fetch
            self._block, self._block_start = self._fetch(start, self.storage.block_size), start
            self._next_fetch += self.storage.block_size
        if len(self._block) < self.storage.block_size and self.size is None:
            self._stream_end = start + len(self._block)  # a short block ends a stream
            self._cancel_ahead()
        self._fill_ahead()
        return bool(self._block) and self._pos < start + len(self._block)

    def _cancel_ahead(self) -> None:
        while self._ahead:
            self._ahead.popleft()[1].cancel()

    def close(self) -> None:
        if not self.closed:
            self._closing = True
            self._cancel_ahead()
            self._block = b""
            self._drop_file()
        super().close()


def _describe(e: BaseException) -> str:
    text = redact_url(str(e)) or type(e).__name__
    return f"{type(e).__name__}: {text}" if not text.startswith(type(e).__name__) else text
