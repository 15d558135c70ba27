"""Command-line tools: ``tarstream-write`` and ``tarstream`` (``write``, ``index``, ``ls``,
``stats``, ``verify``, ``cat``).

Argument parsing and printing only; the work is ``tarstream.write``'s and
``tarstream.read.inspect``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .errors import ArgumentError, TarstreamError
from .format.manifest import compress_names
from .plan.specs import resolve_shards
from .read.inspect import ShardSummary, find_sample, summarize, verify
from .storage.files import atomic_write
from .write.index_file import Fetch
from .write.indexer import index_shards
from .write.progress import Progress
from .write.sources import samples_from
from .write.writer import ShardWriter

__all__ = ["main", "parse_size", "write_main"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse a byte size: ``1000``, ``64MB``, ``1.5G``, ``512MiB``.

    >>> parse_size("64MB"), parse_size("1.5G"), parse_size("2KiB")
    (64000000, 1500000000, 2048)
    """
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500MB, 1.5G, 64MiB)")
    number, unit, binary = match.groups()
    scale = (1024 if binary else 1000) ** "_kmgt".index(unit.lower() or "_")
    return int(float(number) * scale)


def _pairs(values: Sequence[str], option: str, optional_value: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not name or (eq and not value) or (not eq and not optional_value):
            form = "COLUMN[=FIELD]" if optional_value else "COLUMN=FIELD"
            raise SystemExit(f"{option} takes {form}, got {item!r}")
        out[name] = value or None
    return out


def _add_fetch_and_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again; by default a write run again goes on after the shards an "
        "earlier run of it completed",
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="do not force shards, sidecars and the manifest to disk before renaming them",
    )
    parser.add_argument(
        "--fetch-workers",
        type=int,
        default=16,
        metavar="N",
        help="threads reading the files and URLs an index names (default 16)",
    )
    parser.add_argument(
        "--on-error",
        choices=["strict", "skip"],
        default="strict",
        help="a file or URL that cannot be read: stop (strict), or skip its row and record "
        "it in the failures file (skip)",
    )
    parser.add_argument(
        "--failures",
        default=None,
        metavar="PATH",
        help="where skipped rows are recorded, as JSON lines (default: _failures.jsonl "
        "beside the shards)",
    )


def _add_write_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        help="a directory tree, an index file (.jsonl .csv .tsv .parquet) or a glob or brace "
        "list of them, a .txt list of files or URLs, or existing shards "
        "(brace pattern of .tar files, or a manifest .json) to repack",
    )
    parser.add_argument("output", help="printf-style shard pattern, e.g. out/train-%%06d.tar")
    parser.add_argument("--max-samples", type=int, default=None, help="samples per shard")
    parser.add_argument("--max-bytes", type=parse_size, default=None, help="bytes per shard (1GB)")
    parser.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="COLUMN[=FIELD]",
        help="index column holding file paths relative to the index; the field defaults to "
        "the file's extension (repeatable)",
    )
    parser.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="COLUMN=FIELD",
        help="write index column COLUMN as field FIELD (repeatable)",
    )
    parser.add_argument(
        "--key",
        default=None,
        metavar="COLUMN",
        help="index column holding sample keys (default: __key__ if present, else the row number)",
    )
    _add_fetch_and_resume_arguments(parser)


def _run_write(args: argparse.Namespace) -> int:
    skipped: list[str] = []
    if args.fetch_workers < 1:
        raise ValueError(f"--fetch-workers must be >= 1, got {args.fetch_workers}")
    fetch = Fetch(workers=args.fetch_workers, errors=args.on_error)
    progress = Progress(sys.stderr)
    writer = ShardWriter(
        args.output,
        max_samples=args.max_samples,
        max_bytes=args.max_bytes,
        fsync=not args.no_fsync,
        resume=not args.overwrite,
    )
    if writer.resumed:
        print(f"resuming after {writer.resumed:,} samples already written", file=sys.stderr)
    samples = samples_from(
        args.source,
        files=_pairs(args.file, "--file", optional_value=True),
        fields=_pairs(args.field, "--field", False),
        key=args.key,
        skipped=skipped,
        fetch=fetch,
        after=writer.resumed_after,
    )

    def show(force: bool = False) -> None:
        done = w.progress
        failed = len(skipped) + len(fetch.failures)
        extra = f"{done.bytes / 1e6:,.1f} MB" + (f", {failed} skipped" if failed else "")
        progress.update(done.samples, done.shards, force=force, extra=extra)

    with writer as w:
        for sample in samples:
            w.write(sample)
            show()
    show(force=True)
    progress.done()
    manifest = w.manifest()
    pattern = os.path.join(os.path.dirname(args.output), str(_brace(manifest.shards)))
    print(pattern)
    print(
        f"wrote {manifest.total_samples:,} samples in {len(manifest.shards):,} shards "
        f"({manifest.total_bytes / 1e6:,.1f} MB); manifest {w.manifest_path}",
        file=sys.stderr,
    )
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"skipped {len(skipped)} files without a KEY.FIELD name: {shown}", file=sys.stderr)
    if fetch.failures:
        path = args.failures or os.path.join(os.path.dirname(args.output), "_failures.jsonl")
        lines = "".join(json.dumps(failure) + "\n" for failure in fetch.failures)
        atomic_write(path, lines.encode("utf-8"))
        print(
            f"skipped {len(fetch.failures)} rows whose files could not be read: {path}",
            file=sys.stderr,
        )
    return 0


def _brace(names: list[str]) -> str:
    compressed = compress_names(names)
    return compressed if isinstance(compressed, str) else ",".join(compressed)


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


def _run_keys(args: argparse.Namespace) -> int:
    from .run.mapped import ShardDataset

    dataset = ShardDataset(args.source)
    path = dataset.build_key_index(args.output)
    print(path)
    print(f"indexed {len(dataset):,} keys", file=sys.stderr)
    return 0


def _run_quality(args: argparse.Namespace) -> int:
    from .run.quality import measure_order
    from .run.stream import TarStream

    stream = TarStream(args.source, seed=args.seed, shuffle_shards=args.shuffle_shards)
    stream.set_epoch(args.epoch)
    light = stream.select_columns()  # the plan and the sidecars only
    pipeline = light.shuffle(args.shuffle) if args.shuffle else light
    print(json.dumps(measure_order(stream, pipeline).to_dict(), indent=1))
    return 0


def write_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tarstream-write``."""
    parser = argparse.ArgumentParser(
        prog="tarstream-write",
        description="Write tar shards with sidecar indexes and a manifest.",
    )
    _version(parser)
    _add_write_arguments(parser)
    return _guard(_run_write, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tarstream``."""
    parser = argparse.ArgumentParser(prog="tarstream", description="tarstream shard tools.")
    _version(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write shards (same as tarstream-write)")
    _add_write_arguments(write)
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
    quality = commands.add_parser("quality", help="how well a stream's order is shuffled")
    quality.add_argument("source", help="a manifest or a pattern of shards with sidecars")
    quality.add_argument("--shuffle-shards", action="store_true", help="shuffle the shards")
    quality.add_argument("--shuffle", type=int, default=0, help="shuffle buffer size")
    quality.add_argument("--seed", type=int, default=0)
    quality.add_argument("--epoch", type=int, default=0)
    keys = commands.add_parser("keys", help="build the key index that key lookups use")
    keys.add_argument("source", help="a manifest (the index goes beside it) or a pattern")
    keys.add_argument("--output", default=None, help="where to write it (local path)")
    args = parser.parse_args(argv)
    runs = {
        "write": _run_write,
        "index": _run_index,
        "ls": _run_ls,
        "stats": _run_stats,
        "verify": _run_verify,
        "cat": _run_cat,
        "keys": _run_keys,
        "quality": _run_quality,
    }
    return _guard(runs[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
