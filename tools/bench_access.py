"""``bench access``: random access (``ShardDataset``) beside sequential streaming.

The small workload (200,000 samples, 20 shards, sidecars): the whole epoch streamed raw by
``TarStream``; ``ds[i]`` for random ``i`` one at a time; ``__getitems__`` of random batches
of 64 (what a DataLoader with ``shuffle=True`` asks for); the same from moto's S3 server
(its own process on 127.0.0.1), where each sample is a ranged request. Then a workload of
one large field (100 KB) and one small one (a class id), read at random whole and with
``fields="cls"``: bytes read per sample, counted at the ranged reads. Rates are samples/s
with CPU ms per 1,000 samples (this process's CPU time), medians of ``--reps`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import workloads
from bench_remote import credentials, moto_endpoint

#: Random samples read per run: locally, and from the S3 server (each a request).
_LOCAL, _REMOTE = 20_000, 1_000


def _run(read: Callable[[], int]) -> tuple[float, float]:
    """(samples/s, CPU ms per 1,000 samples) of one run of ``read``."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = read()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, 1e6 * cpu / n


def _measure(runs: dict[str, Callable[[], int]], reps: int) -> dict[str, Any]:
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up: sidecars loaded, files opened, not counted
        run()
    for _ in range(reps):
        for name, run in runs.items():
            got[name].append(_run(run))
    return {
        name: {
            "samples_per_s": round(statistics.median(r for r, _ in pairs)),
            "cpu_ms_per_1k": round(statistics.median(c for _, c in pairs), 1),
            "runs": [round(r) for r, _ in pairs],
        }
        for name, pairs in got.items()
    }


def _random(ds: Any, n: int, seed: int) -> Callable[[], int]:
    order = np.random.default_rng(seed).integers(0, len(ds), n).tolist()

    def read() -> int:
        for i in order:
            ds[i]
        return n

    return read


def _batches(ds: Any, n: int, seed: int) -> Callable[[], int]:
    order = np.random.default_rng(seed).integers(0, len(ds), n).tolist()

    def read() -> int:
        for start in range(0, n, 64):
            ds.__getitems__(order[start : start + 64])
        return n

    return read


def _large_and_small(directory: Path) -> str:
    import tarstream

    rng = np.random.default_rng(0)
    with tarstream.ShardWriter(str(directory / "l-%06d.tar"), max_samples=500) as w:
        for i in range(2_000):
            w.write({"__key__": f"{i:05d}", "bin": rng.bytes(100_000), "cls": i % 1000})
    return str(directory / "_l.manifest.json")


def _bytes_per_sample(manifest: str, fields: str | None, n: int) -> tuple[float, float]:
    """(bytes read per sample, samples/s) reading ``n`` random samples."""
    import tarstream
    from tarstream.read import access

    counted = [0]
    real = access._Ranges.read_at

    def read_at(self: Any, start: int, size: int) -> bytes:
        data = real(self, start, size)
        counted[0] += len(data)
        return data

    access._Ranges.read_at = read_at  # type: ignore[method-assign]
    try:
        ds = tarstream.ShardDataset(manifest, fields=fields)
        rate, _ = _run(_random(ds, n, 1))
    finally:
        access._Ranges.read_at = real  # type: ignore[method-assign]
    return counted[0] / n, rate


def bench_access(args: argparse.Namespace) -> dict[str, Any]:
    import tarstream

    d = workloads.ensure(args.root, "small") / "tarstream"
    manifest = str(d / "_small.manifest.json")
    local = tarstream.ShardDataset(manifest)

    def stream() -> int:
        return sum(1 for _ in tarstream.TarStream(manifest))

    result = _measure(
        {
            "sequential_stream": stream,
            "random_getitem": _random(local, _LOCAL, 0),
            "random_batches_of_64": _batches(local, _LOCAL, 0),
        },
        args.reps,
    )
    with moto_endpoint(d) as endpoint:
        storage = tarstream.Storage({"endpoint_url": endpoint}, credentials=credentials)
        remote = tarstream.ShardDataset("s3://bench/small/_small.manifest.json", storage=storage)
        s3 = _measure(
            {
                "s3_random_getitem": _random(remote, _REMOTE, 2),
                "s3_random_batches_of_64": _batches(remote, _REMOTE, 2),
            },
            args.reps,
        )
    with tempfile.TemporaryDirectory() as tmp:
        large = _large_and_small(Path(tmp))
        selection = {
            name: dict(zip(("bytes_per_sample", "samples_per_s"), map(round, got), strict=True))
            for name, fields in (("whole_samples", None), ("fields_cls_only", "cls"))
            for got in [_bytes_per_sample(large, fields, 2_000)]
        }
    return {
        "workload": "small, 200,000 samples in 20 shards; random i uniform over the epoch",
        "local_samples_per_run": _LOCAL,
        "s3_samples_per_run": _REMOTE,
        **result,
        **s3,
        "random_vs_sequential": round(
            result["random_getitem"]["samples_per_s"]
            / result["sequential_stream"]["samples_per_s"],
            3,
        ),
        "field_selection": {
            "workload": "2,000 samples of a 100,000-byte field and a class id, random order",
            **selection,
        },
    }
