"""The shards source: samples of existing shards, to be written again (repack, reshard)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..run.stream import TarStream

__all__ = ["shard_samples"]


def shard_samples(pattern: str) -> Iterator[dict[str, Any]]:
    """Yield the samples of existing shards (a brace pattern or a manifest), in order."""
    for sample in TarStream(pattern):
        sample.pop("__url__", None)
        yield sample
