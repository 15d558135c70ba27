"""Open shards, sidecars and manifests by local path or fsspec URL.

Local paths (and ``file://`` URLs) are opened with the built-in ``open`` and unbuffered
reads: the reader does its own large reads, and fsspec's layer costs time there. Any other
URL goes through ``fsspec``.
"""

from __future__ import annotations

import os
import posixpath
from typing import BinaryIO

from .errors import redact_url

__all__ = [
    "atomic_write",
    "is_local",
    "join_url",
    "local_path",
    "open_input",
    "read_bytes",
]


def is_local(url: str) -> bool:
    """Return True for a plain path or a ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    """Return the path of a local URL (``file:///x`` -> ``/x``)."""
    return url[len("file://") :] if url.startswith("file://") else url


def join_url(base: str, relative: str) -> str:
    """Join ``relative`` onto the directory of ``base`` (a path or URL)."""
    if is_local(base):
        return os.path.join(os.path.dirname(local_path(base)), relative)
    return posixpath.join(posixpath.dirname(base), relative)


def open_input(url: str) -> tuple[BinaryIO, int | None]:
    """Open ``url`` for reading; return the file and its size where known cheaply.

    Raises:
        FileNotFoundError: with the redacted URL, where the object does not exist.
    """
    if is_local(url):
        f = open(local_path(url), "rb", buffering=0)  # noqa: SIM115 - caller closes
        return f, os.fstat(f.fileno()).st_size
    import fsspec

    try:
        opened = fsspec.open(url, "rb").open()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{redact_url(url)}: no such object") from e
    size = getattr(opened, "size", None)
    return opened, size if isinstance(size, int) else None


def read_bytes(url: str) -> bytes:
    """Return the whole content of a small file (a sidecar or manifest)."""
    f, _ = open_input(url)
    with f:
        return f.read()


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to a local ``path`` through a temporary file and a rename."""
    directory, base = os.path.split(path)
    temp = os.path.join(directory, f".{base}.partial")
    with open(temp, "wb") as f:
        f.write(data)
    os.replace(temp, path)
