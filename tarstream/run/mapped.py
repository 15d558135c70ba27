"""ShardDataset: map-style access to a set of shards (``len``, ``ds[i]``, ``ds.get(key)``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ArgumentError
from ..format.samples import Sample
from ..plan.specs import Source, resolve_shards
from ..read.access import RandomAccess
from ..read.keys import key_index_bytes
from ..stages.decode import Decode
from ..storage.config import Storage
from ..storage.files import atomic_write
from ..storage.urls import is_local, local_path

__all__ = ["ShardDataset"]


class ShardDataset:
    """The samples of a set of shards by number and by key, read with ranged reads.

    Sample ``i`` is the i-th sample of the unshuffled ``TarStream`` over the same source.
    It works as a map-style dataset for a torch ``DataLoader`` (``shuffle=True``, a
    ``DistributedSampler``, workers under fork and spawn): ``__getitems__`` reads a batch's
    samples shard by shard. Needs sidecars (``tarstream index``).

    Args:
        source: a manifest, a brace pattern or a list of those (as ``TarStream`` takes).
        fields: read only these fields (names or a string of names separated by spaces):
            only their members' headers and bytes are read; each header is checked against
            the sidecar (whole samples are checked against their checksums instead).
        decode: decode fields as ``Decode`` does: True (its defaults), an image form such
            as "rgb8", or a ``Decode`` stage; False leaves bytes.
        map: a function applied to each sample after decoding.
        storage: how remote URLs are read (a cache, if it has one, holds whole shards).
        verify: check whole samples against their sidecar checksums.
        lowercase_fields: lower-case field names, as ``TarStream`` does.
        keep: shards whose sidecars and open files are kept per process.
        keys: the key index file lookups use (``tarstream keys`` builds it); "auto":
            ``_NAME.keys.idx`` beside a manifest ``_NAME.manifest.json``, if it is there.
            Without one, the first lookup builds a table in memory (16 bytes a sample).
    """

    def __init__(
        self,
        source: Source,
        *,
        fields: Iterable[str] | str | None = None,
        decode: bool | str | Decode = False,
        map: Callable[[Sample], Any] | None = None,
        storage: Storage | None = None,
        verify: bool = True,
        lowercase_fields: bool = True,
        keep: int = 32,
        keys: str | None = "auto",
    ) -> None:
        specs = resolve_shards(source, storage=storage)
        if keys == "auto":
            keys = default_key_index(source)
        self.access = RandomAccess(
            specs,
            fields=fields,
            verify=verify,
            lowercase=lowercase_fields,
            keep=keep,
            key_index=keys,
        )
        if isinstance(decode, Decode):
            self.decoder: Decode | None = decode
        elif decode is True:
            self.decoder = Decode()
        elif isinstance(decode, str):
            self.decoder = Decode(decode)
        else:
            self.decoder = None
        self.map = map

    def __len__(self) -> int:
        return len(self.access)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return self.__getitems__(range(*i.indices(len(self))))
        return self._finish(self.access.read([i])[0])

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The samples at ``indices`` (what a torch DataLoader asks for a batch)."""
        return [self._finish(sample) for sample in self.access.read(list(indices))]

    def index(self, key: str) -> int:
        """The number of the sample with ``key``; ``KeyError`` if there is none."""
        found = self.access.find(key)
        if found is None:
            raise KeyError(key)
        return found

    def get(self, key: str, default: Any = None) -> Any:
        """The sample with ``key``, or ``default``."""
        found = self.access.find(key)
        return default if found is None else self[found]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.access.find(key) is not None

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def _finish(self, sample: Sample) -> Any:
        if self.decoder is not None:
            sample = self.decoder.apply(sample)
        return sample if self.map is None else self.map(sample)

    def build_key_index(self, path: str | None = None) -> str:
        """Write the key index (``tarstream.read.keys``) to ``path`` (default: where
        ``keys`` points), a local path; return it. Later lookups use it."""
        path = path or self.access.key_index
        if not path:
            raise ArgumentError("no path for the key index: give one (the source is no manifest)")
        if not is_local(path):
            raise ArgumentError(f"the key index is written locally, then copied: got {path!r}")
        atomic_write(local_path(path), key_index_bytes(self.access.key_table()))
        self.access.key_index = path
        self.access._keys = None
        return path

    def close(self) -> None:
        """Close the files kept open (they are also closed when the dataset is collected)."""
        self.access.close()

    def __repr__(self) -> str:
        return f"ShardDataset({len(self.access.specs)} shards, {len(self)} samples)"


def default_key_index(source: Source) -> str | None:
    """``_NAME.keys.idx`` beside a manifest ``_NAME.manifest.json`` (None for other sources)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str) and source.endswith(".manifest.json"):
        return source[: -len(".manifest.json")] + ".keys.idx"
    return None
