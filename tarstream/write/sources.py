"""What a write reads from: a directory tree, an index file or existing shards."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import WriteError
from .directory import directory_samples
from .index_file import INDEX_SUFFIXES, index_rows, index_samples
from .repack import shard_samples

__all__ = ["samples_from"]

_SHARD_SUFFIXES = (".tar", ".json")


def samples_from(
    source: str,
    *,
    files: Mapping[str, str | None] | None = None,
    fields: Mapping[str, str] | None = None,
    key: str | None = None,
    skipped: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """The samples of ``source``: a directory tree (files grouped by key), an index file
    (``.jsonl``, ``.ndjson``, ``.csv``, ``.tsv``), or existing shards (a brace pattern of
    ``.tar`` files, or a manifest ``.json``).

    Args:
        files: for an index file, the columns holding file paths, each with its field
            (None: the file's extension).
        fields: for an index file, field names of other columns (default: the column's).
        key: for an index file, the column holding keys (default: ``__key__`` if the
            first row has one, else the row number).
        skipped: for a directory, a list to append the files without a field to.

    Raises:
        WriteError: ``source`` is none of these, or an index file that does not exist.
    """
    path = Path(source)
    if path.is_dir():
        return directory_samples(path, skipped if skipped is not None else [])
    if path.suffix in INDEX_SUFFIXES:
        if not path.is_file():
            raise WriteError(f"index file {path} does not exist")
        if key is None:
            key = "__key__" if "__key__" in next(index_rows(path), {}) else None
        return index_samples(path, files or {}, key, fields or {})
    if source.endswith(_SHARD_SUFFIXES) or "{" in source:
        return shard_samples(source)
    raise WriteError(
        f"{source}: not a directory, an index file ({', '.join(INDEX_SUFFIXES)}) "
        "or shards (.tar pattern, manifest .json)"
    )
