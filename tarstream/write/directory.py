"""The directory source: files grouped into samples by key (``a/0001.jpg`` and
``a/0001.json`` form sample ``a/0001``), keys in sorted order."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..format.keys import split_member_name
from .index_file import after_key, numbered

__all__ = ["directory_groups", "directory_samples"]


def directory_samples(
    root: Path,
    skipped: list[str],
    after: str | None = None,
    keep: Callable[[int], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield samples from a directory tree, keys in sorted order, from the key after
    ``after`` on (the files of those before are not read); files without a ``KEY.FIELD``
    name, and hidden files, are appended to ``skipped``; ``keep``: only the samples whose
    number it accepts."""
    groups = directory_groups(root, skipped)
    for key in after_key(numbered(sorted(groups), keep), after, str, str(root)):
        sample: dict[str, Any] = {"__key__": key}
        for field, path in groups[key].items():
            sample[field] = path.read_bytes()
        yield sample


def directory_groups(root: Path, skipped: list[str]) -> dict[str, dict[str, Path]]:
    """Each key's files by field; files without a ``KEY.FIELD`` name, and hidden files,
    are appended to ``skipped``."""
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
    return groups
