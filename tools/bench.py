#!/usr/bin/env python3
"""Benchmarks: tarstream beside webdataset 1.0.2 in the same run, printing JSON.

    python3 tools/dev.py bench read  [--reps 5] [--wds-shards 2]
    python3 tools/dev.py bench write [--reps 3]

``read``: the small workload streamed raw in one process: tarstream with sidecars, tarstream
on plain webdataset shards (no sidecars), and webdataset on the same plain shards. Runs
alternate between readers; medians are reported. webdataset reads ``--wds-shards`` shards
per repetition (it is ~50x slower), tarstream all 20; rates are per sample. One warm-up
pass of each reader runs first and is not counted.

``write``: ShardWriter against webdataset's ShardWriter writing the images workload (20,000
JPEGs already in memory) to a temporary directory.

Workloads are generated once (seeded) under .bench-cache/ or $TARSTREAM_BENCH_DIR.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads


def _count(samples: Iterable[Any]) -> int:
    n = 0
    for _ in samples:
        n += 1
    return n


def _timed(run: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    n = run()
    return n, time.perf_counter() - start


def _summary(rates: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(rates)), "runs": [round(r) for r in rates]}


def bench_read(args: argparse.Namespace) -> dict[str, Any]:
    import webdataset as wds

    import tarstream

    d = workloads.ensure(args.root, "small")
    with_sidecars = workloads.shard_pattern(d, "tarstream")
    plain = workloads.shard_pattern(d, "webdataset")
    plain_subset = workloads.shard_pattern(d, "webdataset", args.wds_shards)
    readers: dict[str, Callable[[], int]] = {
        "tarstream_sidecars": lambda: _count(tarstream.TarStream(with_sidecars)),
        "tarstream_plain": lambda: _count(tarstream.TarStream(plain)),
        "webdataset": lambda: _count(wds.WebDataset(plain_subset, shardshuffle=False)),
    }
    rates: dict[str, list[float]] = {name: [] for name in readers}
    counts: dict[str, int] = {}
    for run in readers.values():  # warm-up: first touches of fresh memory are slow here
        run()
    for _ in range(args.reps):
        for name, run in readers.items():
            n, seconds = _timed(run)
            counts[name] = n
            rates[name].append(n / seconds)
    result = {name: {"samples": counts[name], **_summary(r)} for name, r in rates.items()}
    peer = result["webdataset"]["median"]
    return {
        "workload": "small",
        "unit": "samples/s",
        "warmup_runs_excluded": 1,
        **result,
        "ratio_vs_webdataset": {
            "tarstream_sidecars": round(result["tarstream_sidecars"]["median"] / peer, 1),
            "tarstream_plain": round(result["tarstream_plain"]["median"] / peer, 1),
        },
    }


def bench_write(args: argparse.Namespace) -> dict[str, Any]:
    import webdataset as wds

    import tarstream

    workloads.ensure(args.root, "images")
    samples = list(tarstream.TarStream(workloads.shard_pattern(args.root / "images", "tarstream")))
    for s in samples:
        del s["__url__"]
    per_shard = -(-len(samples) // workloads.SHARDS)

    def write_tarstream(out: Path) -> int:
        with tarstream.ShardWriter(str(out / "t-%06d.tar"), max_samples=per_shard) as w:
            for s in samples:
                w.write(s)
        return len(samples)

    def write_webdataset(out: Path) -> int:
        with wds.ShardWriter(str(out / "w-%06d.tar"), maxcount=per_shard, verbose=0) as w:
            for s in samples:
                w.write(s)
        return len(samples)

    writers = {"tarstream": write_tarstream, "webdataset": write_webdataset}
    rates: dict[str, list[float]] = {name: [] for name in writers}
    for _ in range(args.reps):
        for name, write in writers.items():
            with tempfile.TemporaryDirectory(dir=args.root) as tmp:
                n, seconds = _timed(lambda w=write, t=tmp: w(Path(t)))  # type: ignore[misc]
                rates[name].append(n / seconds)
    result = {name: _summary(r) for name, r in rates.items()}
    return {
        "workload": "images",
        "unit": "samples/s written",
        "samples": len(samples),
        **result,
        "ratio_vs_webdataset": round(
            result["tarstream"]["median"] / result["webdataset"]["median"], 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("benchmark", choices=["read", "write"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--wds-shards", type=int, default=2)
    parser.add_argument("--root", type=Path, default=workloads.default_root())
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    result = {"read": bench_read, "write": bench_write}[args.benchmark](args)
    result["machine"] = {"python": platform.python_version(), "cpus": __import__("os").cpu_count()}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
