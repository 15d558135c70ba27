"""``tarstream-write`` and ``tarstream write``: the arguments and the run."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from ..format.manifest import compress_names
from ..storage.files import atomic_write
from ..write.index_file import Fetch
from ..write.parallel import write_parallel, write_part
from ..write.progress import Progress
from ..write.sources import samples_from, source_size
from ..write.writer import ShardWriter

__all__ = ["add_write_arguments", "brace", "parse_size", "run_write"]

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


def _file_columns(args: argparse.Namespace) -> dict[str, Any] | None:
    """The index's file columns: those ``--file`` names, none with ``--no-files``."""
    if args.no_files and args.file:
        raise SystemExit("--no-files and --file exclude each other")
    return {} if args.no_files else _pairs(args.file, "--file", optional_value=True) or None


def _add_fetch_and_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="write with N processes (needs --max-samples and no --max-bytes: the shards "
        "are the same as with one)",
    )
    parser.add_argument(
        "--part",
        default=None,
        metavar="I/N",
        help="write part I of N (from 0) in this process, on its own machine; then "
        "`tarstream merge` the parts' manifests (needs --max-samples, no --max-bytes)",
    )
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


def add_write_arguments(parser: argparse.ArgumentParser) -> None:
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
        "--no-files",
        action="store_true",
        help="the index names no files: every column is a field (texts, labels, metadata)",
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
    parser.add_argument(
        "--pack",
        choices=["none", "small", "all"],
        default="small",
        help="small fields in packed members (FORMAT.md, Packed fields): 'small' (default) "
        "packs samples whose fields are all small into blocks; 'all' also the small fields "
        "of samples with images; 'none': a member per field, as webdataset writes",
    )
    _add_fetch_and_resume_arguments(parser)


def run_write(args: argparse.Namespace) -> int:
    skipped: list[str] = []
    if args.fetch_workers < 1:
        raise ValueError(f"--fetch-workers must be >= 1, got {args.fetch_workers}")
    fetch = Fetch(workers=args.fetch_workers, errors=args.on_error)
    if args.workers != 1 or args.part is not None:
        return _run_parallel_write(args, fetch)
    total = source_size(args.source) if sys.stderr.isatty() else None  # shown on a terminal
    progress = Progress(sys.stderr, samples=total)
    writer = ShardWriter(
        args.output,
        max_samples=args.max_samples,
        max_bytes=args.max_bytes,
        fsync=not args.no_fsync,
        resume=not args.overwrite,
        pack=args.pack,
    )
    if writer.resumed:
        print(f"resuming after {writer.resumed:,} samples already written", file=sys.stderr)
    samples = samples_from(
        args.source,
        files=_file_columns(args),
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
    pattern = os.path.join(os.path.dirname(args.output), str(brace(manifest.shards)))
    print(pattern)
    print(
        f"wrote {manifest.total_samples:,} samples in {len(manifest.shards):,} shards "
        f"({manifest.total_bytes / 1e6:,.1f} MB); manifest {w.manifest_path}",
        file=sys.stderr,
    )
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"skipped {len(skipped)} files without a KEY.FIELD name: {shown}", file=sys.stderr)
    _report_failures(args, fetch)
    return 0


def _run_parallel_write(args: argparse.Namespace, fetch: Fetch) -> int:
    if args.workers < 1 or args.max_samples is None or args.max_bytes is not None:
        raise ValueError("--workers and --part need --max-samples, without --max-bytes")
    if args.overwrite:
        raise ValueError("--overwrite is for one process: remove the output first")
    options: dict[str, Any] = dict(
        max_samples=args.max_samples,
        fsync=not args.no_fsync,
        pack=args.pack,
        fetch=fetch,
        files=_file_columns(args),
        fields=_pairs(args.field, "--field", False),
        key=args.key,
    )
    if args.part is not None:
        part, _, parts = args.part.partition("/")
        if not (part.isdigit() and parts.isdigit()):
            raise ValueError(f"--part takes I/N, got {args.part!r}")
        manifest, path, failures = write_part(
            args.source, args.output, part=int(part), parts=int(parts), **options
        )
        how = f"part {part} of {parts}"
    else:
        manifest, path, failures = write_parallel(
            args.source, args.output, workers=args.workers, **options
        )
        how = f"{args.workers} processes"
    print(os.path.join(os.path.dirname(args.output), str(brace(manifest.shards))))
    print(
        f"wrote {manifest.total_samples:,} samples in {len(manifest.shards):,} shards with "
        f"{how}; manifest {path}",
        file=sys.stderr,
    )
    fetch.failures.extend(failures)
    _report_failures(args, fetch)
    return 0


def _report_failures(args: argparse.Namespace, fetch: Fetch) -> None:
    if fetch.failures:
        path = args.failures or os.path.join(os.path.dirname(args.output), "_failures.jsonl")
        lines = "".join(json.dumps(failure) + "\n" for failure in fetch.failures)
        atomic_write(path, lines.encode("utf-8"))
        print(
            f"skipped {len(fetch.failures)} rows whose files could not be read: {path}",
            file=sys.stderr,
        )


def brace(names: list[str]) -> str:
    compressed = compress_names(names)
    return compressed if isinstance(compressed, str) else ",".join(compressed)
