"""Command-line tools: ``tarstream-write`` and ``tarstream`` (``write``, ``index``)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from braceexpand import braceexpand

from .errors import TarstreamError
from .index import SIDECAR_SUFFIX
from .keys import split_member_name
from .manifest import Manifest, compress_names
from .storage import atomic_write, is_local, local_path, open_input
from .tar import build_index
from .writer import ShardWriter, default_manifest_path

__all__ = ["main", "parse_size", "write_main"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_INDEX_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")
_SHARD_SUFFIXES = (".tar", ".json")


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


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.last = 0.0

    def update(self, samples: int, shards: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self.last > 0.2):
            self.last = now
            self.stream.write(f"\r{samples:,} samples, {shards:,} shards")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def directory_samples(root: Path, skipped: list[str]) -> Iterator[dict[str, Any]]:
    """Yield samples from a directory tree: files grouped by key, keys in sorted order."""
    groups: dict[str, dict[str, Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in filenames:
            path = Path(dirpath) / filename
            rel = path.relative_to(root).as_posix()
            parts = split_member_name(rel)
            if parts is None or filename.startswith("."):
                skipped.append(rel)
                continue
            groups.setdefault(parts[0], {})[parts[1]] = path
    for key in sorted(groups):
        sample: dict[str, Any] = {"__key__": key}
        for field, path in groups[key].items():
            sample[field] = path.read_bytes()
        yield sample


def _index_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as e:
                        raise SystemExit(f"{path}:{line_no}: not valid JSON: {e}") from None
                    if not isinstance(row, dict):
                        raise SystemExit(f"{path}:{line_no}: each line must be a JSON object")
                    yield row
        return
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")


def index_samples(
    path: Path, file_columns: dict[str, str | None], key_column: str | None, rename: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """Yield samples from an index file's rows.

    Columns in ``file_columns`` hold file paths (relative to the index file); their field is
    the mapped name, or the file's own extension. Every other column is a field of its own,
    named by ``rename`` or after the column.
    """
    base = path.parent
    for row_no, row in enumerate(_index_rows(path)):
        if key_column is not None:
            if row.get(key_column) in (None, ""):
                raise SystemExit(
                    f"{path}: row {row_no + 1} has no value in key column {key_column!r}"
                )
            key = str(row[key_column])
        else:
            key = f"{row_no:09d}"
        sample: dict[str, Any] = {"__key__": key}
        for column, value in row.items():
            if column == key_column or value is None or value == "":
                continue
            if column in file_columns:
                file_path = base / str(value)
                field = file_columns[column] or (split_member_name(file_path.name) or ("", ""))[1]
                if not field:
                    raise SystemExit(
                        f"{path}: row {row_no + 1}: {value!r} has no extension; "
                        f"name its field with --file {column}=FIELD"
                    )
                try:
                    sample[field] = file_path.read_bytes()
                except OSError as e:
                    raise SystemExit(f"{path}: row {row_no + 1}: cannot read {value!r}: {e}") from e
            else:
                sample[rename.get(column, column)] = value
        yield sample


def shard_samples(pattern: str) -> Iterator[dict[str, Any]]:
    """Yield samples from existing shards (for repacking)."""
    from .stream import TarStream

    for sample in TarStream(pattern):
        sample.pop("__url__", None)
        yield sample


def _pairs(values: Sequence[str], option: str, optional_value: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not name or (eq and not value) or (not eq and not optional_value):
            form = "COLUMN[=FIELD]" if optional_value else "COLUMN=FIELD"
            raise SystemExit(f"{option} takes {form}, got {item!r}")
        out[name] = value or None
    return out


def _add_write_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        help="a directory tree, an index file (.jsonl .csv .tsv), or existing shards "
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


def _run_write(args: argparse.Namespace) -> int:
    source = Path(args.source)
    skipped: list[str] = []
    samples: Iterator[dict[str, Any]]
    if source.is_dir():
        samples = directory_samples(source, skipped)
    elif source.suffix in _INDEX_SUFFIXES:
        if not source.is_file():
            raise SystemExit(f"index file {source} does not exist")
        files = _pairs(args.file, "--file", optional_value=True)
        if not files:
            raise SystemExit(
                f"{source}: name the column(s) holding file paths with --file COLUMN "
                "(other columns are written as fields)"
            )
        key_column = args.key
        if key_column is None:
            first = next(_index_rows(source), {})
            key_column = "__key__" if "__key__" in first else None
        samples = index_samples(source, files, key_column, _pairs(args.field, "--field", False))
    elif args.source.endswith(_SHARD_SUFFIXES) or "{" in args.source:
        samples = shard_samples(args.source)
    else:
        raise SystemExit(
            f"{args.source}: not a directory, an index file ({', '.join(_INDEX_SUFFIXES)}) "
            "or shards (.tar pattern, manifest .json)"
        )
    progress = Progress(sys.stderr)
    count = 0
    with ShardWriter(args.output, max_samples=args.max_samples, max_bytes=args.max_bytes) as w:
        for sample in samples:
            w.write(sample)
            count += 1
            progress.update(count, len(w.shards) + 1)
    progress.update(count, len(w.shards), force=True)
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
    return 0


def _brace(names: list[str]) -> str:
    compressed = compress_names(names)
    return compressed if isinstance(compressed, str) else ",".join(compressed)


def _run_index(args: argparse.Namespace) -> int:
    shards = [name for name in braceexpand(args.pattern)]
    for shard in shards:
        if not is_local(shard):
            raise SystemExit(f"{shard}: `tarstream index` writes sidecars beside local shards only")
    counts, sizes, fields = [], [], set()
    progress = Progress(sys.stderr)
    total = 0
    for number, shard in enumerate(shards):
        f, _ = open_input(shard)
        with f:
            index = build_index(f, shard, name=os.path.basename(shard))
        atomic_write(local_path(shard) + SIDECAR_SUFFIX, index.to_bytes())
        counts.append(index.count)
        sizes.append(index.size)
        fields.update(index.fields)
        total += index.count
        progress.update(total, number + 1)
    progress.done()
    manifest_path = args.manifest or default_manifest_path(
        re.sub(r"\{[^}]*\}", "%d", local_path(shards[0]) if len(shards) == 1 else args.pattern)
    )
    base = os.path.dirname(manifest_path)
    manifest = Manifest(
        shards=[os.path.relpath(local_path(s), base or ".").replace(os.sep, "/") for s in shards],
        samples=counts,
        sizes=sizes,
        fields=sorted(fields),
        writer={"tool": "tarstream index"},
    )
    atomic_write(manifest_path, manifest.to_json().encode("utf-8"))
    print(manifest_path)
    print(
        f"indexed {total:,} samples in {len(shards):,} shards; sidecars written beside them",
        file=sys.stderr,
    )
    return 0


def _guard(run: Any, args: argparse.Namespace) -> int:
    try:
        return int(run(args))
    except (TarstreamError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def write_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tarstream-write``."""
    parser = argparse.ArgumentParser(
        prog="tarstream-write",
        description="Write tar shards with sidecar indexes and a manifest.",
    )
    _add_write_arguments(parser)
    return _guard(_run_write, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tarstream``."""
    parser = argparse.ArgumentParser(prog="tarstream", description="tarstream shard tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write shards (same as tarstream-write)")
    _add_write_arguments(write)
    index = commands.add_parser(
        "index", help="build sidecars and a manifest for existing shards, in place"
    )
    index.add_argument("pattern", help="brace pattern of existing shards")
    index.add_argument("--manifest", default=None, help="manifest path (default: beside them)")
    args = parser.parse_args(argv)
    return _guard(_run_write if args.command == "write" else _run_index, args)


if __name__ == "__main__":
    sys.exit(main())
