"""The index-file source: rows of a JSON lines, CSV or TSV file that name files plus
metadata columns."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import WriteError
from ..format.keys import split_member_name

__all__ = ["INDEX_SUFFIXES", "index_rows", "index_samples"]

INDEX_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")


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
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")


def _json_row(path: Path, line_no: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as e:
        raise WriteError(f"{path}:{line_no}: not valid JSON: {e}") from None
    if not isinstance(row, dict):
        raise WriteError(f"{path}:{line_no}: each line must be a JSON object")
    return row


def index_samples(
    path: Path,
    file_columns: Mapping[str, str | None],
    key_column: str | None,
    rename: Mapping[str, str],
) -> Iterator[dict[str, Any]]:
    """Yield samples from an index file's rows.

    Columns in ``file_columns`` hold file paths (relative to the index file); their field is
    the mapped name, or the file's own extension. Every other column is a field of its own,
    named by ``rename`` or after the column. ``key_column`` holds the keys (None: the row
    number).

    Raises:
        WriteError: a named column the index lacks, two columns giving one field, a row
            without a key, a file without an extension to name its field, a file that
            cannot be read.
    """
    if not file_columns:
        raise WriteError(
            f"{path}: name the column(s) holding file paths with --file COLUMN "
            "(other columns are written as fields)"
        )
    for row_no, row in enumerate(index_rows(path), 1):
        if row_no == 1:
            _check_columns(path, row, file_columns, key_column, rename)
        sample: dict[str, Any] = {"__key__": _key(path, row_no, row, key_column)}
        source: dict[str, str] = {}  # field -> the column it came from
        for column, value in row.items():
            if column == key_column or value is None or value == "":
                continue
            if column in file_columns:
                field, data = _file_field(path, row_no, column, str(value), file_columns[column])
            else:
                field, data = rename.get(column, column), value
            if field in source:
                raise WriteError(
                    f"{path}: row {row_no}: columns {source[field]!r} and {column!r} both give "
                    f"field {field!r}; name one with --file COLUMN=FIELD or --field COLUMN=FIELD"
                )
            source[field] = column
            sample[field] = data
        yield sample


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


def _key(path: Path, row_no: int, row: Mapping[str, Any], key_column: str | None) -> str:
    if key_column is None:
        return f"{row_no - 1:09d}"
    if row.get(key_column) in (None, ""):
        raise WriteError(f"{path}: row {row_no} has no value in key column {key_column!r}")
    return str(row[key_column])


def _file_field(
    path: Path, row_no: int, column: str, value: str, field: str | None
) -> tuple[str, bytes]:
    """The field and bytes of the file ``value`` names (relative to the index)."""
    file_path = path.parent / value
    field = field or (split_member_name(file_path.name) or ("", ""))[1]
    if not field:
        raise WriteError(
            f"{path}: row {row_no}: {value!r} has no extension; "
            f"name its field with --file {column}=FIELD"
        )
    try:
        return field, file_path.read_bytes()
    except OSError as e:
        raise WriteError(f"{path}: row {row_no}: cannot read {value!r}: {e}") from e
