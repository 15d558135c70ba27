"""What a URL names: a local path, a ``pipe:`` command or a remote (fsspec) object."""

from __future__ import annotations

import os
import posixpath

__all__ = ["PIPE_PREFIX", "is_local", "is_pipe", "join_url", "local_path"]

PIPE_PREFIX = "pipe:"


def is_local(url: str) -> bool:
    """Return True for a plain path or a ``file://`` URL."""
    return ("://" not in url and not is_pipe(url)) or url.startswith("file://")


def local_path(url: str) -> str:
    """Return the path of a local URL (``file:///x`` -> ``/x``)."""
    return url[len("file://") :] if url.startswith("file://") else url


def join_url(base: str, relative: str) -> str:
    """Join ``relative`` onto the directory of ``base`` (a path or URL)."""
    if is_local(base):
        return os.path.join(os.path.dirname(local_path(base)), relative)
    return posixpath.join(posixpath.dirname(base), relative)


def is_pipe(url: str) -> bool:
    """Return True for a ``pipe:COMMAND`` URL (a command whose output is the shard)."""
    return url.startswith(PIPE_PREFIX)
