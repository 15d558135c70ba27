#!/usr/bin/env python3
"""Benchmarks: tarstream beside webdataset 1.0.2 in the same run, printing JSON.

    python3 tools/dev.py bench read  [--reps 5] [--wds-shards 2]
    python3 tools/dev.py bench write [--reps 3]
    python3 tools/dev.py bench pipeline [--reps 3] [--image-shards 4]
    python3 tools/dev.py bench resume [--reps 3]
    python3 tools/dev.py bench remote [--reps 3]
    python3 tools/dev.py bench decode [--reps 3] [--image-shards 4]
    python3 tools/dev.py bench access [--reps 3]
    python3 tools/dev.py bench plan [--reps 3] [--shards 100000] [--ranks 1024] [--workers 8]
    python3 tools/dev.py bench interleave [--reps 5] [--image-shards 4]

``read``: the small workload streamed raw in one process: tarstream with sidecars (each
sample checked against its checksum, the default, and with ``verify=False``), tarstream
on plain webdataset shards (no sidecars), and webdataset on the same plain shards. Runs
alternate between readers; medians are reported. webdataset reads ``--wds-shards`` shards
per repetition (it is ~50x slower), tarstream all 20; rates are per sample. One warm-up
pass of each reader runs first and is not counted.

``write``: ShardWriter (durable: each shard, sidecar and the manifest fsynced before their
renames; and with ``fsync=False``) against webdataset's ShardWriter writing the images
workload (20,000 JPEGs already in memory) to a temporary directory.

``pipeline``: the small workload through shuffle(10,000) + batch(256) against webdataset's
same pipeline; the images workload (``--image-shards`` shards) decoded to uint8 CHW tensors
and batched by 64, in one process and through ``Loader(num_workers=2)``, against bare Pillow
decoding the same JPEG bytes (``np.asarray(Image.open(...).convert("RGB"))``). Bare Pillow
and the one-process pipeline also run in turn, 64 images each (``paired``): the ratio of
each pair, and of the totals, is independent of the machine's speed drifting between runs.
For the two workers' ratio, the machine's own ceiling: two processes started together, each
running the one-process pipeline over its half of the shards (ranks 0 and 1 of 2). The one
process, the two and the Loader's workers are new processes (forked) in every run: on the
development machine one process ran up to 30% faster or slower than another for its whole
life, which long-lived processes turned into a bias of the whole benchmark. Every other
repetition runs the workloads in reverse order. ``ratios`` divide medians;
``ratios_by_repetition`` take the median of each repetition's ratio of two runs made within
seconds of each other (tarstream and webdataset; the Loader or the ceiling and one process),
which the machine's speed drifting over minutes moves less.

``resume``: the small workload through shard shuffle + shuffle(10,000) + batch(256): the time
from ``load_state_dict`` to the first batch when resuming at 10%, 50% and 90% of the epoch,
in one process and through ``Loader(num_workers=2)`` (worker start included), and the size
of the JSON state. For contrast, the same in one process with ``sidecars="ignore"``, where a
resume replays by reading. Each resumed first batch is checked against the uninterrupted run.

``remote``: the small workload from moto's S3 server (its own process, on 127.0.0.1) beside
local disk: with and without read-ahead, and through a warm cache (see bench_remote.py).

``decode``: the decoders beside bare Pillow and bare PyAV (see bench_decode.py).

``access``: random access (``ShardDataset``, local and S3) beside sequential streaming, and
bytes read per sample with field selection (see bench_access.py).

``plan``: building the stream, planning every copy of a 1,024 x 8 world and an elastic
resume over a synthetic manifest of 100,000 shards (100M and 10B samples), no data read
(see bench_plan.py).

``interleave``: the small and images workloads read 4 shards at once (the default with
shuffled shards) and one at a time, in fresh processes, alternating (see bench_plan.py).

Workloads are generated once (seeded) under .bench-cache/ or $TARSTREAM_BENCH_DIR.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
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
from bench_access import bench_access
from bench_decode import bench_decode
from bench_plan import bench_interleave, bench_plan
from bench_remote import bench_remote


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
        "tarstream_sidecars_unverified": lambda: _count(
            tarstream.TarStream(with_sidecars, verify=False)
        ),
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
            "tarstream_sidecars_unverified": round(
                result["tarstream_sidecars_unverified"]["median"] / peer, 1
            ),
            "tarstream_plain": round(result["tarstream_plain"]["median"] / peer, 1),
        },
        "verified_vs_unverified": round(
            result["tarstream_sidecars"]["median"]
            / result["tarstream_sidecars_unverified"]["median"],
            3,
        ),
    }


def bench_write(args: argparse.Namespace) -> dict[str, Any]:
    import webdataset as wds

    import tarstream

    workloads.ensure(args.root, "images")
    samples = list(tarstream.TarStream(workloads.shard_pattern(args.root / "images", "tarstream")))
    for s in samples:
        del s["__url__"]
    per_shard = -(-len(samples) // workloads.SHARDS)

    def write_tarstream(out: Path, fsync: bool = True) -> int:
        pattern = str(out / "t-%06d.tar")
        with tarstream.ShardWriter(pattern, max_samples=per_shard, fsync=fsync) as w:
            for s in samples:
                w.write(s)
        return len(samples)

    def write_webdataset(out: Path) -> int:
        with wds.ShardWriter(str(out / "w-%06d.tar"), maxcount=per_shard, verbose=0) as w:
            for s in samples:
                w.write(s)
        return len(samples)

    writers = {
        "tarstream": write_tarstream,
        "tarstream_no_fsync": functools.partial(write_tarstream, fsync=False),
        "webdataset": write_webdataset,
    }
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
        "fsync_vs_no_fsync": round(
            result["tarstream"]["median"] / result["tarstream_no_fsync"]["median"], 3
        ),
    }


def bench_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    import webdataset as wds

    import tarstream

    small = workloads.ensure(args.root, "small")
    images = workloads.ensure(args.root, "images")
    ts_small = workloads.shard_pattern(small, "tarstream")
    wds_small = workloads.shard_pattern(small, "webdataset", args.wds_shards)

    def run_tarstream_small() -> int:
        stream = tarstream.TarStream(ts_small, seed=1, shuffle_shards=True)
        return sum(len(b["__key__"]) for b in stream.shuffle(10_000).batch(256))

    def run_webdataset_small() -> int:
        dataset = wds.WebDataset(wds_small, shardshuffle=False).shuffle(10_000).batched(256)
        return sum(len(b["__key__"]) for b in dataset)

    image_runs = _ImageRuns(workloads.shard_pattern(images, "tarstream", args.image_shards))
    jpegs = image_runs.jpegs
    runs: dict[str, Callable[[], int]] = {
        "tarstream_shuffle_batch": run_tarstream_small,
        "webdataset_shuffle_batch": run_webdataset_small,
        "tarstream_images_1_process": image_runs.one_process,
        "tarstream_images_loader_2_workers": image_runs.two_workers,
        "images_2_processes_ceiling": image_runs.two_processes,
    }
    rates, pairs = _repetitions(runs, image_runs.paired, args.reps)
    return {
        "unit": "samples/s",
        "small_workload": "shuffle(10_000) + batch(256), shard shuffle on",
        "images": f"{len(jpegs)} JPEGs 256x256 -> uint8 CHW tensors, batch(64)",
        "paired": "bare Pillow on 64 JPEGs, then the pipeline's next batch of 64, in turn",
        **{name: _summary(r) for name, r in rates.items()},
        **_pipeline_ratios(rates, pairs),
    }


class _ImageRuns:
    """The images workload: bare Pillow, and the pipeline decoding to uint8 CHW tensors
    batched by 64, in one process, in two, and through ``Loader(num_workers=2)``."""

    def __init__(self, pattern: str) -> None:
        import tarstream

        self.pattern = pattern
        self.jpegs = [s["jpg"] for s in tarstream.TarStream(pattern)]
        self.loader = tarstream.Loader(self.pipeline(), num_workers=2)  # new workers each run

    def pipeline(self) -> Any:
        import tarstream

        stream = tarstream.TarStream(self.pattern, seed=1, shuffle_shards=True)
        return stream.decode("torchrgb8").to_tuple("jpg", "cls").batch(64)

    @staticmethod
    def bare_pillow(chunk: list[bytes]) -> int:
        import io

        import numpy as np
        from PIL import Image

        for data in chunk:
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        return len(chunk)

    def paired(self) -> tuple[float, float, list[float]]:
        """Bare Pillow on 64 JPEGs, then the pipeline's next batch of 64, in turn: both
        rates, and the ratio of each such pair (the machine's speed drifts over seconds)."""
        jpegs = self.jpegs
        bare_time, pipeline_time, pairs = 0.0, 0.0, []
        batches = iter(self.pipeline())
        for start in range(0, len(jpegs), 64):
            b, bare_seconds = _timed(functools.partial(self.bare_pillow, jpegs[start : start + 64]))
            p, pipeline_seconds = _timed(lambda: len(next(batches)[0]))
            assert b == p, "the pipeline's batches follow the JPEGs 64 at a time"
            bare_time, pipeline_time = bare_time + bare_seconds, pipeline_time + pipeline_seconds
            pairs.append(bare_seconds / pipeline_seconds)
        return len(jpegs) / bare_time, len(jpegs) / pipeline_time, pairs

    def drain(self, world: Any, expected: int) -> None:
        n = sum(len(images) for images, _ in self.pipeline().in_world(world))
        assert n == expected, f"{world}: {n} images, expected {expected}"

    def in_processes(self, *worlds: Any) -> int:
        """The image pipeline in a fresh process per world (forked now), all at once."""
        fork = multiprocessing.get_context("fork")
        share = len(self.jpegs) // len(worlds)
        processes = [fork.Process(target=self.drain, args=(world, share)) for world in worlds]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
            assert process.exitcode == 0, "a process of the image pipeline failed"
        return len(self.jpegs)

    def one_process(self) -> int:
        import tarstream

        return self.in_processes(tarstream.World(0, 1))

    def two_processes(self) -> int:
        import tarstream

        return self.in_processes(tarstream.World(0, 2), tarstream.World(1, 2))

    def two_workers(self) -> int:
        return sum(len(images) for images, _ in self.loader)


def _repetitions(
    runs: dict[str, Callable[[], int]],
    paired: Callable[[], tuple[float, float, list[float]]],
    reps: int,
) -> tuple[dict[str, list[float]], list[float]]:
    """Each run's rate in each repetition (after one warm-up of each), the paired images
    run's rates, and the ratio of each of its pairs."""
    for run in runs.values():  # warm-up
        run()
    paired()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    rates["bare_pillow"], rates["tarstream_images_1_process_paired"] = [], []
    pairs: list[float] = []
    for rep in range(reps):
        # every other repetition in reverse order: no run always follows the same one
        for name, run in list(runs.items())[:: -1 if rep % 2 else 1]:
            n, seconds = _timed(run)
            rates[name].append(n / seconds)
        bare, pipeline, ratios = paired()
        rates["bare_pillow"].append(bare)
        rates["tarstream_images_1_process_paired"].append(pipeline)
        pairs += ratios
    return rates, pairs


def _pipeline_ratios(rates: dict[str, list[float]], pairs: list[float]) -> dict[str, Any]:
    """The pipeline benchmark's ratios: of medians, and by repetition."""
    med = {name: statistics.median(r) for name, r in rates.items()}

    def by_repetition(name: str, other: str, digits: int) -> float:
        """The median over repetitions of ``name``'s rate over ``other``'s, in the same one."""
        ratios = [a / b for a, b in zip(rates[name], rates[other], strict=True)]
        return round(statistics.median(ratios), digits)

    return {
        "ratios": {
            "shuffle_batch_vs_webdataset": round(
                med["tarstream_shuffle_batch"] / med["webdataset_shuffle_batch"], 1
            ),
            "images_1_process_vs_bare_pillow_paired_median": round(statistics.median(pairs), 3),
            "images_1_process_vs_bare_pillow_paired_total": round(
                med["tarstream_images_1_process_paired"] / med["bare_pillow"], 3
            ),
            "images_2_workers_vs_1_process": round(
                med["tarstream_images_loader_2_workers"] / med["tarstream_images_1_process"], 2
            ),
            "images_2_processes_ceiling_vs_1_process": round(
                med["images_2_processes_ceiling"] / med["tarstream_images_1_process"], 2
            ),
            "images_2_workers_vs_2_processes_ceiling": round(
                med["tarstream_images_loader_2_workers"] / med["images_2_processes_ceiling"], 2
            ),
        },
        "ratios_by_repetition": {
            "shuffle_batch_vs_webdataset": by_repetition(
                "tarstream_shuffle_batch", "webdataset_shuffle_batch", 1
            ),
            "images_2_workers_vs_1_process": by_repetition(
                "tarstream_images_loader_2_workers", "tarstream_images_1_process", 2
            ),
            "images_2_processes_ceiling_vs_1_process": by_repetition(
                "images_2_processes_ceiling", "tarstream_images_1_process", 2
            ),
        },
    }


def bench_resume(args: argparse.Namespace) -> dict[str, Any]:
    import tarstream

    small = workloads.ensure(args.root, "small")
    pattern = workloads.shard_pattern(small, "tarstream")
    fractions = (0.1, 0.5, 0.9)

    def pipeline(**options: Any) -> tarstream.Pipeline:
        stream = tarstream.TarStream(pattern, seed=1, shuffle_shards=True, **options)
        return stream.shuffle(10_000).batch(256)

    def checkpoints(make: Callable[[], Any]) -> tuple[dict[float, Any], dict[float, list[str]]]:
        """Run one epoch; keep the state at each fraction and the batch that follows it."""
        run = make()
        batches = -(-200_000 // 256)
        at = {round(f * batches): f for f in fractions}
        states: dict[float, Any] = {}
        following: dict[float, list[str]] = {}
        for step, batch in enumerate(run):
            if step in at:
                following[at[step]] = list(batch["__key__"])
            if step + 1 in at:
                states[at[step + 1]] = json.loads(json.dumps(run.state_dict()))
        return states, following

    def time_to_first_batch(
        make: Callable[[], Any], states: dict[float, Any], following: dict[float, list[str]]
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for fraction, state in states.items():
            seconds = []
            for _ in range(args.reps):
                resumed = make()
                start = time.perf_counter()
                resumed.load_state_dict(state)
                iterator = iter(resumed)
                first = next(iterator)
                seconds.append(time.perf_counter() - start)
                if list(first["__key__"]) != following[fraction]:
                    raise AssertionError(f"resumed at {fraction:.0%}: wrong first batch")
                del iterator
            result[f"{fraction:.0%}"] = {
                "median_s": round(statistics.median(seconds), 3),
                "runs_s": [round(x, 3) for x in seconds],
                "state_bytes": len(json.dumps(state)),
            }
        return result

    def loader() -> tarstream.Loader:
        return tarstream.Loader(pipeline(), num_workers=2, multiprocessing_context="fork")

    states, following = checkpoints(pipeline)
    loader_states, loader_following = checkpoints(loader)
    replay_states, replay_following = checkpoints(lambda: pipeline(sidecars="ignore"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        replay = time_to_first_batch(
            lambda: pipeline(sidecars="ignore"), replay_states, replay_following
        )
    return {
        "unit": "seconds from load_state_dict to the first batch",
        "workload": "small, 200,000 samples: shard shuffle + shuffle(10_000) + batch(256)",
        "one_process": time_to_first_batch(pipeline, states, following),
        "loader_2_workers": time_to_first_batch(loader, loader_states, loader_following),
        "one_process_without_sidecars": replay,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "benchmark",
        choices=[
            "read",
            "write",
            "pipeline",
            "resume",
            "remote",
            "decode",
            "access",
            "plan",
            "interleave",
        ],
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--wds-shards", type=int, default=2)
    parser.add_argument("--image-shards", type=int, default=4)
    parser.add_argument("--root", type=Path, default=workloads.default_root())
    parser.add_argument("--shards", type=int, default=100_000)
    parser.add_argument("--ranks", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    benchmarks = {
        "read": bench_read,
        "write": bench_write,
        "pipeline": bench_pipeline,
        "resume": bench_resume,
        "remote": bench_remote,
        "decode": bench_decode,
        "access": bench_access,
        "plan": bench_plan,
        "interleave": bench_interleave,
    }
    result = benchmarks[args.benchmark](args)
    result["machine"] = {"python": platform.python_version(), "cpus": __import__("os").cpu_count()}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
