"""Remote shards: a real S3 endpoint on loopback, injected faults, secrets, read-ahead."""

from __future__ import annotations

import http.server
import json
import pickle
import tarfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import tarstream
from tarstream import ShardChangedError, StorageError, TruncatedShardError
from tarstream.storage.config import Storage
from tarstream.storage.remote import RemoteInput
from tarstream.storage.retry import Retry, is_transient

from .conftest import make_samples, write_dataset
from .remote_helpers import (
    JOURNAL,
    Fault,
    http_server,
    moto_server,
    ranged_http_server,
    s3_credentials,
    serve,
    upload,
)

NO_WAIT = Retry(attempts=4, backoff=0.0)


def _rows(stream: Any) -> list[tuple[str, bytes, bytes]]:
    return [(s["__key__"], s["txt"], s["json"]) for s in stream]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """moto's S3 server on 127.0.0.1 holding a 4-shard dataset under s3://data/train/."""
    directory = tmp_path_factory.mktemp("s3-dataset")
    write_dataset(directory, make_samples(120), max_samples=30)
    with moto_server() as endpoint:
        upload(endpoint, "data", directory, "train")
        yield endpoint, directory


def _s3_storage(endpoint: str, **options: Any) -> Storage:
    return Storage({"endpoint_url": endpoint}, credentials=s3_credentials, **options)


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A 3-shard dataset read through the fault-injecting ``flaky://`` file system."""
    write_dataset(tmp_path, make_samples(60), max_samples=20)
    JOURNAL.faults.clear()
    JOURNAL.ranges.clear()
    JOURNAL.replaced.clear()
    JOURNAL.opens = 0
    JOURNAL.release.clear()
    yield "flaky://" + str(tmp_path), tmp_path
    JOURNAL.faults.clear()
    JOURNAL.release.set()  # a stalled read still waiting ends


# -- a real S3 endpoint ------------------------------------------------------------------------
def test_s3_stream_gives_exactly_the_samples_of_the_local_copy(s3: tuple[str, Path]) -> None:
    endpoint, directory = s3
    local = _rows(tarstream.TarStream(str(directory / "_train.manifest.json")))
    storage = _s3_storage(endpoint, block_size=16 << 10)
    assert _rows(tarstream.TarStream("s3://data/train/_train.manifest.json", storage=storage)) == (
        local
    )
    pattern = "s3://data/train/train-{000000..000003}.tar"  # sidecars found beside the shards
    stream = tarstream.TarStream(pattern, storage=storage, seed=5, shuffle_shards=True)
    assert len(stream) == 120
    assert sorted(_rows(stream.shuffle(50))) == sorted(local)


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_s3_stream_through_two_workers(s3: tuple[str, Path], start: str) -> None:
    endpoint, directory = s3
    local = _rows(tarstream.TarStream(str(directory / "_train.manifest.json")))
    stream = tarstream.TarStream(
        "s3://data/train/_train.manifest.json", storage=_s3_storage(endpoint, block_size=16 << 10)
    )
    loader = tarstream.Loader(stream.batch(8), num_workers=2, multiprocessing_context=start)
    got = [row for b in loader for row in zip(b["__key__"], b["txt"], b["json"], strict=True)]
    assert sorted(got) == sorted(local)  # every sample once


def test_s3_missing_object_fails_at_once_naming_it(s3: tuple[str, Path]) -> None:
    endpoint, _ = s3
    storage = _s3_storage(endpoint, retry=Retry(attempts=6, backoff=1.0))
    started = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"s3://data/train/missing-000000\.tar"):
        list(tarstream.TarStream("s3://data/train/missing-000000.tar", storage=storage))
    assert time.monotonic() - started < 5  # not retried


def test_s3_warm_cache_gives_the_same_samples(s3: tuple[str, Path], tmp_path: Path) -> None:
    endpoint, directory = s3
    local = _rows(tarstream.TarStream(str(directory / "_train.manifest.json")))
    storage = _s3_storage(endpoint, cache_dir=tmp_path / "cache")
    stream = tarstream.TarStream("s3://data/train/_train.manifest.json", storage=storage)
    assert _rows(stream) == local
    assert storage.cache is not None
    assert sorted(p.rsplit("-", 1)[-1] for p, _, _ in storage.cache.entries()) == [
        f"{i:06d}.tar{suffix}" for i in range(4) for suffix in ("", ".idx")
    ]  # the shards and their sidecars
    assert _rows(stream) == local  # from the cache


# -- injected faults ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["reset", "short"])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_transient_faults_are_retried_from_the_byte_reached(
    flaky: tuple[str, Path], kind: str, prefetch: int
) -> None:
    url, directory = flaky
    expected = _rows(tarstream.TarStream(str(directory / "_train.manifest.json")))
    shard = str(directory / "train-000001.tar").lstrip("/")
    JOURNAL.faults += [Fault(shard, at=5000, attempts=(1, 2), kind=kind), Fault(shard, at=40000)]
    storage = Storage(retry=NO_WAIT, block_size=8192, prefetch=prefetch)
    got = _rows(tarstream.TarStream(f"{url}/_train.manifest.json", storage=storage))
    assert got == expected  # every sample exactly once, in order
    assert JOURNAL.faults[0].seen >= 3 and JOURNAL.faults[1].seen >= 2  # faults were met


def test_retries_used_up_is_a_storage_error_naming_the_shard(flaky: tuple[str, Path]) -> None:
    url, directory = flaky
    shard = str(directory / "train-000000.tar").lstrip("/")
    JOURNAL.faults.append(Fault(shard, at=100, attempts=(1, 2, 3, 4)))
    storage = Storage(retry=NO_WAIT, block_size=8192)
    with pytest.raises(StorageError, match=r"train-000000\.tar: read at byte 0 failed after 4"):
        list(tarstream.TarStream(f"{url}/_train.manifest.json", storage=storage))


def test_a_permanent_fault_fails_within_seconds(flaky: tuple[str, Path]) -> None:
    url, directory = flaky
    shard = str(directory / "train-000002.tar").lstrip("/")
    JOURNAL.faults.append(Fault(shard, at=0, attempts=(1,), kind="forbidden"))
    storage = Storage(retry=Retry(attempts=6, backoff=2.0), block_size=8192)
    started = time.monotonic()
    with pytest.raises(StorageError, match="403 Forbidden") as caught:
        list(tarstream.TarStream(f"{url}/_train.manifest.json", storage=storage))
    assert time.monotonic() - started < 5
    assert "train-000002.tar" in str(caught.value)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_backend_that_never_returns_fails_at_the_deadline(
    flaky: tuple[str, Path], prefetch: int
) -> None:
    # The flaky backend takes no timeout: only tarstream's own bound ends the wait.
    url, directory = flaky
    shard = str(directory / "train-000001.tar").lstrip("/")
    JOURNAL.faults.append(Fault(shard, at=9000, kind="stall"))
    retry = Retry(attempts=3, backoff=0, timeout=0.2, deadline=0.5)
    storage = Storage(retry=retry, block_size=8192, prefetch=prefetch)
    stream = tarstream.TarStream(f"{url}/_train.manifest.json", storage=storage)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"train-000001\.tar: read at byte 8192 did not finish"):
        list(stream)
    assert time.monotonic() - started < 5


def test_an_object_replaced_during_the_read_is_an_error_not_mixed_bytes(
    flaky: tuple[str, Path],
) -> None:
    url, directory = flaky
    shard = str(directory / "train-000001.tar").lstrip("/")
    JOURNAL.faults.append(Fault(shard, at=20000, kind="change"))
    storage = Storage(retry=NO_WAIT, block_size=8192)
    seen = []
    with pytest.raises(ShardChangedError, match="object changed during the read"):
        for sample in tarstream.TarStream(f"{url}/_train.manifest.json", storage=storage):
            seen.append(sample["__key__"])
    assert seen == [f"s/{i:05d}" for i in range(len(seen))]  # nothing after the change


def test_read_ahead_holds_at_most_prefetch_blocks_beyond_the_reader(
    flaky: tuple[str, Path],
) -> None:
    url, directory = flaky
    block = 4096
    f = RemoteInput(f"{url}/train-000000.tar", Storage(block_size=block, prefetch=2))
    with f:
        first = f.read(100)
        for _, fetching in list(f._ahead):
            fetching.result()
        furthest = max(end for _, _, end in JOURNAL.ranges)
        assert furthest == 3 * block  # the block being read and two ahead, no more
        rest = f.read()
    assert first + rest == (directory / "train-000000.tar").read_bytes()


def test_the_next_remote_shard_is_opened_while_the_current_one_is_read(
    flaky: tuple[str, Path],
) -> None:
    url, directory = flaky
    storage = Storage(block_size=4096, prefetch=1)
    list(tarstream.TarStream(f"{url}/train-{{000000..000002}}.tar", storage=storage))
    order = [path.rsplit("/", 1)[-1] for path, start, _ in JOURNAL.ranges]
    last_of_first = len(order) - 1 - order[::-1].index("train-000000.tar")
    assert (directory / "train-000000.tar").stat().st_size > 4 * 4096
    assert "train-000001.tar" in order[:last_of_first]  # fetched while shard 0 was read


def test_truncation_without_content_length_is_caught_by_the_sidecar(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(30), max_samples=15)
    size = (tmp_path / "train-000001.tar").stat().st_size
    with http_server(tmp_path, cut={"train-000001.tar": size - 3000}) as base:
        stream = tarstream.TarStream(
            f"{base}/_train.manifest.json", storage=Storage(retry=NO_WAIT, block_size=8192)
        )
        with pytest.raises(TruncatedShardError, match=r"train-000001\.tar"):
            list(stream)
        intact = tarstream.TarStream(
            f"{base}/train-000000.tar", storage=Storage(retry=NO_WAIT, block_size=8192)
        )
        assert [s["__key__"] for s in intact] == [f"s/{i:05d}" for i in range(15)]


def test_transient_and_permanent_errors_are_told_apart() -> None:
    assert is_transient(ConnectionResetError(104, "reset"))
    assert is_transient(TimeoutError())
    assert is_transient(OSError(16, "SlowDown"))  # s3fs maps SlowDown/503 to EBUSY
    assert not is_transient(PermissionError("403"))
    assert not is_transient(FileNotFoundError("404"))
    assert not is_transient(ValueError("bad"))


# -- secrets -----------------------------------------------------------------------------------
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-EXAMPLEKEY"


def test_secrets_stay_out_of_pickles_state_repr_and_errors(flaky: tuple[str, Path]) -> None:
    url, _ = flaky
    storage = Storage(
        {"key": "AKIAEXAMPLE", "secret": SECRET, "client_kwargs": {"region_name": "x"}},
        retry=NO_WAIT,
    )
    stream = tarstream.TarStream(f"{url}/_train.manifest.json", storage=storage).shuffle(5)
    it = iter(stream)
    next(it)
    texts = [
        pickle.dumps(stream),
        json.dumps(stream.state_dict()).encode(),
        repr(stream).encode(),
        repr(storage).encode(),
    ]
    with pytest.raises(FileNotFoundError) as caught:
        list(tarstream.TarStream("flaky:///no/such-000000.tar", storage=storage))
    texts.append(str(caught.value).encode())
    for text in texts:
        assert SECRET.encode() not in text and b"AKIAEXAMPLE" not in text
    assert "secrets=[key, secret: ***]" in repr(storage)


def test_secrets_do_not_reach_a_process_that_unpickles_the_storage() -> None:
    storage = pickle.loads(pickle.dumps(Storage({"secret": SECRET})))
    with pytest.raises(StorageError, match=r"credentials=FUNCTION"):
        storage.filesystem("s3://bucket/x.tar")


def test_credentials_in_a_url_are_redacted_in_samples_and_errors(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(5), max_samples=5)
    with http_server(tmp_path) as base:
        secret_url = base.replace("http://", f"http://user:{SECRET}@") + "/train-000000.tar"
        stream = tarstream.TarStream(secret_url, storage=Storage(retry=NO_WAIT))
        urls = {s["__url__"] for s in stream}
        assert urls == {secret_url.replace(f"user:{SECRET}", "***")}
        with pytest.raises(FileNotFoundError) as caught:
            list(tarstream.TarStream(secret_url.replace("000000", "000009"), storage=Storage()))
        assert SECRET not in str(caught.value)


def test_a_refused_request_is_a_storage_error_with_a_redacted_cause_and_no_context(
    tmp_path: Path,
) -> None:
    write_dataset(tmp_path, make_samples(5), max_samples=5)
    with http_server(tmp_path, forbidden=frozenset({"train-000000.tar"})) as base:
        secret_url = base.replace("http://", f"http://user:{SECRET}@") + "/train-000000.tar"
        with pytest.raises(StorageError, match="access denied") as caught:
            list(tarstream.TarStream(secret_url, storage=Storage(retry=NO_WAIT)))
    error = caught.value
    assert not isinstance(error, FileNotFoundError)
    assert isinstance(error.__cause__, tarstream.RedactedCause)
    assert error.__context__ is None or error.__context__ is error.__cause__
    shown = "".join(traceback.format_exception(error))
    assert SECRET not in shown and SECRET not in repr(error.__cause__.args)
    assert "***@127.0.0.1" in str(error)
    copy = pickle.loads(pickle.dumps(error.__cause__))
    assert str(copy) == str(error.__cause__)


def test_an_http_object_replaced_between_two_ranged_reads_is_never_mixed(
    tmp_path: Path,
) -> None:
    # Two versions of one shard, of the same size: only the ETag tells them apart.
    write_dataset(tmp_path / "a", make_samples(40), max_samples=40)
    write_dataset(tmp_path / "b", make_samples(40, prefix="t"), max_samples=40)
    old, new = (tmp_path / v / "train-000000.tar" for v in "ab")
    assert old.stat().st_size == new.stat().st_size
    with ranged_http_server({"train.tar": old.read_bytes()}) as (base, objects):
        storage = Storage(block_size=4096, prefetch=0, retry=NO_WAIT)
        stream = iter(tarstream.TarStream(f"{base}/train.tar", storage=storage, read_size=4096))
        first = [next(stream)["__key__"] for _ in range(3)]
        objects["train.tar"] = new.read_bytes()  # replaced while it is read
        with pytest.raises(ShardChangedError, match="ETag no longer matches") as caught:
            first.extend(s["__key__"] for s in stream)
    assert all(key.startswith("s/") for key in first)  # nothing of the new version
    assert caught.value.shard == f"{base}/train.tar"


def test_storage_options_are_validated() -> None:
    with pytest.raises(ValueError, match="block_size must be >= 4096, got 10"):
        Storage(block_size=10)
    with pytest.raises(ValueError, match="prefetch must be >= 0, got -1"):
        Storage(prefetch=-1)
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="cache_limit needs cache_dir"):
        Storage(cache_limit=10)


@contextmanager
def _stalling_server(data: bytes) -> Iterator[str]:
    """A server that answers HEAD with the size and never sends a body for GET (each GET
    waits for the test to end)."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            release.wait()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve(Handler) as base:
        try:
            yield base
        finally:
            release.set()


@pytest.mark.parametrize(
    ("retry", "said", "chain"),
    [
        (Retry(attempts=3, backoff=0, timeout=0.3), "failed after 3 attempts", ""),
        (Retry(attempts=1000, backoff=0.05, timeout=0.2, deadline=1.0), "deadline of 1.0 s", ""),
        # Chained: the timeout reaches the http layer under simplecache (else 600 s); its
        # stalled download makes fsspec's exists() false, so fsspec says the file is missing.
        (Retry(attempts=3, backoff=0, timeout=0.3), "no such object", "simplecache::"),
    ],
)
def test_a_stalled_server_fails_within_the_timeouts_and_deadline(
    tmp_path: Path, retry: Retry, said: str, chain: str
) -> None:
    write_dataset(tmp_path, make_samples(5), max_samples=5)
    data = (tmp_path / "train-000000.tar").read_bytes()
    with _stalling_server(data) as base:
        storage = Storage(retry=retry, prefetch=0)
        started = time.monotonic()
        with pytest.raises((StorageError, FileNotFoundError), match=said):
            list(tarstream.TarStream(f"{chain}{base}/train-000000.tar", storage=storage))
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("cached", [False, True])
def test_a_server_without_byte_ranges_is_streamed(tmp_path: Path, cached: bool) -> None:
    # http.server's SimpleHTTPRequestHandler sends whole files and ignores Range, as many
    # servers of small files do.
    write_dataset(tmp_path / "d", make_samples(60), max_samples=20)
    local = _rows(tarstream.TarStream(str(tmp_path / "d" / "_train.manifest.json")))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path / "d"), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve(Handler) as base:
        options: dict[str, Any] = {"cache_dir": tmp_path / "cache"} if cached else {}
        storage = Storage(block_size=4096, retry=NO_WAIT, **options)
        stream = tarstream.TarStream(f"{base}/_train.manifest.json", storage=storage)
        assert _rows(stream) == local
        assert storage.without_ranges(base)  # found once, for the server
        assert _rows(stream) == local


@pytest.mark.parametrize("chain", ["blockcache::", "filecache::", "simplecache::", "tar"])
def test_chained_urls_read_the_same_samples(tmp_path: Path, chain: str) -> None:
    write_dataset(tmp_path, make_samples(30), max_samples=10)
    local = _rows(tarstream.TarStream(str(tmp_path / "_train.manifest.json")))
    names = [f"train-{i:06d}.tar" for i in range(3)]
    if chain == "tar":  # the shards inside one archive
        with tarfile.open(tmp_path / "outer.tar", "w") as outer:
            for name in names:
                outer.add(tmp_path / name, arcname=name)
        urls = [f"tar://{name}::file://{tmp_path}/outer.tar" for name in names]
    else:
        urls = [f"{chain}file://{tmp_path}/{name}" for name in names]
    storage = Storage(retry=NO_WAIT)
    assert _rows(tarstream.TarStream(urls, storage=storage, sidecars="ignore")) == local
