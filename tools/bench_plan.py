"""``bench plan``: planning and elastic resume at internet scale, without any data.

A synthetic manifest of ``--shards`` shards (100,000) of 1,000 samples (an epoch of 100M)
and one of 100,000 samples per shard (10B): the time to build the stream
(``TarStream(manifest, shuffle_shards=True)``, the manifest parsed), one copy's plan in a
world of ``--ranks`` x ``--workers`` (1,024 x 8; the first copy, which computes what all
copies share), and all of those plans in one process. Then an elastic resume: every one of
16 copies (2 ranks x 8 workers) saved part way through the epoch (a random share of its
plan, through a ``shuffle(10_000)`` buffer or without one), resumed as 3 ranks x 8 workers
(24 copies): the time and peak traced memory (``tracemalloc``) of working out the rest of
the epoch and planning the first new copy, with the rest's size checked against what the
old copies delivered (timed untraced, then traced again for the memory). Medians of
``--reps`` runs, each on a new stream. Shuffled shards are read 4 at a time (the default).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from tarstream import TarStream, World
from tarstream.format.manifest import Manifest
from tarstream.read.read_shards import ReadShards
from tarstream.run.elastic import rest_of_epoch
from tarstream.run.resume import base_of
from tarstream.stage import upstream
from tarstream.world import Context

_OLD, _NEW = (2, 8), (3, 8)  # (ranks, workers) before and after the elastic resume
_BUFFER = 10_000


def _manifest(folder: Path, shards: int, per_shard: int) -> str:
    names = [f"train-{i:06d}.tar" for i in range(shards)]
    manifest = Manifest(names, [per_shard] * shards, [per_shard * 600] * shards, ["txt"])
    path = folder / f"train-{per_shard}.manifest.json"
    path.write_text(manifest.to_json())
    return str(path)


def _stream(manifest: str, buffer: int) -> Any:
    stream = TarStream(manifest, shuffle_shards=True, seed=7)
    return stream.shuffle(buffer) if buffer else stream


def _plan(stream: Any, world: World) -> Any:
    chain = stream.connect(Context(stream.seed, 0, world))
    reader = upstream(chain, ReadShards)
    assert reader is not None
    return reader, reader.current_plan()


def _planning(manifest: str, ranks: int, workers: int) -> dict[str, float]:
    t0 = time.perf_counter()
    stream = _stream(manifest, 0)
    t1 = time.perf_counter()
    _plan(stream, World(0, ranks, 0, workers))
    t2 = time.perf_counter()
    samples = 0
    for rank in range(ranks):
        for worker in range(workers):
            samples += _plan(stream, World(rank, ranks, worker, workers))[1].total
    t3 = time.perf_counter()
    assert samples == stream.shard_list.sample_starts()[-1]  # every sample planned once
    return {"build_s": t1 - t0, "first_plan_s": t2 - t1, "all_plans_s": t3 - t2}


def _saved_state(stream: Any, buffer: int, rng: np.random.Generator) -> tuple[Any, int]:
    """A state of every old copy part way through the epoch, and the samples delivered."""
    parts, delivered = [], 0
    ranks, workers = _OLD
    for rank in range(ranks):
        for worker in range(workers):
            reader, plan = _plan(stream, World(rank, ranks, worker, workers))
            returned = int(rng.integers(buffer + 1, plan.total - buffer))
            if buffer:
                start = reader.advance(None, 0)
                parts.append((rank, worker, {"start": start, "returned": returned}))
            else:
                parts.append((rank, worker, reader.advance(None, returned)))
            delivered += returned
    state = {"world_size": ranks, "num_workers": workers, "parts": [], "base": None}
    state["parts"] = [{"rank": r, "worker": w, "stages": s} for r, w, s in parts]
    return base_of(state), delivered


def _elastic(manifest: str, buffer: int, seed: int) -> dict[str, float]:
    stream = _stream(manifest, buffer)
    base, delivered = _saved_state(stream, buffer, np.random.default_rng(seed))
    total = int(stream.shard_list.sample_starts()[-1])

    def resume() -> Any:
        rest = rest_of_epoch(stream.connect, stream.seed, 0, base)
        ranks, workers = _NEW
        chain = stream.connect(Context(stream.seed, 0, World(0, ranks, 0, workers), rest))
        upstream(chain, ReadShards).current_plan()
        return rest

    t0 = time.perf_counter()
    rest = resume()
    seconds = time.perf_counter() - t0
    tracemalloc.start()  # a second time, traced: tracing slows it down
    resume()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rest.total == total - delivered, (rest.total, total, delivered)
    return {"seconds": seconds, "peak_mb": peak / 2**20, "rest_runs": len(rest)}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}


def bench_plan(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"shards": args.shards, "ranks": args.ranks, "workers": args.workers}
    with tempfile.TemporaryDirectory() as folder:
        for per_shard, label in ((1_000, "100M"), (100_000, "10B")):
            manifest = _manifest(Path(folder), args.shards, per_shard)
            result[f"planning_{label}"] = _median(
                [_planning(manifest, args.ranks, args.workers) for _ in range(args.reps)]
            )
            for buffer in (0, _BUFFER):
                name = f"elastic_{label}_16_to_24" + (f"_shuffle{buffer}" if buffer else "")
                result[name] = _median([_elastic(manifest, buffer, r) for r in range(args.reps)])
    return result


# -- interleaving on and off: throughput on local disk ------------------------------------------


def _child_run(make: Any, conn: Any) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    n = sum(len(batch["__key__"]) for batch in make())
    conn.send((n, time.perf_counter() - wall, time.process_time() - cpu))


def _fresh(make: Any) -> tuple[int, float, float]:
    """(samples, seconds, CPU seconds) of draining ``make()`` in a new forked process."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    parent, child = fork.Pipe()
    process = fork.Process(target=_child_run, args=(make, child))
    process.start()
    result: tuple[int, float, float] = parent.recv()
    process.join()
    return result


def bench_interleave(args: argparse.Namespace) -> dict[str, Any]:
    """The small workload (shard shuffle + shuffle(10,000) + decode + batch(256)) and the
    images workload (``--image-shards`` shards, shuffle(1,000) + decode to uint8 tensors +
    batch(64)) with ``interleave=1`` and the default (4), one process each, every run a new
    forked process, the two alternating; medians of ``--reps``, CPU ms per 1,000 samples."""
    import functools

    import workloads

    small = workloads.shard_pattern(workloads.ensure(args.root, "small"), "tarstream")
    images = workloads.ensure(args.root, "images")
    image_pattern = workloads.shard_pattern(images, "tarstream", args.image_shards)

    def small_run(interleave: int | None) -> Any:
        stream = TarStream(small, seed=1, shuffle_shards=True, interleave=interleave)
        return stream.shuffle(10_000).decode().batch(256)

    def image_run(interleave: int | None) -> Any:
        stream = TarStream(image_pattern, seed=1, shuffle_shards=True, interleave=interleave)
        return stream.shuffle(1_000).decode("torchrgb8").batch(64)

    runs = {
        f"{name}_interleave_{k or 'default'}": functools.partial(make, k)
        for name, make in (("small", small_run), ("images", image_run))
        for k in (1, None)
    }
    got: dict[str, list[tuple[int, float, float]]] = {name: [] for name in runs}
    for rep in range(args.reps):
        for name in list(runs) if rep % 2 == 0 else list(runs)[::-1]:
            got[name].append(_fresh(runs[name]))
    result: dict[str, Any] = {}
    for name, measured in got.items():
        result[name] = {
            "samples": measured[0][0],
            "samples_per_s": round(statistics.median(n / s for n, s, _ in measured)),
            "cpu_ms_per_1k": round(statistics.median(1e6 * c / n for n, _, c in measured), 2),
        }
    for workload in ("small", "images"):
        on = result[f"{workload}_interleave_default"]["samples_per_s"]
        off = result[f"{workload}_interleave_1"]["samples_per_s"]
        result[f"{workload}_ratio_on_to_off"] = round(on / off, 3)
    return result
