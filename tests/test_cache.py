"""The local shard cache: concurrent fills, killed fills, corruption, eviction, bad disks."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import signal
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import tarstream
from tarstream import CacheWarning
from tarstream.errors import SidecarError
from tarstream.storage.cache import ShardCache
from tarstream.storage.config import Storage
from tarstream.storage.retry import Retry

from .conftest import make_samples, write_dataset
from .remote_helpers import JOURNAL

URL = "s3://bucket/train/train-000007.tar"
DATA = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(DATA).hexdigest()


def _writer(data: bytes, *, die_after: int | None = None) -> Any:
    def fill(f: BinaryIO) -> None:
        for i in range(0, len(data), 65536):
            if die_after is not None and i >= die_after:
                os.kill(os.getpid(), signal.SIGKILL)  # a fill killed half way
            f.write(data[i : i + 65536])

    return fill


def _fill_and_read(directory: str, start: Any, out: Any) -> None:
    cache = ShardCache(directory)
    start.wait()
    fills = []

    def fill(f: BinaryIO) -> None:
        fills.append(1)
        _writer(DATA)(f)

    got = cache.open(URL, fill, size=len(DATA), sha256=SHA)
    assert got is not None
    f, _ = got
    with f:
        out.put((hashlib.sha256(f.read()).hexdigest(), len(fills)))


def _leftovers(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if ".partial" in name]


def test_concurrent_fills_from_several_processes_leave_one_verified_entry(
    tmp_path: Path,
) -> None:
    results = _fill_at_once(_fill_and_read, tmp_path, 6)
    assert sum(fills for _, fills in results) == 1  # one process filled, the others waited


def _fill_at_once(target: Any, directory: Path, processes: int) -> list[tuple[str, int]]:
    """Run ``target`` in ``processes`` forked processes released together; check that each
    read the whole shard and that one complete entry and no temporary file remain."""
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=target, args=(str(directory), start, out)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.set()
    results = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert {digest for digest, _ in results} == {SHA}
    entries = ShardCache(directory).entries()
    assert len(entries) == 1 and entries[0][1] == len(DATA)
    assert _leftovers(directory) == []
    return results


def test_a_killed_fill_leaves_nothing_that_is_used_and_is_cleaned_up(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path)
    context = multiprocessing.get_context("fork")
    killed = context.Process(target=cache.open, args=(URL, _writer(DATA, die_after=len(DATA) // 2)))
    killed.start()
    killed.join(timeout=60)
    assert killed.exitcode == -signal.SIGKILL
    assert len(_leftovers(tmp_path)) == 1 and cache.entries() == []
    got = cache.open(URL, _writer(DATA), size=len(DATA), sha256=SHA)
    assert got is not None
    with got[0] as f:
        assert f.read() == DATA
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_entry_is_detected_and_fetched_again(tmp_path: Path, damage: str) -> None:
    cache = ShardCache(tmp_path)
    fills = []

    def fill(f: BinaryIO) -> None:
        fills.append(1)
        f.write(DATA)

    cache.open(URL, fill, size=len(DATA), sha256=SHA)[0].close()  # type: ignore[index]
    entry = cache.path(URL)
    with open(entry, "r+b") as f:
        if damage == "flip":
            f.seek(1000)
            f.write(b"\xff")
        else:
            f.truncate(len(DATA) // 3)
    got = cache.open(URL, fill, size=len(DATA), sha256=SHA)
    assert got is not None
    with got[0] as f:
        assert f.read() == DATA
    assert len(fills) == 2


def test_checksum_verification_catches_damage_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path, verify="checksum")
    cache.open(URL, _writer(DATA), sha256=SHA)[0].close()  # type: ignore[index]
    entry = cache.path(URL)
    st = os.stat(entry)
    with open(entry, "r+b") as f:
        f.write(b"\x00\x01")
    os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns))  # damage the stat check cannot see
    got = cache.open(URL, _writer(DATA), sha256=SHA)
    assert got is not None
    with got[0] as f:
        assert f.read() == DATA


def test_a_fetch_that_disagrees_with_the_sidecar_is_not_cached(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path)
    with pytest.raises(SidecarError, match="differs from the sidecar"):
        cache.open(URL, _writer(DATA[:-1] + b"?"), size=len(DATA), sha256=SHA)
    with pytest.raises(SidecarError, match="fetched 1048575 bytes, the sidecar says 1048576"):
        cache.open(URL, _writer(DATA[:-1]), size=len(DATA))
    assert cache.entries() == [] and _leftovers(tmp_path) == []


def test_entries_are_named_by_the_whole_url(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path)
    a, b = cache.path("s3://one/train-0.tar"), cache.path("s3://two/train-0.tar")
    assert a != b and a.endswith("-train-0.tar") and b.endswith("-train-0.tar")


def test_eviction_keeps_the_cache_within_its_limit_plus_one_shard(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    write_dataset(shards, make_samples(100), max_samples=20)  # 5 shards
    size = max(p.stat().st_size for p in shards.glob("*.tar"))
    limit = int(2.5 * size)
    cache_dir = tmp_path / "cache"
    storage = Storage(cache_dir=cache_dir, cache_limit=limit, retry=Retry(backoff=0))
    stream = tarstream.TarStream(f"flaky://{shards}/_train.manifest.json", storage=storage)
    expected = [s["__key__"] for s in tarstream.TarStream(str(shards / "_train.manifest.json"))]
    for _ in range(2):
        assert [s["__key__"] for s in stream] == expected
        assert storage.cache is not None
        total = sum(size for _, size, _ in storage.cache.entries())
        assert total <= limit + size
        shards = [path for path, _, _ in storage.cache.entries() if path.endswith(".tar")]
        assert len(shards) == 2  # the two most recently used (and sidecars, which are small)
    assert all(
        re.fullmatch(r"[0-9a-f]{32}-train-00000\d\.tar(\.idx)?(\.ok|\.lock)?", name)
        for name in os.listdir(cache_dir)
    )


def test_a_cache_hit_reads_nothing_remote(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(40), max_samples=20)
    JOURNAL.ranges.clear()
    storage = Storage(cache_dir=tmp_path / "cache")
    stream = tarstream.TarStream(f"flaky://{tmp_path}/_train.manifest.json", storage=storage)
    first = [s["__key__"] for s in stream]
    fetched = {path for path, _, _ in JOURNAL.ranges if path.endswith(".tar")}
    assert len(fetched) == 2
    JOURNAL.ranges.clear()
    assert [s["__key__"] for s in stream] == first
    assert JOURNAL.ranges == []  # shards and sidecars came from the cache


def test_a_read_only_cache_directory_falls_back_to_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dataset(tmp_path, make_samples(10), max_samples=10)

    def read_only(*args: Any, **kwargs: Any) -> None:
        raise OSError(30, "Read-only file system")  # EROFS (tests run as root here)

    monkeypatch.setattr("tarstream.storage.cache.os.makedirs", read_only)
    storage = Storage(cache_dir=tmp_path / "cache")
    stream = tarstream.TarStream(f"flaky://{tmp_path}/_train.manifest.json", storage=storage)
    with pytest.warns(CacheWarning, match="Read-only file system"):
        assert len(list(stream)) == 10


def test_a_full_disk_falls_back_to_streaming(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path)

    def fill(f: BinaryIO) -> None:
        raise OSError(28, "No space left on device")

    with pytest.warns(CacheWarning, match="No space left on device"):
        assert cache.open(URL, fill) is None
    assert _leftovers(tmp_path) == []


def _fill_without_locks(directory: str, start: Any, out: Any) -> None:
    import fcntl

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(37, "No locks available")  # ENOLCK, as on some network file systems

    fcntl.flock = no_locks
    _fill_and_read(directory, start, out)


def test_concurrent_fills_without_locking_still_leave_one_complete_entry(tmp_path: Path) -> None:
    _fill_at_once(_fill_without_locks, tmp_path, 4)
