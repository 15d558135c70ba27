"""Key lookup at any scale: a sorted file of key hashes, searched with two small reads.

The key index (``_NAME.keys.idx`` beside a manifest, built by ``tarstream keys`` or
``ShardDataset.build_key_index``) holds, for every sample, the 64-bit hash of its key and
its sample number, sorted by hash (16 bytes a sample), then the hash of every
``PAGE``-th record (the fences, 8 bytes per 4,096 samples). A lookup reads the header and
the fences once (2 MB for a billion samples), then one page of 64 KB for each key, and
checks the candidates' keys in their shards' sidecars. Nothing else is held in memory, so
lookups work the same at 100,000 shards. Where there is no key index, the table is built
in memory from the sidecars on the first lookup (the same 16 bytes a sample).

Layout (little-endian): ``b"TSKEYS1\\0"``, the record count (u64), the page size (u64),
8 reserved bytes; the records (hash u64, sample number u64); the fences (u64 each).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import numpy as np

from ..errors import SidecarError

__all__ = ["KeyIndex", "build_key_table", "key_hash", "key_index_bytes"]

MAGIC = b"TSKEYS1\x00"
PAGE = 4096
_HEADER = 32
_RECORD = np.dtype([("hash", "<u8"), ("number", "<u8")])

#: ``read_range(start, n)``: bytes ``start:start+n`` of the key index file.
ReadRange = Callable[[int, int], bytes]


def key_hash(key: str) -> int:
    """The 64-bit hash a key is indexed by (BLAKE2b, stable across processes)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def build_key_table(keys_by_shard: Iterable[list[str]]) -> np.ndarray:
    """Records (hash, sample number) of every key, sorted by hash; a repeated key's first
    sample first (a stable sort)."""
    hashes = [
        np.fromiter((key_hash(k) for k in keys), np.uint64, len(keys)) for keys in keys_by_shard
    ]
    flat = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    order = np.argsort(flat, kind="stable")
    records = np.empty(len(flat), _RECORD)
    records["hash"], records["number"] = flat[order], order
    return records


def key_index_bytes(records: np.ndarray) -> bytes:
    """The key index file holding ``records`` (from ``build_key_table``)."""
    header = MAGIC + np.array([len(records), PAGE, 0], "<u8").tobytes()
    fences = records["hash"][::PAGE].astype("<u8")
    return header + records.astype(_RECORD).tobytes() + fences.tobytes()


class KeyIndex:
    """Lookups in a key index file read through ``read_range``."""

    def __init__(self, read_range: ReadRange, name: str) -> None:
        self.read_range, self.name = read_range, name
        header = read_range(0, _HEADER)
        if len(header) < _HEADER or header[:8] != MAGIC:
            raise SidecarError(f"{name}: not a tarstream key index")
        self.count, self.page, _ = (int(x) for x in np.frombuffer(header, "<u8", 3, 8))
        n_fences = -(-self.count // self.page)
        raw = read_range(_HEADER + 16 * self.count, 8 * n_fences)
        if len(raw) != 8 * n_fences:
            raise SidecarError(f"{name}: key index is truncated")
        self.fences = np.frombuffer(raw, "<u8")

    def candidates(self, key: str) -> list[int]:
        """Sample numbers whose key hashes like ``key``, in sample order."""
        if not self.count:
            return []
        h = np.uint64(key_hash(key))
        page = max(int(np.searchsorted(self.fences, h, side="left")) - 1, 0)
        found: list[int] = []
        while page * self.page < self.count:
            first = page * self.page
            n = min(self.page, self.count - first)
            raw = self.read_range(_HEADER + 16 * first, 16 * n)
            if len(raw) != 16 * n:
                raise SidecarError(f"{self.name}: key index is truncated")
            records = np.frombuffer(raw, _RECORD)
            lo = int(np.searchsorted(records["hash"], h, side="left"))
            hi = int(np.searchsorted(records["hash"], h, side="right"))
            found += records["number"][lo:hi].tolist()
            if hi < len(records):
                break
            page += 1
        return sorted(found)
