"""Command-line tools: ``tarstream-write`` and ``tarstream`` (``write``, ``index``, ``ls``,
``stats``, ``verify``, ``cat``).

Argument parsing and printing only; the work is ``tarstream.write``'s and
``tarstream.read.inspect``'s.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import ArgumentError, TarstreamError
from ..plan.specs import resolve_shards
from ..read.inspect import ShardSummary, find_sample, summarize, verify
from ..write.indexer import index_shards
from ..write.merge import merge_manifests
from ..write.progress import Progress
from .order import add_order_commands
from .write import add_write_arguments, parse_size, run_write

__all__ = ["main", "parse_size", "write_main"]


def _run_index(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr)
    path, manifest = index_shards(args.pattern, manifest=args.manifest, progress=progress)
    progress.done()
    print(path)
    print(
        f"indexed {manifest.total_samples:,} samples in {len(manifest.shards):,} shards; "
        "sidecars written in .tarstream/ beside them",
        file=sys.stderr,
    )
    return 0


def _run_ls(args: argparse.Namespace) -> int:
    print("samples\tbytes\tshard\tfields")
    for spec in resolve_shards(args.source):
        summary = summarize(spec, read=args.read)
        print(
            f"{_or_unknown(summary.samples)}\t{_or_unknown(summary.size)}\t{summary.url}\t"
            + (summary.problem or ",".join(sorted(summary.fields)))
        )
    return 0


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _run_stats(args: argparse.Namespace) -> int:
    specs = resolve_shards(args.source)
    progress = Progress(sys.stderr, shards=len(specs))
    summaries: list[ShardSummary] = []
    fields: Counter[str] = Counter()
    samples = 0
    for number, spec in enumerate(specs):
        summaries.append(summarize(spec, read=True))
        samples += summaries[-1].samples or 0
        fields.update(summaries[-1].fields)
        progress.update(samples, number + 1)
    progress.done()
    indexed = sum(s.from_sidecar for s in summaries)
    print(f"shards\t{len(summaries)} ({indexed} with sidecars)")
    print(f"samples\t{samples}")
    print(f"bytes\t{sum(s.size or 0 for s in summaries)}")
    for name, count in sorted(fields.items()):
        print(f"field {name}\t{count}")
    problems = [f"{s.url}: {s.problem}" for s in summaries if s.problem]
    for problem in problems:
        print(f"problem\t{problem}")
    return 1 if problems else 0


def _run_verify(args: argparse.Namespace) -> int:
    failed = samples = 0
    specs = resolve_shards(args.source)
    progress = Progress(sys.stderr, shards=len(specs))
    for number, spec in enumerate(specs):
        summary = verify(spec)
        samples += summary.samples or 0
        progress.update(samples, number + 1)
        how = "checksums" if summary.from_sidecar else "headers only (no sidecar)"
        if summary.problem:
            failed += 1
            print(f"FAIL\t{summary.problem}")
        else:
            print(f"ok\t{summary.samples}\t{summary.url}\t{how}")
    progress.done()
    print(
        f"{len(specs) - failed} of {len(specs)} shards ok, {samples} samples read", file=sys.stderr
    )
    return 1 if failed else 0


def _run_cat(args: argparse.Namespace) -> int:
    for sample in find_sample(resolve_shards(args.source), args.key):
        if args.field is None:
            for name, value in sorted(sample.items()):
                shown = f"{len(value)} bytes" if isinstance(value, bytes) else value
                print(f"{name}\t{shown}")
            return 0
        if args.field not in sample:
            fields = sorted(k for k in sample if not k.startswith("__"))
            print(
                f"error: sample {args.key!r} has no field {args.field!r} (fields: {fields})",
                file=sys.stderr,
            )
            return 1
        value = sample[args.field]
        sys.stdout.buffer.write(value if isinstance(value, bytes) else str(value).encode())
        sys.stdout.flush()
        return 0
    print(f"error: no sample with key {args.key!r}", file=sys.stderr)
    return 1


def _guard(run: Any, args: argparse.Namespace) -> int:
    """Run a command: a problem with the data is one line and status 1, a mistake in the
    arguments (a bad pattern or limit) one line and status 2, never a traceback."""
    try:
        return int(run(args))
    except ArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TarstreamError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _version(parser: argparse.ArgumentParser) -> None:
    from importlib.metadata import version

    parser.add_argument("--version", action="version", version=f"%(prog)s {version('tarstream')}")


def _run_merge(args: argparse.Namespace) -> int:
    paths = [p for pattern in args.manifests for p in sorted(glob.glob(pattern)) or [pattern]]
    manifest = merge_manifests(paths, args.output, by_name=not args.in_order)
    print(args.output)
    print(
        f"merged {len(paths)} manifests: {manifest.total_samples:,} samples in "
        f"{len(manifest.shards):,} shards",
        file=sys.stderr,
    )
    return 0


def _run_keys(args: argparse.Namespace) -> int:
    from ..run.mapped import ShardDataset

    dataset = ShardDataset(args.source)
    path = dataset.build_key_index(args.output)
    print(path)
    print(f"indexed {len(dataset):,} keys", file=sys.stderr)
    return 0


def write_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tarstream-write``."""
    parser = argparse.ArgumentParser(
        prog="tarstream-write",
        description="Write tar shards with sidecar indexes and a manifest.",
    )
    _version(parser)
    add_write_arguments(parser)
    return _guard(run_write, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tarstream``."""
    parser = argparse.ArgumentParser(prog="tarstream", description="tarstream shard tools.")
    _version(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write shards (same as tarstream-write)")
    add_write_arguments(write)
    index = commands.add_parser(
        "index", help="build sidecars and a manifest for existing shards, in place"
    )
    index.add_argument("pattern", help="brace pattern or glob of existing shards")
    index.add_argument("--manifest", default=None, help="manifest path (default: beside them)")
    source = "a manifest, a brace pattern or a URL of shards"
    ls = commands.add_parser("ls", help="list shards: samples, bytes, fields (from sidecars)")
    ls.add_argument("source", help=source)
    ls.add_argument("--read", action="store_true", help="read shards without sidecars")
    stats = commands.add_parser("stats", help="totals: shards, samples, bytes, fields")
    stats.add_argument("source", help=source)
    check = commands.add_parser(
        "verify", help="read every byte against the sidecars; exit 1 on any problem"
    )
    check.add_argument("source", help=source)
    cat = commands.add_parser("cat", help="print a sample's fields, or write one field's bytes")
    cat.add_argument("source", help=source)
    cat.add_argument("key", help="the sample's key")
    cat.add_argument("field", nargs="?", default=None, help="the field to write to stdout")
    order_commands = add_order_commands(commands)
    merge = commands.add_parser(
        "merge", help="one manifest from the manifests of a write's parts (no shard read)"
    )
    merge.add_argument("manifests", nargs="+", help="the parts' manifests (globs allowed)")
    merge.add_argument("--output", required=True, help="the manifest to write")
    merge.add_argument(
        "--in-order", action="store_true", help="keep the order given (default: by shard name)"
    )
    keys = commands.add_parser("keys", help="build the key index that key lookups use")
    keys.add_argument("source", help="a manifest (the index goes beside it) or a pattern")
    keys.add_argument("--output", default=None, help="where to write it (local path)")
    args = parser.parse_args(argv)
    runs = {
        "write": run_write,
        "index": _run_index,
        "ls": _run_ls,
        "stats": _run_stats,
        "verify": _run_verify,
        "cat": _run_cat,
        "keys": _run_keys,
        "merge": _run_merge,
        **order_commands,
    }
    return _guard(runs[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
