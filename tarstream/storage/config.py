"""Storage: how to reach remote shards, sidecars and manifests.

A ``Storage`` says how to reach remote URLs (fsspec options, where credentials come from,
retries, block size, read-ahead, an optional local cache). It pickles without secrets:
options that hold credentials stay in the process that was given them, so a spawn worker
gets them only from a ``credentials`` function (pickled by reference and called where files
are opened), from a profile, or from the environment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ArgumentError, StorageError, redact_url
from .cache import ShardCache
from .retry import Retry

__all__ = ["DEFAULT_BLOCK_SIZE", "Storage"]

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
        cache_dir: cache whole remote shards here (see ``tarstream.storage.cache.ShardCache``).
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
            raise ArgumentError("credentials must be a function returning a dict of options")
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
        _with_timeouts(url, options, self.retry.timeout)
        return fsspec.core.url_to_fs(url, **options)  # type: ignore[no-any-return]

    def executor(self) -> ThreadPoolExecutor:
        """This process's background fetch threads (made on first use, anew after fork)."""
        return self._local.executor()

    def without_ranges(self, url: str) -> bool:
        """Whether ``url``'s server was found not to serve byte ranges (in this process)."""
        return _origin(url) in self._local.no_ranges

    def found_without_ranges(self, url: str) -> None:
        """Note that ``url``'s server sends whole objects for ranged reads: its objects are
        streamed from now on, without asking again."""
        self._local.no_ranges.add(_origin(url))


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _with_timeouts(url: str, options: dict[str, Any], timeout: float) -> None:
    """Give the HTTP and S3 backends ``timeout`` for connecting and for each read, where
    the options do not set their own (a stalled server would otherwise hold a try for the
    backend's default, minutes). In a chained URL (``simplecache::s3://...``) the timeouts
    go to the target's options (``options["s3"]``), where fsspec looks for them."""
    layers = url.split("::")
    target = layers[-1]
    protocol = target.split("://", 1)[0] if "://" in target else ""
    if len(layers) > 1 and protocol:
        inner = dict(options.get(protocol) or {})
        _with_timeouts(target, inner, timeout)
        options[protocol] = inner
    elif protocol in ("http", "https"):
        import aiohttp

        client = dict(options.get("client_kwargs") or {})
        client.setdefault(
            "timeout", aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        )
        options["client_kwargs"] = client
    elif protocol in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", timeout)
        config.setdefault("read_timeout", timeout)
        options["config_kwargs"] = config


class _ProcessLocal:
    """Things that belong to one process: the fetch threads."""

    def __init__(self) -> None:
        self._pid = -1
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.no_ranges: set[str] = set()  # servers that send whole objects for a Range

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="tarstream-fetch")
                self._pid = os.getpid()
            return self._executor
