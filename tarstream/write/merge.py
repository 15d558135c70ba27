"""A write's manifest: where it goes by default, what it lists of the shards written, and
one merged from the manifests of a write's parts (``--part i/n`` on many machines) without
reading a shard or a sidecar."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from ..errors import ManifestError, WriteError
from ..format.manifest import MANIFEST_SUFFIX, Manifest
from ..format.sidecar import SIDECAR_DIR, SIDECAR_SUFFIX, ShardIndex
from ..storage.files import atomic_write

__all__ = ["default_manifest_path", "manifest_of", "merge_manifests", "part_manifest_path"]

_PLACEHOLDER = re.compile(r"%(?:0?\d+)?d")


def default_manifest_path(pattern: str) -> str:
    """Return the manifest path of a shard pattern (or of one shard): beside the shards,
    named after the pattern's prefix, with a leading ``_`` so that tools reading the
    directory as shards (Ray Data, Spark, Arrow) pass it over.

    >>> default_manifest_path("d/train-%06d.tar"), default_manifest_path("d/val-000003.tar")
    ('d/_train.manifest.json', 'd/_val.manifest.json')
    """
    directory, base = os.path.split(pattern)
    stem = _PLACEHOLDER.split(base, maxsplit=1)[0]
    stem = re.sub(r"(\.(tar|tgz|tar\.gz))$", "", stem)
    stem = stem.rstrip("0123456789").rstrip("-_.") or "dataset"
    return os.path.join(directory, "_" + stem.lstrip("_") + MANIFEST_SUFFIX)


def manifest_of(
    indexes: list[tuple[str, ShardIndex]], manifest_path: str, limits: dict[str, Any]
) -> Manifest:
    """The manifest at ``manifest_path`` of shards ``(path, sidecar)``, in order."""
    base = os.path.dirname(manifest_path)
    return Manifest(
        shards=[os.path.relpath(p, base or ".").replace(os.sep, "/") for p, _ in indexes],
        samples=[index.count for _, index in indexes],
        sizes=[index.size for _, index in indexes],
        fields=sorted({f for _, index in indexes for f in index.sample_fields}),
        sidecar_suffix=SIDECAR_SUFFIX,
        sidecar_dir=SIDECAR_DIR,
        writer={"tool": "tarstream.ShardWriter", **limits},
    )


def part_manifest_path(manifest_path: str, part: int, parts: int) -> str:
    """Where part ``part`` of ``parts`` writes its manifest, beside the whole one
    (``_train.manifest.json`` → ``_train.part-0003-of-0016.manifest.json``)."""
    stem = manifest_path.removesuffix(".manifest.json")
    return f"{stem}.part-{part:04d}-of-{parts:04d}.manifest.json"


def merge_manifests(
    paths: Sequence[str], output: str, *, by_name: bool = True, fsync: bool = True
) -> Manifest:
    """Write the manifest ``output`` listing the shards of the manifests ``paths``: sorted
    by name (``by_name``, the order of one write's numbered shards) or in the order given.

    Raises:
        WriteError: no manifests, a shard listed twice, or sidecars in different places.
    """
    if not paths:
        raise WriteError("merge needs at least one manifest")
    base = os.path.dirname(os.path.abspath(output))
    rows: list[tuple[str, int, int]] = []
    fields: set[str] = set()
    layouts: set[tuple[str, str]] = set()
    writer: dict[str, object] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                manifest = Manifest.from_json(f.read(), url=path)
        except OSError as e:
            raise ManifestError(f"{path}: cannot read: {e}") from None
        here = os.path.dirname(os.path.abspath(path))
        for name, count, size in zip(
            manifest.shards, manifest.samples, manifest.sizes, strict=True
        ):
            shard = os.path.relpath(os.path.join(here, name), base).replace(os.sep, "/")
            rows.append((shard, count, size))
        fields.update(manifest.fields)
        layouts.add((manifest.sidecar_dir, manifest.sidecar_suffix))
        writer = writer or dict(manifest.writer)
    if len(layouts) > 1:
        raise WriteError(f"the manifests keep their sidecars in different ways: {sorted(layouts)}")
    names = [shard for shard, _, _ in rows]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise WriteError(f"shard {twice[0]!r} is listed by more than one manifest")
    if by_name:
        rows.sort()
    sidecar_dir, sidecar_suffix = layouts.pop()
    merged = Manifest(
        shards=[shard for shard, _, _ in rows],
        samples=[count for _, count, _ in rows],
        sizes=[size for _, _, size in rows],
        fields=sorted(fields),
        sidecar_suffix=sidecar_suffix,
        sidecar_dir=sidecar_dir,
        writer={**writer, "merged_from": len(paths)},
    )
    atomic_write(output, merged.to_json().encode("utf-8"), fsync=fsync)
    return merged
