"""Looking inside a dataset without a pipeline: what ``tarstream ls``, ``stats``, ``verify``
and ``cat`` print.

Each works shard by shard over what ``tarstream.plan.specs.resolve_shards`` names (a
manifest, a pattern, a URL): from sidecars where they exist (nothing else is read for
``ls``), by reading the shard otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import ShardError, redact_url
from ..format.samples import Sample
from ..plan.specs import ShardSpec, load_sidecar
from .shard import read_shard

__all__ = ["ShardSummary", "find_sample", "summarize", "verify"]


@dataclass
class ShardSummary:
    """One shard: its URL (redacted), samples, bytes, how many members each field has,
    and whether a sidecar told it (else the shard was read)."""

    url: str
    samples: int | None = None
    size: int | None = None
    fields: Counter[str] = field(default_factory=Counter)
    from_sidecar: bool = False
    problem: str | None = None


def summarize(spec: ShardSpec, *, read: bool) -> ShardSummary:
    """What ``spec``'s sidecar says about it, or (``read``) what reading it finds."""
    summary = ShardSummary(redact_url(spec.url), spec.count, spec.size)
    try:
        index = load_sidecar(spec)
        if index is not None:
            summary.samples, summary.size, summary.from_sidecar = index.count, index.size, True
            summary.fields.update(index.fields[i] for i in index.member_field.tolist())
        elif read:
            _count(summary, read_shard(spec, sidecars="ignore"))
    except ShardError as e:
        summary.problem = str(e)
    return summary


def verify(spec: ShardSpec) -> ShardSummary:
    """Read every byte of ``spec``: against its sidecar's checksums where it has one
    (``problem`` says what does not match), its headers otherwise."""
    summary = ShardSummary(redact_url(spec.url))
    try:
        summary.from_sidecar = load_sidecar(spec) is not None
        _count(summary, read_shard(spec, sidecars="auto", verify=True))
    except ShardError as e:
        summary.problem = str(e)
    return summary


def _count(summary: ShardSummary, samples: Iterator[Sample]) -> None:
    """Count ``samples`` and their fields into ``summary`` as they are read (so a failure
    part way leaves the count of those before it)."""
    summary.samples = 0
    for sample in samples:
        summary.samples += 1
        summary.fields.update(k for k in sample if not k.startswith("__"))


def find_sample(specs: Iterable[ShardSpec], key: str) -> Iterator[Sample]:
    """The samples with ``key``, shard by shard (through sidecars' key lists where they
    exist, without reading the other samples)."""
    for spec in specs:
        index = load_sidecar(spec)
        if index is not None:
            if key not in index.keys:
                continue
            position = index.keys.index(key)
            yield from read_shard(spec, first=position, stop=position + 1)
            continue
        yield from (s for s in read_shard(spec, sidecars="ignore") if s["__key__"] == key)
