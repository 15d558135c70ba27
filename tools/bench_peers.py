"""tarstream beside litdata, MosaicML streaming, webdataset and HF datasets, same samples.

    python3 tools/dev.py bench peers [--reps 3] [--cases small_raw ...] [--systems litdata ...]

Runs in an environment of its own, ``.venv-peers`` (``tools/dev.py`` makes it from
``tools/peers-requirements.txt``): MosaicML's wheel pins numpy below 2.2 and imports
torchvision when imported, and no torchvision build matches this torch, so the peers do
not share ``.venv``. There, torchvision is replaced by a stub of the two names MosaicML
imports at start (its vision datasets, which this benchmark does not use, would fail).
HF datasets is 4.4 there: 5.x needs huggingface_hub 1.x, which the transformers that
MosaicML brings keeps out; it streams the Arrow shards ``save_to_disk`` wrote
(``load_dataset("arrow", ..., streaming=True)``).

The workloads (DESIGN §10, smaller): ``small`` (``--small`` samples of txt, cls, json) and
``images`` (``--images`` 256x256 JPEGs with cls). ``prepare`` writes each in every
library's format once (cached beside the other workloads; ``--fresh`` writes them again,
so every library's files are of one age). Then every measurement runs in a fresh
process, the libraries in turn and in a rotating order, ``--reps`` times; each
process reports samples/s and CPU ms per 1,000 samples (its own and its workers'; a
reader's from its first sample or batch on, the time until then apart), the number of
samples and a checksum of their typed values, which must equal the samples written.
Medians, ratios to webdataset and litdata and bytes per sample on disk go to ``peers.json``
and ``peers.md`` (and ``peers.png``, a bar chart) in the output folder.

Cases: ``small_raw`` (every sample, decoded, in order), ``small_shuffle_batch`` (shard
shuffle, a shuffle buffer of 1,000, batches of 256), ``images_raw`` (JPEG bytes and class,
in order), ``images_2_workers`` (batches of 64 from two DataLoader workers),
``write_small`` and ``write_images`` (each library's writer, samples in memory; tarstream
also with ``--workers 1`` and ``2`` from an index file or folder, as ``tarstream-write``).
``tarstream_packed`` is tarstream with ``pack="small"`` (``tarstream-write``'s default: small
samples in packed blocks), ``tarstream`` the plain layout; images are not packed, so their
cases have the plain row only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_runs as runs
import workloads

READERS = ["tarstream_packed", "tarstream", "litdata", "mosaicml", "webdataset", "hf_datasets"]
WRITERS = [
    "tarstream_packed",
    "tarstream",
    "tarstream_no_fsync",
    "tarstream_workers_1",
    "tarstream_workers_2",
    "webdataset",
    "mosaicml",
    "litdata",
    "hf_datasets",
]
#: Images are not packed (a JPEG is a large field): their packed write is the plain one.
_PLAIN_ONLY = [s for s in READERS if s != "tarstream_packed"]
CASES = {
    "small_raw": READERS,
    "small_shuffle_batch": READERS,
    "images_raw": _PLAIN_ONLY,
    "images_2_workers": _PLAIN_ONLY,
    "write_small": WRITERS,
    "write_images": [s for s in WRITERS if s != "tarstream_packed"],
}
#: What the cached copies were written by: a change writes them all again (3: tarstream's
#: sidecars record block checksums, which its reader of blocks uses).
STAMP = "peers 3\n"


def _sizes(n_small: int, n_images: int) -> dict[str, int]:
    return {"small": n_small, "images": n_images}


#: Each library's writer of the workloads, into the folder the library's readers read.
FORMATS = {
    "tarstream_packed": runs.write_tarstream_packed,
    "tarstream": runs.write_tarstream,
    "litdata": runs.write_litdata,
    "mosaicml": runs.write_mds,
    "webdataset": runs.write_webdataset,
    "hf_datasets": runs.write_hf,
}


def prepare(root: Path, sizes: dict[str, int]) -> dict[str, Any]:
    """Write each workload in every library's format (once: a format added later is
    written beside the others); return what was written."""
    done = root / "expected.json"
    stamp = STAMP + json.dumps(sizes, sort_keys=True)
    expected: dict[str, Any] = json.loads(done.read_text()) if done.exists() else {}
    if expected.get("stamp") != stamp:
        shutil.rmtree(root, ignore_errors=True)
        expected = {"stamp": stamp}
    for workload, n in sizes.items():
        missing = [name for name in FORMATS if not (root / workload / name).exists()]
        if not missing:
            continue
        print(f"writing the {workload} workload ({n} samples) as {', '.join(missing)}")
        rows = runs.samples(workload, n)
        expected[workload] = {"n": len(rows), "checksum": sum(runs.sample_sum(s) for s in rows)}
        if not (root / workload / "source").exists():
            _write_source(workload, rows, root / workload / "source")
        for name in FORMATS:
            out = root / workload / name
            if name in missing:
                out.mkdir(parents=True)
                FORMATS[name](workload, rows, out)
            files = [p for p in out.rglob("*") if p.is_file()]
            expected[workload][f"bytes_per_sample_{name}"] = round(
                sum(p.stat().st_size for p in files) / len(rows)
            )
        done.write_text(json.dumps(expected, indent=1))
    return expected


def _write_source(workload: str, rows: list[dict[str, Any]], out: Path) -> None:
    """What ``tarstream-write --workers N`` starts from: an index of JSON lines (small) or
    a folder of ``KEY.jpg`` and ``KEY.cls`` files (images)."""
    out.mkdir(parents=True)
    if workload == "small":
        with open(out / "index.jsonl", "w") as f:
            for s in rows:
                f.write(json.dumps(s) + "\n")
        return
    for s in rows:
        (out / f"{s['__key__']}.jpg").write_bytes(s["jpg"])
        (out / f"{s['__key__']}.cls").write_text(str(s["cls"]))


def _source(root: Path, workload: str) -> Path:
    source = root / workload / "source"
    return source / "index.jsonl" if workload == "small" else source


def measure_one(case: str, system: str, root: Path, sizes: dict[str, int]) -> dict[str, Any]:
    """Run one measurement in this process: samples, checksum, seconds, CPU seconds."""
    if system == "mosaicml" or case.startswith("write"):
        runs.clean_shared_memory()
    runs.import_first(system)
    # The full collection the imports owe (hundreds of thousands of objects, tens of
    # milliseconds) falls due in whichever library's loop allocates first: paid here,
    # before every library's clock, it is timed in none.
    gc.collect()
    workload = "small" if "small" in case else "images"
    if case.startswith("write"):
        rows = runs.samples(workload, sizes[workload])
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            # Nothing left dirty by the run before: a writer that fsyncs (tarstream's
            # default) would wait for the disk to take the earlier writer's data too.
            os.sync()
            return _timed(lambda: _write(system, workload, rows, root, Path(tmp)))
    raw, batches = runs.READERS[system]
    data = root / workload / system
    _warm(data)
    if case.endswith("_raw"):
        return _timed(lambda: runs.fold(raw(data, workload)))
    workers = 2 if case.endswith("2_workers") else 0
    return _timed(lambda: runs.fold_batches(batches(data, workload, workers)))


def _warm(data: Path) -> None:
    """Read every file of a library's copy of a workload once, before the clock: every
    reader starts from the page cache (this machine's kernel evicts pages not read for a
    minute or two, and a copy read from disk measured the disk)."""
    for path in sorted(data.rglob("*")):
        if path.is_file():
            with open(path, "rb", buffering=0) as f:
                while f.read(8 << 20):
                    pass


def _write(system: str, workload: str, rows: list[Any], root: Path, out: Path) -> tuple[int, int]:
    if system.startswith("tarstream_workers_"):
        workers = int(system.rsplit("_", 1)[1])
        runs.write_tarstream_parallel(workload, _source(root, workload), out, workers)
    elif system == "tarstream_packed":
        runs.write_tarstream_packed(workload, rows, out)
    elif system.startswith("tarstream"):
        runs.write_tarstream(workload, rows, out, fsync=system == "tarstream")
    else:
        FORMATS[system](workload, rows, out)
    return len(rows), -1  # the written shards are read back by the read cases


def _timed(run: Any) -> dict[str, Any]:
    """Samples, checksum, seconds and CPU seconds of ``run``; for a reader also from its
    first sample or batch on (the rate the table gives: a library's start, its imports
    and opening the dataset, counts in ``first_seconds`` only)."""
    cpu = _cpu()
    blocks = resource.getrusage(resource.RUSAGE_SELF).ru_inblock  # reads that went to disk
    start = time.perf_counter()
    n, checksum = run()
    seconds = time.perf_counter() - start
    own = _cpu(resource.RUSAGE_SELF)  # before the collection below, which is not the run's
    gc.collect()  # workers that ended with their loader are reaped, and counted
    used = own + _cpu(resource.RUSAGE_CHILDREN) - cpu
    inblock = resource.getrusage(resource.RUSAGE_SELF).ru_inblock - blocks
    result = {"n": n, "checksum": checksum, "seconds": seconds, "cpu": used, "inblock": inblock}
    if runs.FIRST:
        result["first_seconds"] = runs.FIRST["at"] - start
        result["first_n"] = runs.FIRST["n"]
        result["first_cpu"] = runs.FIRST["cpu"] - cpu
    return result


def _steady(r: dict[str, Any]) -> tuple[float, float]:
    """(samples/s, CPU ms per 1,000 samples) after the first sample or batch (a writer:
    all of it)."""
    n = r["n"] - r.get("first_n", 0)
    seconds = r["seconds"] - r.get("first_seconds", 0.0)
    return n / seconds, (r["cpu"] - r.get("first_cpu", 0.0)) * 1e6 / n


def _cpu(*who: int) -> float:
    """CPU seconds (user and system) of ``who`` (default: this process and its children)."""
    total = 0.0
    for one in who or (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(one)
        total += usage.ru_utime + usage.ru_stime
    return total


def _child(case: str, system: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "one", case, system, "--root", str(args.root)]
    cmd += ["--small", str(args.small), "--images", str(args.images)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        raise SystemExit(f"{case} {system} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(lines[-1]))


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    expected = _prepare_in_child(args)
    measured: dict[str, dict[str, list[dict[str, Any]]]] = {c: {} for c in args.cases}
    for rep in range(args.reps):
        for case in args.cases:
            systems = [s for s in CASES[case] if not args.systems or s in args.systems]
            turn = rep % len(systems)  # each library goes first in some repetition
            for system in systems[turn:] + systems[:turn]:
                result = _child(case, system, args)
                _check(case, system, result, expected)
                measured[case].setdefault(system, []).append(result)
                rate = _steady(result)[0]
                print(f"  {case:20} {system:22} {rate:12,.0f} samples/s", flush=True)
    return _summarize(measured, expected, args)


def _prepare_in_child(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "prepare", "--root", str(args.root)]
    cmd += ["--small", str(args.small), "--images", str(args.images)]
    subprocess.run(cmd, check=True)
    return dict(json.loads((args.root / "expected.json").read_text()))


def _check(case: str, system: str, result: dict[str, Any], expected: dict[str, Any]) -> None:
    want = expected["small" if "small" in case else "images"]
    if result["n"] != want["n"] or (result["checksum"] not in (-1, want["checksum"])):
        raise SystemExit(f"{case} {system}: got {result}, expected {want}")


def _summarize(
    measured: dict[str, dict[str, list[dict[str, Any]]]],
    expected: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    for case, by_system in measured.items():
        rows = {}
        for system, results in by_system.items():
            rates, cpu = zip(*(_steady(r) for r in results), strict=True)
            rows[system] = {
                "median": round(statistics.median(rates)),
                "cpu_ms_per_1k": round(statistics.median(cpu), 1),
                "runs": [round(r) for r in rates],
                "first_seconds": round(
                    statistics.median(r.get("first_seconds", 0.0) for r in results), 3
                ),
                "disk_blocks_read": [r.get("inblock", 0) for r in results],
            }
        for ours in ("tarstream", "tarstream_packed"):
            for peer in ("webdataset", "litdata", "mosaicml"):
                if peer in rows and ours in rows:
                    ratio = rows[ours]["median"] / rows[peer]["median"]
                    rows[ours][f"vs_{peer}"] = round(ratio, 2)
        cases[case] = rows
    return {
        "unit": "samples/s and CPU ms per 1,000 samples (workers included), medians; "
        "readers from their first sample or batch on (first_seconds: until it came)",
        "reps": args.reps,
        "machine": runs.machine(),
        "samples": _sizes(args.small, args.images),
        "bytes_per_sample": {
            w: {
                k.removeprefix("bytes_per_sample_"): v
                for k, v in expected[w].items()
                if k.startswith("bytes")
            }
            for w in ("small", "images")
        },
        "cases": cases,
    }


def render(result: dict[str, Any]) -> str:
    """The result as a Markdown table: a row per case, a column per library."""
    found = {s for rows in result["cases"].values() for s in rows}
    systems = [s for s in dict.fromkeys(READERS + WRITERS) if s in found]
    lines = [
        "| case | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for case, rows in result["cases"].items():
        cells = [
            f"{rows[s]['median']:,} ({rows[s]['cpu_ms_per_1k']})" if s in rows else ""
            for s in systems
        ]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    for workload, sizes in result["bytes_per_sample"].items():
        cells = [f"{sizes[s]:,}" if s in sizes else "" for s in systems]
        lines.append(f"| bytes/sample, {workload} | " + " | ".join(cells) + " |")
    if "machine" in result:
        m = result["machine"]
        where = f"{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}"
        lines += ["", f"Measured on {where}."]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    """A bar chart of each case's medians relative to litdata (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = ["tarstream_packed", "tarstream", "litdata", "mosaicml", "webdataset"]
    cases = list(result["cases"])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(peers)
    for i, peer in enumerate(peers):
        values = [result["cases"][c].get(peer, {}).get("median", 0) for c in cases]
        ax.bar([x + i * width for x in range(len(cases))], values, width, label=peer)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(cases))], cases, rotation=15)
    ax.set_yscale("log")
    ax.set_ylabel("samples/s (median, log scale)")
    ax.set_title("tarstream and its peers, same samples, same machine, one run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="all", choices=["all", "prepare", "one"])
    parser.add_argument("case", nargs="?")
    parser.add_argument("system", nargs="?")
    parser.add_argument("--root", type=Path, default=workloads.default_root() / "peers")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--small", type=int, default=40_000)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--systems", nargs="+", default=None, help="only these (default: every library)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=None, help="default: --root")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="write every library's files again first: files of one age (this machine read "
        "shards written minutes before faster than the same bytes written days before)",
    )
    args = parser.parse_args()
    args.root = args.root.resolve()
    if args.fresh and args.mode != "one":
        shutil.rmtree(args.root / "small", ignore_errors=True)
        shutil.rmtree(args.root / "images", ignore_errors=True)
    sizes = _sizes(args.small, args.images)
    if args.mode == "prepare":
        prepare(args.root, sizes)
        return
    if args.mode == "one":
        print(json.dumps(measure_one(args.case, args.system, args.root, sizes)))
        return
    result = run_all(args)
    out = args.out or args.root
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(result, indent=1) + "\n")
    table = render(result)
    (out / "peers.md").write_text(table)
    chart(result, out / "peers.png")
    print(json.dumps(result, indent=1))
    print(table)


if __name__ == "__main__":
    main()
