"""Random access: samples by their number in the dataset, or by key, with ranged reads.

A sample's number is its position in the unshuffled stream (shards in order, samples in
shard order), found from the shards' counts (the manifest's, else the sidecars'). Reading
sample *i* loads its shard's sidecar (a few kept per process) and reads only that sample's
bytes: its byte range, checked against its checksum, or with ``fields`` only the chosen
members' headers and data (``tarstream.format.members``). Files stay open between reads (a
few per process); local shards are read with ``pread``, remote ones with one ranged request
per read (pinned to the version first seen), cached ones from the cache's copy.

Keys: through a key index file where there is one (``tarstream.read.keys``: two small
reads per lookup, nothing held but its fences); else the first lookup hashes every key of
every sidecar (one at a time) into a sorted table of 64-bit hashes and sample numbers held
in memory, 16 bytes per sample. Either way a candidate is checked against its sidecar.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO, cast

import numpy as np

from ..errors import ArgumentError, SidecarError, redact_url
from ..format.members import read_members
from ..format.samples import Sample
from ..format.sidecar import ShardIndex
from ..format.sliced import SliceTable, read_sliced
from ..plan.specs import ShardSpec, load_sidecar
from ..storage.byteio import BytesReader
from ..storage.compressed import is_gzip_name
from ..storage.config import Storage
from ..storage.files import open_input
from ..storage.remote import RemoteInput
from ..storage.urls import is_local, local_path
from .keys import KeyIndex, build_key_table, key_hash
from .packed import packed_values
from .shard import pick_fields, read_shard_at

__all__ = ["RandomAccess"]

#: Samples closer than this in one shard are read in one request.
_READ_SIZE = 256 << 10


class RandomAccess:
    """Samples of ``specs`` by number or key; see the module docstring.

    Args:
        fields: read only these fields (names as read, after lower-casing), or all.
        verify: check each whole sample against its sidecar checksum.
        lowercase: lower-case field names, as the stream does.
        keep: shards whose sidecar and open file are kept per process.
        key_index: where a key index file may be (``tarstream.read.keys``); without one,
            key lookups build a table in memory.
    """

    def __init__(
        self,
        specs: Sequence[ShardSpec],
        *,
        fields: Iterable[str] | None = None,
        verify: bool = True,
        lowercase: bool = True,
        keep: int = 32,
        key_index: str | None = None,
    ) -> None:
        if isinstance(fields, str):
            fields = fields.replace(";", " ").split()
        self.fields = None if fields is None else frozenset(fields)
        if self.fields is not None and not all(isinstance(f, str) for f in self.fields):
            raise ArgumentError(
                f"fields are names as strings, got {sorted(map(repr, self.fields))}"
            )
        self.specs = list(specs)
        self.verify, self.lowercase, self.keep = verify, lowercase, keep
        self.key_index = key_index
        self._sidecars: OrderedDict[int, ShardIndex] = OrderedDict()
        self._tables: dict[int, tuple[ShardIndex, SliceTable]] = {}
        counts = [s.count if s.count is not None else self._count(n) for n, s in enumerate(specs)]
        self.starts = np.cumsum([0, *counts], dtype=np.int64)
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._files: OrderedDict[int, _Ranges] = OrderedDict()
        self._keys: Callable[[str], list[int]] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # open files and tables stay behind
        state = dict(self.__dict__)
        for name in ("_files", "_keys", "_lock"):
            del state[name]
        state["_sidecars"] = OrderedDict()
        state["_tables"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number, sample number in it) of sample ``i`` (negative: from the end)."""
        n = len(self)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise ArgumentError(f"a sample number is an int, got {i!r}")
        if not -n <= i < n:
            raise IndexError(f"sample {i} asked for, the dataset has {n}")
        i = int(i) % n
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        return shard, i - int(self.starts[shard])

    def read(self, indices: Sequence[int]) -> list[Sample]:
        """The samples at ``indices``, in that order; each shard's samples in one pass."""
        where = [self.locate(i) for i in indices]
        by_shard: dict[int, list[int]] = {}
        for shard, local in where:
            by_shard.setdefault(shard, []).append(local)
        got = {shard: self._read_shard(shard, locals_) for shard, locals_ in by_shard.items()}
        return [dict(got[shard][local]) for shard, local in where]

    def _read_shard(self, shard: int, wanted: list[int]) -> dict[int, Sample]:
        spec = self.specs[shard]
        if is_gzip_name(spec.url):  # no seeking into a gzip stream: read up to them
            return read_shard_at(
                spec, wanted, verify=self.verify, lowercase=self.lowercase, fields=self.fields
            )
        index = self.sidecar(shard)
        ranges = self._ranges(shard)
        label = redact_url(spec.url)
        order = sorted(set(wanted))
        if self.fields is not None and not index.packed:
            samples = read_members(
                ranges.read_at, label, index, order, self.fields, lowercase=self.lowercase
            )
            return dict(zip(order, samples, strict=True))
        run = read_sliced(
            cast(BinaryIO, _RangeFile(ranges)),
            label,
            index,
            only=order,
            file_size=ranges.size,
            read_size=_READ_SIZE,
            verify=self.verify,
            lowercase=self.lowercase,
            table=self._table(shard, index),
        )
        if index.packed:
            run = packed_values(pick_fields(run, self.fields), label, None)
        return dict(zip(order, run, strict=True))

    def _table(self, shard: int, index: ShardIndex) -> SliceTable:
        """The slicing table of a shard's sidecar, kept beside it."""
        table = self._tables.get(shard)
        if table is None or table[0] is not index:
            table = (index, SliceTable.of(index, verify=self.verify, lowercase=self.lowercase))
            self._tables[shard] = table
            while len(self._tables) > self.keep:
                self._tables.pop(next(iter(self._tables)))
        return table[1]

    def sidecar(self, shard: int) -> ShardIndex:
        """The sidecar of shard number ``shard`` (kept for the next ``keep`` shards)."""
        index = self._sidecars.get(shard)
        if index is None:
            index = self._load(shard)
            self._sidecars[shard] = index
            while len(self._sidecars) > self.keep:
                self._sidecars.popitem(last=False)
        self._sidecars.move_to_end(shard)
        return index

    def _load(self, shard: int) -> ShardIndex:
        spec = self.specs[shard]
        index = load_sidecar(spec)
        if index is None:
            raise SidecarError(
                "random access needs sidecars: build them with `tarstream index PATTERN`",
                shard=spec.url,
            )
        return index

    def _count(self, shard: int) -> int:
        return self.sidecar(shard).count

    def _ranges(self, shard: int) -> _Ranges:
        with self._lock:
            ranges = self._files.get(shard)
            if ranges is None:
                ranges = self._files[shard] = _Ranges(self.specs[shard])
                while len(self._files) > self.keep:
                    self._files.popitem(last=False)[1].close()
            self._files.move_to_end(shard)
            return ranges

    # -- keys -------------------------------------------------------------------------------
    def find(self, key: str) -> int | None:
        """The number of the sample with ``key`` (the first, if several), or None."""
        if self._keys is None:
            self._keys = self._key_lookup()
        for number in self._keys(key):
            shard, local = self.locate(number)
            if self.sidecar(shard).keys[local] == key:
                return number
        return None

    def _key_lookup(self) -> Callable[[str], list[int]]:
        """The key index file's lookup where there is one, else a table built now."""
        if self.key_index is not None:
            try:
                ranges = _Ranges(ShardSpec(self.key_index, "", storage=self.specs[0].storage))
                index = KeyIndex(ranges.read_at, redact_url(self.key_index))
            except FileNotFoundError:
                index = None
            if index is not None:
                if index.count != len(self):
                    raise SidecarError(
                        f"key index holds {index.count} keys, the dataset has {len(self)} "
                        "samples: rebuild it with `tarstream keys`",
                        shard=self.key_index,
                    )
                return index.candidates
        return _TableLookup(self.key_table())

    def key_table(self) -> np.ndarray:
        """Every sample's key hash and number, sorted (``tarstream.read.keys``), built from
        the sidecars read one at a time."""
        return build_key_table(self._load(shard).keys for shard in range(len(self.specs)))

    def close(self) -> None:
        """Close the files kept open."""
        with self._lock:
            while self._files:
                self._files.popitem()[1].close()


class _TableLookup:
    """Key lookup in a table of records held in memory."""

    def __init__(self, records: np.ndarray) -> None:
        self.hashes, self.numbers = records["hash"], records["number"]

    def __call__(self, key: str) -> list[int]:
        h = np.uint64(key_hash(key))
        lo = int(np.searchsorted(self.hashes, h, side="left"))
        hi = int(np.searchsorted(self.hashes, h, side="right"))
        return sorted(self.numbers[lo:hi].tolist())


class _Ranges:
    """Byte ranges of one shard: ``pread`` on a local file, a ranged request on a remote
    one, or reads of the cache's copy where the storage has a cache."""

    def __init__(self, spec: ShardSpec) -> None:
        self.size: int | None = None
        self._fd: int | None = None
        self._remote: RemoteInput | None = None
        self._file: BinaryIO | None = None
        self._lock = threading.Lock()
        if is_local(spec.url):
            self._fd = os.open(local_path(spec.url), os.O_RDONLY)
            self.size = os.fstat(self._fd).st_size
        elif spec.storage is not None and spec.storage.cache is not None:
            self._file, self.size = open_input(spec.url, spec.storage, size=spec.size)
        else:
            self._remote = RemoteInput(spec.url, spec.storage or Storage(), prefetch=0)

    def read_at(self, start: int, n: int) -> bytes:
        if self._fd is not None:
            parts = []
            while n > 0 and (part := os.pread(self._fd, n, start)):
                parts.append(part)
                start, n = start + len(part), n - len(part)
            return b"".join(parts)
        if self._remote is not None:
            data = self._remote.read_at(start, n)
            self.size = self._remote.size
            return data
        assert self._file is not None
        with self._lock:
            self._file.seek(start)
            return self._file.read(n)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for f in (self._remote, self._file):
            if f is not None:
                f.close()


class _RangeFile(BytesReader):
    """A file over ``_Ranges``: each read is one ranged read at the position reached."""

    def __init__(self, ranges: _Ranges) -> None:
        super().__init__()
        self.ranges, self.position = ranges, 0

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        self.position = offset
        return offset

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max((self.ranges.size or 0) - self.position, 1 << 20)
        data = self.ranges.read_at(self.position, size)
        self.position += len(data)
        return data
