"""``measure_order``: the shuffle-quality figures (``tarstream.plan.quality``) of what a
stream delivers, live on what a loader gave or offline on a plan."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ArgumentError
from ..plan.quality import OrderQuality, order_quality
from ..plan.specs import load_sidecar
from .order import planned_order
from .stream import TarStream

__all__ = ["measure_order"]


def measure_order(stream: TarStream, samples: Iterable[Any] | None = None) -> OrderQuality:
    """The order figures of ``samples`` (dicts with ``__url__`` and ``__key__``, as a
    loader delivered them, batches of them included) from ``stream``'s shards; by default,
    of one epoch of ``stream`` itself in this process, planned on references
    (``planned_order``: nothing is read)."""
    shard_list = stream.shard_list
    starts = shard_list.sample_starts()
    if samples is None:
        return order_quality(planned_order(stream), starts[:-1])
    shard_of = {spec.url: n for n, spec in enumerate(shard_list.specs)}
    local: dict[int, dict[str, int]] = {}
    numbers = []
    for sample in _rows(samples):
        shard = shard_of.get(sample["__url__"])
        if shard is None:
            raise ArgumentError(f"sample from {sample['__url__']!r}, not a shard of the stream")
        if shard not in local:
            index = load_sidecar(shard_list.specs[shard])
            if index is None:
                raise ArgumentError("measuring an order needs sidecars (`tarstream index`)")
            local[shard] = {key: i for i, key in enumerate(index.keys)}
        numbers.append(int(starts[shard]) + local[shard][sample["__key__"]])
    return order_quality(np.asarray(numbers, dtype=np.int64), starts[:-1])


def _rows(items: Iterable[Any]) -> Iterable[dict[str, Any]]:
    """Samples from items that are samples or batches of them (dicts of columns)."""
    for item in items:
        if not isinstance(item, dict) or "__key__" not in item or "__url__" not in item:
            raise ArgumentError("measure_order needs items with __url__ and __key__")
        keys, urls = item["__key__"], item["__url__"]
        if isinstance(keys, str):
            yield item
        else:
            yield from ({"__key__": k, "__url__": u} for k, u in zip(keys, urls, strict=True))
