"""Sidecars and a manifest for existing shards (``tarstream index``), written beside them
(the sidecars in the ``.tarstream/`` folder)."""

from __future__ import annotations

import glob
import os
import re
from typing import BinaryIO, cast

from ..errors import WriteError
from ..format.braces import expand
from ..format.manifest import Manifest
from ..format.samples import build_sidecar
from ..format.sidecar import SIDECAR_DIR, sidecar_url
from ..storage.compressed import GunzipInput, is_gzip_name
from ..storage.files import atomic_write, open_input
from ..storage.urls import is_local, local_path
from .merge import default_manifest_path
from .progress import Progress

__all__ = ["index_shards"]


def index_shards(
    pattern: str, *, manifest: str | None = None, progress: Progress | None = None
) -> tuple[str, Manifest]:
    """Build the sidecar of every shard ``pattern`` names (in ``.tarstream/`` beside it)
    and a manifest.

    ``pattern``: a brace pattern, a glob (``shards/*.tar``, in sorted order) or both.
    Returns the manifest's path (default: beside the shards, named after the pattern's
    prefix) and the manifest.

    Raises:
        WriteError: a shard that is not local.
        ShardError: a shard that cannot be read as a tar.
    """
    shards = [name for part in expand(pattern) for name in _globbed(part)]
    if not shards:
        raise WriteError(f"{pattern}: names no shard")
    for shard in shards:
        if not is_local(shard):
            raise WriteError(f"{shard}: `tarstream index` writes sidecars beside local shards only")
    counts, sizes, fields = [], [], set()
    total = 0
    for number, shard in enumerate(shards):
        f, _ = open_input(shard)
        if is_gzip_name(shard):  # the sidecar describes the tar inside
            f = cast(BinaryIO, GunzipInput(f, shard))
        with f:
            index = build_sidecar(f, shard, name=os.path.basename(shard))
        atomic_write(sidecar_url(local_path(shard)), index.to_bytes())
        counts.append(index.count)
        sizes.append(index.size)
        fields.update(index.fields)
        total += index.count
        if progress is not None:
            progress.update(total, number + 1)
    manifest_path = manifest or default_manifest_path(
        re.sub(
            r"\{[^}]*\}|[*?]|\[[^]]*\]",
            "%d",
            local_path(shards[0]) if len(shards) == 1 else pattern,
        )
    )
    base = os.path.dirname(manifest_path)
    written = Manifest(
        shards=[os.path.relpath(local_path(s), base or ".").replace(os.sep, "/") for s in shards],
        samples=counts,
        sizes=sizes,
        fields=sorted(fields),
        sidecar_dir=SIDECAR_DIR,
        writer={"tool": "tarstream index"},
    )
    atomic_write(manifest_path, written.to_json().encode("utf-8"))
    return manifest_path, written


def _globbed(name: str) -> list[str]:
    """The files a glob names, sorted (a name without ``*?[`` is itself)."""
    if not any(c in name for c in "*?["):
        return [name]
    return sorted(glob.glob(name))
