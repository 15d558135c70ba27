"""Writing with Ray: the parts of a write (``write_part``) as Ray tasks, then one manifest.

Every task writes to the same output pattern, which must be a path all of the cluster's
nodes share (a network file system); each task writes the shards its part owns, under
temporary names of its own, and a part manifest; the driver merges the part manifests
(``merge_manifests``) without reading a shard. The result is the one-process write, byte
for byte. ``ray`` is an optional dependency (the ``ray`` extra).
"""

from __future__ import annotations

from typing import Any

from ..errors import WriteError
from ..format.manifest import Manifest
from .index_file import Fetch
from .merge import default_manifest_path, merge_manifests
from .parallel import write_part

__all__ = ["write_with_ray"]


def _task(source: str, pattern: str, part: int, parts: int, options: dict[str, Any]) -> str:
    _, path, failures = write_part(source, pattern, part=part, parts=parts, **options)
    if failures:
        raise WriteError(f"part {part}: {len(failures)} rows could not be read: {failures[:3]}")
    return path


def write_with_ray(
    source: str,
    pattern: str,
    *,
    parts: int,
    max_samples: int,
    fsync: bool = True,
    fetch: Fetch | None = None,
    **options: Any,
) -> Manifest:
    """Write ``source`` into shards of ``max_samples`` with ``parts`` Ray tasks (``ray.init``
    first, or it starts a local cluster); return the merged manifest, written beside the
    shards. ``options`` are ``write_part``'s: ``samples_from``'s (files, fields, key) and
    ``pack``."""
    try:
        import ray
    except ImportError:
        raise WriteError("writing with Ray needs ray: pip install 'tarstream[ray]'") from None
    fetch = fetch or Fetch()
    task = ray.remote(_task)
    settings = {**options, "max_samples": max_samples, "fsync": fsync, "fetch": fetch}
    refs = [task.remote(source, pattern, part, parts, dict(settings)) for part in range(parts)]
    paths = ray.get(refs)
    return merge_manifests(paths, default_manifest_path(pattern), fsync=fsync)
