"""What a write reads from: a directory tree, an index file or existing shards."""

from __future__ import annotations

import csv
import glob
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import WriteError
from ..format.braces import expand
from .directory import directory_groups, directory_samples
from .index_file import INDEX_SUFFIXES, Fetch, after_key, index_rows, index_samples, numbered
from .repack import shard_samples
from .writer import ShardWriter

__all__ = ["iterable_samples", "samples_from", "source_size", "write_samples"]

_SHARD_SUFFIXES = (".tar", ".json")


def samples_from(
    source: str,
    *,
    files: Mapping[str, str | None] | None = None,
    fields: Mapping[str, str] | None = None,
    key: str | None = None,
    skipped: list[str] | None = None,
    fetch: Fetch | None = None,
    after: str | None = None,
    keep: Callable[[int], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """The samples of ``source``: a directory tree (files grouped by key), an index file
    (``.jsonl``, ``.ndjson``, ``.csv``, ``.tsv``, ``.parquet``) or a glob or brace list of
    index parts (read in order: sorted, or as the braces list them), a text file listing
    files or URLs (``.txt``, one a line, keyed by name), or existing shards (a brace
    pattern of ``.tar`` files, or a manifest ``.json``).

    Args:
        files: for an index file, the columns holding file paths, each with its field
            (None: the file's extension); ``{}``: none, every column is a value.
        fields: for an index file, field names of other columns (default: the column's).
        key: for an index file, the column holding keys (default: ``__key__`` if the
            first row has one, else the row number).
        skipped: for a directory, a list to append the files without a field to.
        fetch: how the files an index names are read (threads, storage, failures).
        after: start after the sample with this key (the last a resumed write kept),
            without reading the files of those before where the source allows.
        keep: only the samples whose number in the source (from 0) it accepts, without
            reading the others' files where the source allows (a part of a parallel write).

    Raises:
        WriteError: ``after`` is not a key of the source (the output is another write's).

    Raises:
        WriteError: ``source`` is none of these, or an index file that does not exist.
    """
    path = Path(source)
    if path.is_dir():
        return directory_samples(path, skipped if skipped is not None else [], after, keep)
    if source.endswith(".txt"):
        return _listed(path, fetch, after, keep)
    parts = _index_parts(source)
    if parts:
        if key is None:
            key = "__key__" if "__key__" in next(index_rows(parts[0]), {}) else None
        return index_samples(parts, files, key, fields or {}, fetch, after, keep)
    if source.endswith(_SHARD_SUFFIXES) or "{" in source:
        kept = numbered(shard_samples(source), keep)
        return after_key(kept, after, lambda s: s["__key__"], source)
    raise WriteError(
        f"{source}: not a directory, an index file ({', '.join(INDEX_SUFFIXES)}), a list "
        "(.txt) or shards (.tar pattern, manifest .json)"
    )


def source_size(source: str) -> int | None:
    """How many rows ``source`` holds, where it can be known before writing: Parquet's
    metadata, the non-blank lines of JSON lines and lists, the records of CSV and TSV (a
    pass of the csv module: a quoted field may span lines), a directory's keys; None
    otherwise (another kind of source, or a file that cannot be read)."""
    path = Path(source)
    try:
        if path.is_dir():
            return len(directory_groups(path, []))
        if source.endswith(".txt") and path.is_file():
            return _lines(path)
        parts = _index_parts(source)
        if not parts:
            return None
        return sum(_rows_in(part) for part in parts)
    except (ImportError, OSError, UnicodeDecodeError, csv.Error, WriteError):
        return None


def _rows_in(part: Path) -> int:
    """The rows of one index file (as ``index_rows`` reads them)."""
    if part.suffix == ".parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        return int(pq.ParquetFile(part).metadata.num_rows)
    if part.suffix in (".csv", ".tsv"):
        with open(part, encoding="utf-8", newline="") as f:
            records = csv.reader(f, delimiter="\t" if part.suffix == ".tsv" else ",")
            return max(sum(1 for row in records if row) - 1, 0)  # the header apart
    return _lines(part)


def _lines(path: Path) -> int:
    """The non-blank lines of a text file."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _index_parts(source: str) -> list[Path]:
    """The index files ``source`` names: itself, a glob's matches (sorted) or a brace
    list's names (in order); [] when it names no index file."""
    if not source.endswith(INDEX_SUFFIXES):
        return []
    if any(c in source for c in "*?["):
        names = sorted(glob.glob(source))
    elif "{" in source:
        names = expand(source, limit=1_000_000, what="index pattern")
    else:
        names = [source]
    missing = [name for name in names if not Path(name).is_file()]
    if not names or missing:
        raise WriteError(f"index file {missing[0] if missing else source} does not exist")
    return [Path(name) for name in names]


def _listed(
    path: Path, fetch: Fetch | None, after: str | None, keep: Callable[[int], bool] | None
) -> Iterator[dict[str, Any]]:
    """Samples of the files or URLs a text file lists, one a line: key, the name before
    its extension (the path's, relative to the list, for files); field, the extension."""
    if not path.is_file():
        raise WriteError(f"list file {path} does not exist")
    return index_samples([path], {"file": None}, "__key__", {}, fetch, after, keep)


def iterable_samples(
    items: Iterable[Mapping[str, Any]],
    *,
    key: str | None = None,
    fields: Mapping[str, str] | None = None,
    after: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Samples from rows of a Python iterable (dicts; a Hugging Face ``datasets.Dataset``
    gives them): the key from column ``key``, else ``__key__``, else the row number; every
    other column a field, named by ``fields`` or after the column (values are encoded by
    the field's extension: name an image column ``jpg`` or ``png``); None values left out."""
    rename = fields or {}

    def sample_of(number: int, row: Mapping[str, Any]) -> dict[str, Any]:
        if key is not None and row.get(key) in (None, ""):
            raise WriteError(f"row {number + 1} has no value in key column {key!r}")
        name = row[key] if key is not None else row.get("__key__", f"{number:09d}")
        out: dict[str, Any] = {"__key__": str(name)}
        for column, value in row.items():
            if column not in (key, "__key__") and value is not None:
                out[rename.get(column, column)] = value
        return out

    samples = (sample_of(n, row) for n, row in enumerate(items))
    return after_key(samples, after, lambda s: s["__key__"], "the iterable")


def write_samples(
    items: Iterable[Mapping[str, Any]],
    pattern: str,
    *,
    key: str | None = None,
    fields: Mapping[str, str] | None = None,
    **options: Any,
) -> ShardWriter:
    """Write the rows of ``items`` (see ``iterable_samples``) with a ``ShardWriter`` made
    with ``options`` (``max_samples``, ``resume``, ...); return the closed writer (its
    ``manifest()``, ``shards``, ``progress``). With ``resume=True`` a write run again goes on
    after the last sample it kept."""
    with ShardWriter(pattern, **options) as writer:
        for sample in iterable_samples(items, key=key, fields=fields, after=writer.resumed_after):
            writer.write(sample)
    return writer
