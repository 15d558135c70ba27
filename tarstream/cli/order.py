"""``tarstream quality``, ``plan`` and ``audit``: an epoch's order and costs worked out
without data, and the check of what a training run's loaders delivered."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..format.manifest import Manifest

__all__ = ["add_order_commands"]


def add_order_commands(commands: Any) -> dict[str, Any]:
    """Add the commands to ``commands`` (argparse subparsers); return their runners."""
    quality = commands.add_parser("quality", help="how well a stream's order is shuffled")
    quality.add_argument("source", help="a manifest or a pattern of shards with sidecars")
    _order_options(quality)
    quality.add_argument("--epoch", type=int, default=0)
    plan = commands.add_parser(
        "plan", help="simulate epochs in a world: samples, batches, shards, bytes, quality"
    )
    plan.add_argument("source", nargs="?", help="a manifest (or give --synthetic)")
    plan.add_argument(
        "--synthetic", metavar="SHARDSxSAMPLES", help="a made-up dataset, e.g. 100000x1000"
    )
    plan.add_argument("--sample-bytes", type=int, default=1000, help="with --synthetic")
    _order_options(plan)
    plan.add_argument("--ranks", type=int, default=1)
    plan.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    plan.add_argument("--batch", type=int, default=1)
    plan.add_argument("--even", choices=["drop", "pad"], default=None)
    plan.add_argument("--cache-shards", type=int, default=0, help="LRU shard cache per rank")
    plan.add_argument("--epochs", type=int, default=1)
    audit = commands.add_parser(
        "audit", help="check Loader(audit=...) logs: every sample once per epoch; exit 1 if not"
    )
    audit.add_argument("logs", nargs="+", help="audit folders or rank-*.jsonl files")
    return {"quality": _run_quality, "plan": _run_plan, "audit": _run_audit}


def _run_audit(args: argparse.Namespace) -> int:
    from ..run.audit import check_logs, read_logs

    records = read_logs(args.logs)
    if not records:
        raise ValueError(f"no audit records in {' '.join(args.logs)}")
    result = check_logs(records)
    print(json.dumps(result, indent=1))
    for epoch, figures in result["epochs"].items():
        verdict = "ok" if figures["ok"] else "FAILED"
        print(
            f"epoch {epoch}: {verdict}: {figures['delivered']:,} of {figures['planned']:,} "
            f"samples delivered; missed {figures['missed_samples']:,}, repeated "
            f"{figures['repeated_samples']:,}, lost by a lenient reader "
            f"{figures['lost_samples']:,}",
            file=sys.stderr,
        )
    return 0 if result["ok"] else 1


def _order_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shuffle-shards", action="store_true", help="shuffle the shards")
    parser.add_argument("--shuffle", type=int, default=0, help="shuffle buffer size")
    parser.add_argument(
        "--interleave", type=int, default=None, help="shards read at once (default: TarStream's)"
    )
    parser.add_argument("--seed", type=int, default=0)


def _stream(args: argparse.Namespace, source: str, **options: Any) -> Any:
    from ..run.stream import TarStream

    stream = TarStream(
        source,
        seed=args.seed,
        shuffle_shards=args.shuffle_shards,
        interleave=args.interleave,
        **options,
    )
    return stream.shuffle(args.shuffle) if args.shuffle else stream


def _run_quality(args: argparse.Namespace) -> int:
    from ..plan.quality import order_quality
    from ..run.order import planned_order

    stream = _stream(args, args.source)
    order = planned_order(stream, epoch=args.epoch)
    quality = order_quality(order, stream.shard_list.sample_starts()[:-1])
    print(json.dumps(quality.to_dict(), indent=1))
    return 0


def _run_plan(args: argparse.Namespace) -> int:
    from ..run.simulate import Layout, simulate

    if (args.source is None) == (args.synthetic is None):
        raise ValueError("give a manifest or --synthetic SHARDSxSAMPLES (one of the two)")
    with tempfile.TemporaryDirectory() as folder:
        source = args.source or _synthetic(Path(folder), args.synthetic, args.sample_bytes)
        started = time.perf_counter()
        stream = _stream(args, source, even=args.even)
        layout = Layout(args.ranks, args.workers, args.batch, args.cache_shards)
        figures = simulate(stream, layout, epochs=args.epochs)
    figures["seconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(figures, indent=1))
    return 0


def _synthetic(folder: Path, shape: str, sample_bytes: int) -> str:
    """A manifest of ``SHARDSxSAMPLES`` made-up shards (never read)."""
    try:
        shards, samples = (int(n) for n in shape.lower().split("x"))
    except ValueError:
        raise ValueError(
            f"--synthetic wants SHARDSxSAMPLES such as 1000x500, got {shape!r}"
        ) from None
    if shards < 1 or samples < 1:
        raise ValueError(f"--synthetic needs at least 1 shard of 1 sample, got {shape!r}")
    names = [f"synthetic-{i:06d}.tar" for i in range(shards)]
    manifest = Manifest(names, [samples] * shards, [samples * sample_bytes] * shards, [])
    path = folder / "synthetic.manifest.json"
    path.write_text(manifest.to_json())
    return str(path)
