"""The index-file source: rows of JSON lines, CSV, TSV or Parquet files (one, or the parts
of a glob or brace list, in order) that name files or URLs plus metadata columns.

Files are read, and URLs (any fsspec scheme) fetched with the storage's retries, by a
bounded pool of threads, ahead of the row being written; rows keep their order. A row whose
file cannot be had stops the write (``errors="strict"``) or is skipped and recorded
(``errors="skip"``: appended to ``failures``).
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

from ..errors import WriteError, redact_url
from ..format.keys import split_member_name
from ..storage.config import Storage
from ..storage.files import read_bytes

__all__ = ["INDEX_SUFFIXES", "Fetch", "after_key", "index_rows", "index_samples", "numbered"]

T = TypeVar("T")


def numbered(items: Iterable[T], keep: Callable[[int], bool] | None) -> Iterator[T]:
    """``items`` whose number (from 0) ``keep`` accepts (all for None)."""
    if keep is None:
        yield from items
        return
    yield from (item for number, item in enumerate(items) if keep(number))


def after_key(
    items: Iterable[T], key: str | None, key_of: Callable[[T], str], source: str
) -> Iterator[T]:
    """``items`` after the one whose key is ``key`` (all of them for None).

    Raises:
        WriteError: no item has that key (the output was written from another source).
    """
    iterator = iter(items)
    if key is not None:
        for item in iterator:
            if key_of(item) == key:
                break
        else:
            raise WriteError(
                f"{source}: the output's last sample {key!r} is not in this source: it holds "
                "another write's shards (write elsewhere, or remove them)"
            )
    yield from iterator


INDEX_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")


@dataclass
class Fetch:
    """How files named by an index are read: ``workers`` threads (reads ahead of the row
    written at most twice that many rows), remote ones through ``storage``; a row whose file
    fails stops the write ("strict") or is skipped, with a record in ``failures`` ("skip")."""

    workers: int = 16
    errors: Literal["strict", "skip"] = "strict"
    storage: Storage | None = None
    failures: list[dict[str, Any]] = dataclass_field(default_factory=list)


def index_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of an index file, as dicts.

    Raises:
        WriteError: a JSON line that is not valid JSON or not an object.
    """
    if path.suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    yield _json_row(path, line_no, line)
        return
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    if path.suffix == ".txt":  # a list of files or URLs: keyed by name
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield {"__key__": _name_key(line.strip()), "file": line.strip()}
        return
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")


def _name_key(location: str) -> str:
    """The key of a listed file (its path before the extension) or URL (its name's)."""
    name = urlparse(location).path.rsplit("/", 1)[-1] if "://" in location else location
    split = split_member_name(name)
    return split[0] if split is not None else name


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise WriteError(
            f"{path}: reading Parquet needs pyarrow: pip install 'tarstream[arrow]'"
        ) from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        yield from batch.to_pylist()  # list and struct columns as lists and dicts


def _json_row(path: Path, line_no: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as e:
        raise WriteError(f"{path}:{line_no}: not valid JSON: {e}") from None
    if not isinstance(row, dict):
        raise WriteError(f"{path}:{line_no}: each line must be a JSON object")
    return row


def index_samples(
    paths: Sequence[Path],
    file_columns: Mapping[str, str | None] | None,
    key_column: str | None,
    rename: Mapping[str, str],
    fetch: Fetch | None = None,
    after: str | None = None,
    keep: Callable[[int], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield samples from the rows of index files ``paths``, in order, from the row after
    the one with key ``after`` on (the files of those before are not read), and only the
    rows whose number (from 0) ``keep`` accepts.

    Columns in ``file_columns`` hold file paths (relative to their index file) or URLs;
    their field is the mapped name, or the file's own extension. Every other column is a
    field of its own, named by ``rename`` or after the column (lists and dicts are written
    as JSON); ``file_columns={}`` says there are only such columns (None: an error, lest
    paths be written as text). ``key_column`` holds the keys (None: the row number over
    all the files).

    Raises:
        WriteError: a named column an index lacks, two columns giving one field, a row
            without a key, a file without an extension to name its field, a file that
            cannot be read (with ``fetch.errors="strict"``).
    """
    if file_columns is None:
        raise WriteError(
            f"{paths[0]}: name the column(s) holding file paths with --file COLUMN "
            "(other columns are written as fields), or say --no-files (files={}) for "
            "an index whose columns are all values"
        )
    fetch = fetch or Fetch()
    window: deque[tuple[_Row, dict[str, Future[bytes]]]] = deque()
    with ThreadPoolExecutor(max(fetch.workers, 1), thread_name_prefix="tarstream-fetch") as pool:
        rows = numbered(_rows(paths, file_columns, key_column, rename), keep)
        for row in after_key(rows, after, lambda r: r.sample["__key__"], str(paths[0])):
            reads = {
                name: pool.submit(_read, row.path, location, fetch.storage)
                for name, (_, location) in row.files.items()
            }
            window.append((row, reads))
            if len(window) > 2 * fetch.workers:
                yield from _finished(*window.popleft(), fetch)
        while window:
            yield from _finished(*window.popleft(), fetch)


@dataclass
class _Row:
    """A row made into a sample but for its files: field -> (column, path or URL)."""

    path: Path
    row_no: int
    sample: dict[str, Any]
    files: dict[str, tuple[str, str]]


def _rows(
    paths: Sequence[Path],
    file_columns: Mapping[str, str | None],
    key_column: str | None,
    rename: Mapping[str, str],
) -> Iterator[_Row]:
    number = 0
    for path in paths:
        for row_no, row in enumerate(index_rows(path), 1):
            if row_no == 1:
                _check_columns(path, row, file_columns, key_column, rename)
            number += 1
            out = _Row(path, row_no, {"__key__": _key(path, row_no, number, row, key_column)}, {})
            source: dict[str, str] = {}  # field -> the column it came from
            for column, value in row.items():
                if column == key_column or value is None or value == "":
                    continue
                if column in file_columns:
                    field = _file_field(path, row_no, column, str(value), file_columns[column])
                    out.files[field] = (column, str(value))
                else:
                    field = rename.get(column, column)
                    out.sample[field] = value
                if field in source:
                    raise WriteError(
                        f"{path}: row {row_no}: columns {source[field]!r} and {column!r} both "
                        f"give field {field!r}; name one with --file COLUMN=FIELD or "
                        "--field COLUMN=FIELD"
                    )
                source[field] = column
            yield out


def _read(index: Path, location: str, storage: Storage | None) -> bytes:
    if "://" in location:
        return read_bytes(location, storage)
    return (index.parent / location).read_bytes()


def _finished(row: _Row, reads: dict[str, Future[bytes]], fetch: Fetch) -> Iterator[dict[str, Any]]:
    """The row's sample with its files, or (skipping) nothing and a failure recorded."""
    for field, future in reads.items():
        try:
            row.sample[field] = future.result()
        except Exception as e:
            column, location = row.files[field]
            shown = redact_url(location)
            if fetch.errors == "strict":
                raise WriteError(
                    f"{row.path}: row {row.row_no}: cannot read {shown!r} (column {column!r}): "
                    f"{type(e).__name__}: {redact_url(str(e))}"
                ) from None
            fetch.failures.append(
                {
                    "index": str(row.path),
                    "row": row.row_no,
                    "column": column,
                    "location": shown,
                    "error": f"{type(e).__name__}: {redact_url(str(e))}",
                }
            )
            return
    yield row.sample


def _check_columns(
    path: Path,
    row: Mapping[str, Any],
    file_columns: Mapping[str, str | None],
    key_column: str | None,
    rename: Mapping[str, str],
) -> None:
    """Every column named on the command line is one of the index's (its first row's)."""
    named = [*file_columns, *rename, *([key_column] if key_column is not None else [])]
    missing = [column for column in named if column not in row]
    if missing:
        raise WriteError(
            f"{path}: no column {', '.join(map(repr, missing))} (columns: {sorted(row)})"
        )


def _key(
    path: Path, row_no: int, number: int, row: Mapping[str, Any], key_column: str | None
) -> str:
    if key_column is None:
        return f"{number - 1:09d}"
    if row.get(key_column) in (None, ""):
        raise WriteError(f"{path}: row {row_no} has no value in key column {key_column!r}")
    return str(row[key_column])


def _file_field(path: Path, row_no: int, column: str, value: str, field: str | None) -> str:
    """The field of the file or URL ``value``: ``field``, else its extension."""
    name = urlparse(value).path.rsplit("/", 1)[-1] if "://" in value else Path(value).name
    field = field or (split_member_name(name) or ("", ""))[1]
    if not field:
        raise WriteError(
            f"{path}: row {row_no}: {redact_url(value)!r} has no extension; "
            f"name its field with --file {column}=FIELD"
        )
    return field
