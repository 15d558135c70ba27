"""Remote reads: one object read in retried blocks over fsspec, fetched ahead.

``RemoteInput`` reads one object in blocks of ``block_size`` through fsspec. Each block is
fetched by a background thread up to ``prefetch`` blocks ahead of the reader, so network
time overlaps parsing and decoding; the memory held is at most ``1 + prefetch`` blocks. A
transient failure (connection reset, timeout, a body ending early, 5xx, SlowDown) is retried
with exponential backoff and jitter from the byte already reached, so no byte is read twice
or skipped; a permanent one (403, 404) fails at once. An object that changes during the
read (its ETag or size differs on a retry, or the server refuses a read's If-Match: every
HTTP read carries the ETag seen at open, and s3fs pins its own) raises
``ShardChangedError``: bytes of two versions are never mixed.
"""

from __future__ import annotations

import contextlib
import io
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ..errors import RedactedCause, ShardChangedError, ShardError, StorageError, redact_url
from .byteio import BytesReader
from .config import Storage
from .retry import is_transient

__all__ = ["RemoteInput"]


class RemoteInput(BytesReader):
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
        self._fs: Any = None
        self._file_pos = 0
        self._identity: tuple[Any, ...] | None = None
        self._streamed = False  # read as one stream (a server without byte ranges)
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
        self._fs = fs  # kept while its file is read: tar:// closes its archive when collected
        streamed = self.storage.without_ranges(self.url)
        f, identity = _open_pinned(fs, path, 0 if streamed else self.storage.block_size)
        size = identity[0]
        self._streamed = streamed
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
        if self.size is not None and not self._streamed:
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
        if self._closing:  # closed while this fetch ran (close() could not take the file)
            self._drop_file()
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
        started = time.monotonic()
        for attempt in range(1, retry.attempts + 1):
            try:
                action()
                return
            except ShardError:
                raise
            except Exception as e:
                # Raised below, outside this block: the original (whose message or
                # attributes may hold a URL with credentials) is neither the cause nor the
                # context of what we raise, only its redacted text is.
                error = self._failure(e, what, attempt)
                cause = RedactedCause.of(e)
            wait = retry.delay(attempt, self._rng)
            if error is None and time.monotonic() - started + wait > retry.deadline:
                error = StorageError(
                    f"{redact_url(self.url)}: {what} failed {attempt} times within its "
                    f"deadline of {retry.deadline} s: {cause}"
                )
            if error is not None:
                raise error from cause
            if on_retry is not None:
                on_retry()
            time.sleep(wait)
            if self._closing:
                return  # closed while waiting: nobody reads this block

    def _failure(self, e: Exception, what: str, attempt: int) -> Exception | None:
        """The error to raise for failure ``e`` of try ``attempt`` (None: try again)."""
        url = redact_url(self.url)
        status = _status(e)
        if type(e).__name__ == "FileExpired" or status == 412:  # If-Match refused (S3, HTTP)
            return ShardChangedError(
                "object changed during the read (its ETag no longer matches)", shard=self.url
            )
        ranges_refused = isinstance(e, ValueError) and "support range requests" in str(e)
        if ranges_refused and not self._streamed:
            self.storage.found_without_ranges(self.url)  # streamed from the next try on
            return None
        if status in (401, 403) or isinstance(e, PermissionError):
            return StorageError(f"{url}: {what} refused (access denied): {_describe(e)}")
        if isinstance(e, FileNotFoundError):
            return FileNotFoundError(f"{url}: no such object")
        if not is_transient(e):
            return StorageError(f"{url}: {what} failed: {_describe(e)}")
        if attempt == self.storage.retry.attempts:
            return StorageError(f"{url}: {what} failed after {attempt} attempts: {_describe(e)}")
        return None

    # -- the reader's side ------------------------------------------------------------------
    def read_at(self, start: int, n: int) -> bytes:
        """Bytes ``start:start+n`` (fewer only at the end of the object) in one ranged
        read, retried, pinned to the version first opened; the read position does not
        move (random access)."""
        return self._fetch(start, n)

    def _fill_ahead(self) -> None:
        if not self.prefetch:
            return  # blocks are fetched when read, in the reader's thread
        # ``prefetch`` blocks beyond the one being read; until the object is open (and for
        # a stream of unknown size) one block at a time.
        known = self._identity is not None and self.size is not None
        limit = self.prefetch if known and not self._streamed else 1
        while len(self._ahead) < limit and (not known or self._next_fetch < (self.size or 0)):
            start, n = self._next_fetch, self.storage.block_size
            self._ahead.append((start, self.storage.executor().submit(self._fetch, start, n)))
            self._next_fetch += n

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

    def _next_block(self) -> bool:
        end = self.size if self.size is not None else self._stream_end
        if end is not None and self._pos >= end:
            return False
        if not self._ahead:
            self._next_fetch = self._pos
        self._fill_ahead()
        if self._ahead:
            start, future = self._ahead.popleft()
        else:
            start = self._next_fetch
            # Its own thread, not the pool's: a cache fill running in the pool may be what
            # reads here, and would wait on itself.
            future = _in_thread(self._fetch, start, self.storage.block_size)
            self._next_fetch += self.storage.block_size
        self._block, self._block_start = self._wait(future, start), start
        if len(self._block) < self.storage.block_size and self.size is None:
            self._stream_end = start + len(self._block)  # a short block ends a stream
            self._cancel_ahead()
        self._fill_ahead()
        return bool(self._block) and self._pos < start + len(self._block)

    def _wait(self, future: Future[bytes], start: int) -> bytes:
        """The block ``future`` fetches, or a ``StorageError`` once it has run past the
        deadline: a backend that ignores our timeout (or has none) cannot hang the reader."""
        retry = self.storage.retry
        try:
            return future.result(timeout=retry.deadline + retry.timeout)
        except FutureTimeout:
            pass  # raised outside the handler: no context
        self._closing = True  # the stalled fetch gives up at its next try
        raise StorageError(
            f"{redact_url(self.url)}: read at byte {start} did not finish within the "
            f"deadline of {retry.deadline} s (+ a timeout of {retry.timeout} s)"
        )

    def _cancel_ahead(self) -> None:
        while self._ahead:
            self._ahead.popleft()[1].cancel()

    def close(self) -> None:
        if not self.closed:
            self._closing = True
            self._cancel_ahead()
            self._block = b""
            # A fetch that stalls holds the lock; it closes the file itself when it ends.
            if self._lock.acquire(blocking=False):
                try:
                    self._close_file()
                finally:
                    self._lock.release()
        super().close()


def _in_thread(fetch: Callable[[int, int], bytes], start: int, n: int) -> Future[bytes]:
    """``fetch(start, n)`` run in a thread of its own; its future."""
    future: Future[bytes] = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fetch(start, n))
            except BaseException as e:  # handed to the reader, which raises it
                future.set_exception(e)

    threading.Thread(target=run, daemon=True, name="tarstream-read").start()
    return future


def _open_pinned(fs: Any, path: str, block_size: int) -> tuple[Any, tuple[Any, ...]]:
    """Open ``path`` for reading; return the file and the object's identity (size, ETag,
    version).

    Over HTTP every read of the file is a request of its own, so each carries ``If-Match``
    with the strong ETag seen when it was opened: a server that honours it refuses (412) a
    read of a replaced object instead of sending the new version's bytes. (s3fs pins its
    reads by itself.)
    """
    if "http" not in _protocols(fs):
        # blockcache:: sets the cache type of what it opens itself
        own_cache = {"blockcache", "cached"} & set(_protocols(fs))
        cache: dict[str, Any] = {} if own_cache else {"cache_type": "none"}
        f = fs.open(path, "rb", block_size=block_size, **cache)
        details = getattr(f, "details", None) or {}
        return f, (getattr(f, "size", None), details.get("ETag"), details.get("VersionId"))
    info = fs.info(path)
    etag, size = info.get("ETag"), info.get("size")
    options: dict[str, Any] = {}
    if isinstance(etag, str) and not etag.startswith("W/"):  # a weak ETag cannot pin
        options["headers"] = {**(fs.kwargs.get("headers") or {}), "If-Match": etag}
    ranged = size is not None and info.get("partial", True) and block_size > 0
    f = fs.open(
        path,
        "rb",
        block_size=block_size,
        cache_type="none",
        size=size if ranged else None,
        **options,
    )
    return f, (size, etag, None)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _status(e: BaseException) -> int | None:
    """The HTTP status of a failure or of what caused it (fsspec's HTTP file system turns a
    refused request into FileNotFoundError, from the client's error)."""
    seen = 0
    while e is not None and seen < 5:
        status = getattr(e, "status", None) or getattr(e, "status_code", None)
        if isinstance(status, int):
            return status
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
        seen += 1
    return None


def _describe(e: BaseException) -> str:
    text = redact_url(str(e)) or type(e).__name__
    return f"{type(e).__name__}: {text}" if not text.startswith(type(e).__name__) else text
