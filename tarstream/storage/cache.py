"""A local cache of whole remote shards, shared safely by processes on one machine.

An entry is named by a hash of the shard's full URL (shards with the same base name in
different places never collide), followed by the base name for people looking at the
directory. It is filled through a temporary file in the cache directory, verified (the
sidecar's size and SHA-256 where known, else the object's size), then renamed into place,
and a record of its size, modification time and checksum is written beside it. A file lock
per entry lets one process fill it while the others (ranks and DataLoader workers asking
for the same shard) wait and then use it; where locking is unavailable every process fills
its own temporary file and the renames leave one complete entry.

An entry whose size or modification time differs from its record (``verify="stat"``), or
whose checksum does (``verify="checksum"``), is refetched. After a fill the least recently
used entries are evicted until the cache is within ``limit`` (the entry just filled is
kept, so the cache holds at most ``limit`` plus one shard); only files this cache made are
removed. If the cache directory cannot be written (full or read-only disk) the shard is
streamed instead, with a ``CacheWarning``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ..errors import CacheWarning, SidecarError, redact_url

__all__ = ["ShardCache"]

_RECORD = ".ok"
_ENTRY = re.compile(r"^[0-9a-f]{32}-[^/]*$")
_UNWRITABLE = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT})


class ShardCache:
    """Whole shards cached under ``directory``; see the module docstring.

    Args:
        limit: the cache's size limit in bytes (None: no limit).
        verify: "stat" or "checksum" (how a cached entry is checked before each use).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, limit: int | None = None, verify: str = "stat"
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if verify not in ("stat", "checksum"):
            raise ValueError(f"verify must be 'stat' or 'checksum', got {verify!r}")
        self.directory = os.fspath(directory)
        self.limit = limit
        self.verify = verify

    def __repr__(self) -> str:
        return f"ShardCache({self.directory!r}, limit={self.limit})"

    def path(self, url: str) -> str:
        """Where the entry for ``url`` lives."""
        digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[-80:]
        return os.path.join(self.directory, f"{digest}-{base}")

    def open(
        self,
        url: str,
        fill: Callable[[BinaryIO], None],
        *,
        size: int | None = None,
        sha256: str | None = None,
    ) -> tuple[BinaryIO, int] | None:
        """Return the cached shard ``url`` opened for reading, and its size.

        ``fill(f)`` writes the shard's bytes to ``f`` when the entry is missing or fails
        its check. ``size`` and ``sha256`` (from the sidecar) verify a fill. Returns None,
        with a ``CacheWarning``, where the cache directory cannot be written.

        Raises:
            SidecarError: the fetched shard does not match ``size`` or ``sha256``.
        """
        entry = self.path(url)
        for _ in range(3):  # an entry evicted by another process between check and open
            try:
                if not self._valid(entry):
                    with self._locked(entry) as exclusive:
                        if not self._valid(entry):
                            self._fill(url, entry, fill, size, sha256, exclusive)
                try:
                    f = open(entry, "rb", buffering=0)  # noqa: SIM115 - the caller closes it
                except FileNotFoundError:
                    continue
            except OSError as e:
                if e.errno not in _UNWRITABLE:
                    raise
                warnings.warn(
                    f"cannot use the cache {self.directory!r} ({e.strerror}); streaming "
                    f"{redact_url(url)}",
                    CacheWarning,
                    stacklevel=2,
                )
                return None
            with contextlib.suppress(OSError):
                os.utime(entry + _RECORD)  # the record's mtime is the entry's last use
            return f, os.fstat(f.fileno()).st_size
        raise FileNotFoundError(f"{redact_url(url)}: cache entry vanished three times")

    # -- entries ----------------------------------------------------------------------------
    def _valid(self, entry: str) -> bool:
        try:
            with open(entry + _RECORD, "rb") as f:
                record = json.loads(f.read())
            st = os.stat(entry)
        except (OSError, ValueError):
            return False
        if st.st_size != record.get("size") or st.st_mtime_ns != record.get("mtime_ns"):
            return False
        if self.verify == "checksum":
            with open(entry, "rb") as f:
                return bool(_sha256(f) == record.get("sha256"))
        return True

    def _fill(
        self,
        url: str,
        entry: str,
        fill: Callable[[BinaryIO], None],
        size: int | None,
        sha256: str | None,
        exclusive: bool,
    ) -> None:
        if exclusive:  # no one else is filling this entry: temporary files are a killed fill's
            for stale in glob.glob(glob.escape(self._partial_prefix(entry)) + "*"):
                with contextlib.suppress(OSError):
                    os.remove(stale)
        for old in (entry + _RECORD, entry):
            with contextlib.suppress(FileNotFoundError):
                os.remove(old)
        temp = f"{self._partial_prefix(entry)}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            with open(temp, "w+b") as f:
                fill(f)
                f.flush()
                f.seek(0)
                digest = _sha256(f)
                got = f.tell()
                os.fsync(f.fileno())
            if size is not None and got != size:
                raise SidecarError(
                    f"fetched {got} bytes, the sidecar says {size}", shard=url, offset=got
                )
            if sha256 is not None and digest != sha256:
                raise SidecarError(
                    f"fetched shard's SHA-256 {digest[:16]}... differs from the sidecar's "
                    f"{sha256[:16]}... (shard replaced or sidecar stale)",
                    shard=url,
                )
            os.replace(temp, entry)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temp)
            raise
        st = os.stat(entry)
        record = {"url": redact_url(url), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        record["sha256"] = digest
        temp_record = temp + _RECORD
        with open(temp_record, "w") as out:
            json.dump(record, out)
        os.replace(temp_record, entry + _RECORD)
        self.evict(keep=entry)

    @staticmethod
    def _partial_prefix(entry: str) -> str:
        directory, base = os.path.split(entry)
        return os.path.join(directory, f".{base}.partial-")

    @contextlib.contextmanager
    def _locked(self, entry: str) -> Iterator[bool]:
        """Hold the entry's file lock; yield whether it is held (False: no locking here,
        and concurrent fills each rename a complete file of their own)."""
        os.makedirs(self.directory, exist_ok=True)
        try:
            import fcntl
        except ImportError:
            yield False
            return
        # Lock files are never removed, so every process locks the same file.
        with open(entry + ".lock", "a+b") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            except OSError:
                yield False
                return
            yield True

    def entries(self) -> list[tuple[str, int, float]]:
        """(path, size, last use) of every complete entry, least recently used first."""
        out = []
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            if not _ENTRY.match(name) or name.endswith((_RECORD, ".lock")):
                continue
            path = os.path.join(self.directory, name)
            try:
                size = os.stat(path).st_size
                used = os.stat(path + _RECORD).st_mtime
            except OSError:
                continue
            out.append((path, size, used))
        return sorted(out, key=lambda e: e[2])

    def evict(self, *, keep: str | None = None) -> None:
        """Remove least recently used entries until the cache is within its limit."""
        if self.limit is None:
            return
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.limit:
                break
            if path == keep:
                continue
            for name in (path + _RECORD, path):
                with contextlib.suppress(OSError):
                    os.remove(name)
            total -= size


def _sha256(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(8 << 20):
        digest.update(chunk)
    return digest.hexdigest()
