"""``bench remote``: the small workload from a local S3 endpoint beside local disk.

moto's S3 server runs in its own process on 127.0.0.1 (a free port) and holds the 20
tarstream shards, their sidecars and the manifest. Each repetition streams the whole epoch
raw, one process, alternating: from local disk; from S3 with read-ahead (``prefetch=2``,
8 MiB blocks); from S3 without it (``prefetch=0``); and from S3 through a warm local cache
(filled by a warm-up pass). Rates are samples/s, medians over the repetitions; one
warm-up pass of each runs first and is not counted.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import workloads

_KEYS = {"key": "bench", "secret": "bench-secret"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto server exited with status {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # the server is starting; it offers nothing to wait on
    raise RuntimeError("moto server did not start within 60 s")


def _upload(endpoint: str, directory: Path) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=_KEYS["key"],
        aws_secret_access_key=_KEYS["secret"],
    )
    s3.create_bucket(Bucket="bench")
    for path in sorted(directory.rglob("*")):  # the shards, _small.manifest.json, .tarstream/
        if path.is_file():
            s3.upload_file(str(path), "bench", f"small/{path.relative_to(directory).as_posix()}")


def credentials() -> dict[str, str]:
    return dict(_KEYS)


@contextmanager
def moto_endpoint(directory: Path) -> Iterator[str]:
    """moto's S3 server in its own process on 127.0.0.1, holding ``directory`` under
    s3://bench/small/; yields its endpoint URL."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port, server)
        endpoint = f"http://127.0.0.1:{port}"
        _upload(endpoint, directory)
        yield endpoint
    finally:
        server.terminate()
        server.wait()


def bench_remote(args: argparse.Namespace) -> dict[str, Any]:
    import tarstream

    d = workloads.ensure(args.root, "small") / "tarstream"
    size = sum(p.stat().st_size for p in d.glob("*.tar"))
    with moto_endpoint(d) as endpoint:
        manifest = "s3://bench/small/_small.manifest.json"
        cache_dir = tempfile.mkdtemp(prefix="tarstream-bench-cache-")

        def s3(**options: Any) -> Callable[[], int]:
            storage = tarstream.Storage(
                {"endpoint_url": endpoint}, credentials=credentials, **options
            )
            return lambda: _count(tarstream.TarStream(manifest, storage=storage))

        runs: dict[str, Callable[[], int]] = {
            "local_disk": lambda: _count(tarstream.TarStream(str(d / "_small.manifest.json"))),
            "s3_prefetch": s3(prefetch=2),
            "s3_no_prefetch": s3(prefetch=0),
            "s3_warm_cache": s3(cache_dir=cache_dir),
        }
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for run in runs.values():  # warm-up; it also fills the cache
            run()
        for _ in range(args.reps):
            for name, run in runs.items():
                start = time.perf_counter()
                n = run()
                rates[name].append(n / (time.perf_counter() - start))
    result: dict[str, Any] = {
        name: {"median": round(statistics.median(r)), "runs": [round(x) for x in r]}
        for name, r in rates.items()
    }
    disk = result["local_disk"]["median"]
    return {
        "workload": f"small, 200,000 samples, 20 shards, {size / 1e6:.0f} MB",
        "unit": "samples/s",
        "server": "moto S3 server in its own process on 127.0.0.1",
        "warmup_runs_excluded": 1,
        **result,
        "ratio_vs_local_disk": {
            name: round(result[name]["median"] / disk, 3) for name in result if name != "local_disk"
        },
        "cache_dir_bytes": sum(
            os.path.getsize(os.path.join(cache_dir, f)) for f in os.listdir(cache_dir)
        ),
    }


def _count(samples: Any) -> int:
    n = 0
    for _ in samples:
        n += 1
    return n
