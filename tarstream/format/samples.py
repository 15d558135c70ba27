"""Sample grouping: a run of adjacent members sharing a key is one sample.

``read_samples`` is the one place members become samples, for reading a shard without a
sidecar and for building its sidecar (``build_sidecar``). Each field is yielded as
``bytes``: one copy out of the large read buffer, so holding a sample never pins a read
buffer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator
from dataclasses import replace
from itertools import pairwise
from typing import Any, BinaryIO

import numpy as np

from ..errors import ShardFormatError
from .bulk import Member, Run
from .checksum import crc32
from .keys import split_member_name, unsafe_key
from .packed import BLOCK_FIELD, PACKED_FIELD, split_block, unpack_fields
from .scan import DEFAULT_MAX_MEMBER_SIZE, DEFAULT_READ_SIZE, ReadStats, read_exact, scan_members
from .sidecar import ShardIndex

__all__ = ["Layout", "Sample", "build_sidecar", "read_samples", "repeated_field_error"]

Sample = dict[str, object]
#: Where each sample lies: ``(key, offset of its first header, [(field, data offset, size)])``.
Layout = list[tuple[str, int, list[tuple[str, int, int]]]]


def read_samples(
    f: BinaryIO,
    url: str,
    *,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    read_size: int = DEFAULT_READ_SIZE,
    stats: ReadStats | None = None,
    layout: Layout | None = None,
    lenient: bool = False,
    lowercase: bool = False,
) -> Generator[Sample, None, int]:
    """Yield one dict per sample (``__key__``, ``__url__``, one bytes value per field).

    A sample is a run of adjacent members sharing a key. Members whose last component has
    no dot, or whose field is a reserved ``__x__`` name, are skipped and counted; they do
    not end the sample before them. ``layout``: append where each sample lies. Returns the
    offset of the end-of-archive marker.

    ``lenient``: a member whose key is unsafe, and the members of a key that appears again
    after other samples, are skipped and counted (``stats.skipped["unsafe_key"]``,
    ``["repeated_key"]``, the first messages in ``stats.failures``) instead of raised.
    ``lowercase``: lower-case field names (``0001.JPG`` gives field ``jpg``); two fields of
    one sample that differ only in case are then a repeated field.

    Raises:
        ShardFormatError: a field appears twice in one sample; a key appears again after
            other samples (the members of a sample must be adjacent; both offsets named);
            a key that is unsafe as a path (``tarstream.format.keys.unsafe_key``); and what
            ``tarstream.format.scan.scan_members`` raises.
    """
    stats = stats if stats is not None else ReadStats()
    grouping = _Grouping(url, stats, layout, lenient, lowercase)
    members = scan_members(
        f, url, max_member_size=max_member_size, read_size=read_size, stats=stats
    )
    while True:
        try:
            part = next(members)
        except StopIteration as stop:
            end: int = stop.value
            break
        yield from grouping.run(part) if isinstance(part, Run) else grouping.members(part)
    if grouping.key is not None and grouping.sample is not grouping.discard:
        stats.samples += 1
        yield grouping.sample
    stats.shards += 1
    return end


class _Grouping:
    """The sample being grouped, across the parts of a scan."""

    def __init__(
        self, url: str, stats: ReadStats, layout: Layout | None, lenient: bool, lowercase: bool
    ) -> None:
        self.url, self.stats, self.layout, self.lenient = url, stats, layout, lenient
        self.lowercase = lowercase
        self.key: str | None = None
        self.sample: Sample = {}
        self.seen: dict[str, int] = {}  # every key of the shard: the offset of its sample
        # Lenient: the sample of a repeated key is this one, never filled nor yielded.
        self.discard: Sample = {}

    def _skip(self, reason: str, error: ShardFormatError, members: int = 1) -> None:
        """Count ``members`` skipped for ``reason`` (lenient), or raise ``error``."""
        if not self.lenient:
            raise error
        self.stats.skipped[reason] += members
        if len(self.stats.failures) < 100:
            self.stats.failures.append(str(error))

    def _begin(self, key: str, start: int, member: str | tuple[Run, int]) -> Sample:
        """The sample a new ``key`` starts, its first header at ``start``: a fresh one, or
        for a key seen before (lenient; strict raises) the discard. ``member``: its name, or
        where a run holds it (named only for the error)."""
        if key in self.seen:
            name = member if isinstance(member, str) else member[0].name(member[1])
            self._skip("repeated_key", self._repeated(key, name, start), 0)
            return self.discard
        self.seen[key] = start
        if self.layout is not None:
            self.layout.append((key, start, []))
        return {"__key__": key, "__url__": self.url}

    def _repeated(self, key: str, name: str, offset: int) -> ShardFormatError:
        return ShardFormatError(
            f"key {key!r} appears again after other samples (its sample starts at byte "
            f"{self.seen[key]}); the members of a sample must be adjacent",
            shard=self.url,
            member=name,
            offset=offset,
        )

    def members(self, part: list[Member]) -> Iterator[Sample]:
        """Add members parsed one by one; yield the samples they complete."""
        url, stats, layout = self.url, self.stats, self.layout
        for name, start, offset, data in part:
            parts = split_member_name(name)
            if parts is None or parts[1].startswith("__"):
                stats.skipped["no_field" if parts is None else "reserved_field"] += 1
                continue
            key, field = parts
            if self.lowercase:
                field = field.lower()
            if key != self.key:
                unsafe = unsafe_key(key)
                if unsafe is not None:
                    message = f"key {key!r} is unsafe as a path: {unsafe}"
                    error = ShardFormatError(message, shard=url, member=name, offset=start)
                    self._skip("unsafe_key", error)
                    continue
                if self.key is not None and self.sample is not self.discard:
                    stats.samples += 1
                    yield self.sample
                self.key, self.sample = key, self._begin(key, start, name)
            if self.sample is self.discard:
                stats.skipped["repeated_key"] += 1
                continue
            if field in self.sample:
                raise repeated_field_error(url, key, field, start)
            self.sample[field] = data
            if layout is not None:
                layout[-1][2].append((field, offset, len(data)))

    def run(self, part: Run) -> Iterator[Sample]:
        """Add a bulk-parsed run; yield the samples it completes. The hot loop: one key
        decode and dict per sample, one slice per member."""
        url, stats, layout, key, sample = self.url, self.stats, self.layout, self.key, self.sample
        buf, header, key_len = part.buf, part.header, part.key_len
        starts, ends = part.data_start, part.data_end
        fields = [f.lower() for f in part.fields] if self.lowercase else part.fields
        names = [fields[i] for i in part.field_id]
        discard = self.discard  # unsafe keys never reach a run: the bulk parser leaves them
        base, first = part.base, part.start
        for b0, b1 in pairwise(part.bounds):
            h = header[b0]
            member_key = buf[h : h + key_len[b0]].decode("utf-8", "surrogateescape")
            if member_key != key:
                if key is not None and sample is not discard:
                    stats.samples += 1
                    yield sample
                key = member_key
                sample = self._begin(key, base + first[b0], (part, b0))
            if sample is discard:
                stats.skipped["repeated_key"] += b1 - b0
                continue
            expected = len(sample) + b1 - b0
            for i in range(b0, b1):
                sample[names[i]] = buf[starts[i] : ends[i]]
            if len(sample) != expected:
                _raise_repeated_field(url, part, names, b0, b1)
            if layout is not None:
                layout[-1][2].extend(
                    (names[i], part.base + starts[i], ends[i] - starts[i]) for i in range(b0, b1)
                )
        self.key, self.sample = key, sample


def _raise_repeated_field(url: str, run: Run, names: list[str], b0: int, b1: int) -> None:
    seen: set[str] = set()
    for i in range(b0, b1):
        if names[i] in seen:
            raise repeated_field_error(url, run.key(i), names[i], run.base + run.start[i])
        seen.add(names[i])
    # Repeated across two runs of the same sample: a field of this run was in the last one.
    raise repeated_field_error(url, run.key(b0), names[b0], run.base + run.start[b0])


def repeated_field_error(url: str, key: str, field: str, offset: int) -> ShardFormatError:
    """The error for a field that appears twice in one sample."""
    return ShardFormatError(
        f"field {field!r} appears twice in sample {key!r}",
        shard=url,
        member=f"{key}.{field}",
        offset=offset,
    )


def build_sidecar(
    f: BinaryIO,
    url: str,
    *,
    name: str,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
) -> ShardIndex:
    """Scan a whole shard and return its sidecar, checksum and size included, and each
    sample's CRC-32 where ``f`` can seek back to read the shard again.

    Raises what ``read_samples`` raises.
    """
    digest = hashlib.sha256()
    size = 0

    class _Hashing:
        def read(self, n: int = -1) -> bytes:
            nonlocal size
            data = f.read(n)
            digest.update(data)
            size += len(data)
            return data

    layout: Layout = []
    samples = read_samples(
        _Hashing(),  # type: ignore[arg-type]
        url,
        max_member_size=max_member_size,
        layout=layout,
    )
    unpacked: Layout = []  # with a block's samples in its place
    packed: set[str] = set()
    done = 0  # samples of ``layout`` handled
    while True:
        try:
            sample = next(samples)
        except StopIteration as stop:
            end: int = stop.value
            break
        unpacked += _unpacked_layout(url, layout[done], sample, packed)
        done += 1
    index = _checksummed(f, name, size, digest.hexdigest(), unpacked, end, packed)
    index.check(url)
    return index


def _checksummed(
    f: BinaryIO, name: str, size: int, sha256: str, unpacked: Layout, end: int, packed: set[str]
) -> ShardIndex:
    """The sidecar of a scanned shard, with the checksums the writer records (each
    sample's; each block's, or else the running one) where ``f`` can seek back to read the
    shard again."""
    starts = [start for _, start, _ in unpacked] + [end]
    running: list[int] | None = [] if starts[0] == 0 else None  # from the shard's start
    checksums = _checksums(f, list(pairwise(starts)), running) if f.seekable() else None
    running = running if checksums is not None else None
    index = ShardIndex.build(name, size, sha256, unpacked, end, checksums, packed, None, running)
    if checksums is not None and index.packed:
        spans = [(starts[b], starts[e]) for b, e in index.blocks]
        crcs = np.array(_checksums(f, spans), dtype=np.uint32)
        running_crcs = None if spans else index.running_checksums
        index = replace(index, block_checksums=crcs, running_checksums=running_crcs)
    return index


def _unpacked_layout(url: str, entry: Any, sample: Sample, packed: set[str]) -> Layout:
    """Where the samples of one sample's members lie: itself, or a block's samples (each
    from its element, the first from the block's header); the fields packed in it are
    added to ``packed``."""
    key, start, members = entry
    if PACKED_FIELD in sample:
        packed.update(unpack_fields(sample[PACKED_FIELD], url, f"{key}.{PACKED_FIELD}", start))
    if BLOCK_FIELD not in sample:
        return [entry]
    member = f"{key}.{BLOCK_FIELD}"
    if len(members) != 1:
        raise ShardFormatError(
            "a block shares its key with other members", shard=url, member=member, offset=start
        )
    _, at, _ = members[0]
    out: Layout = []
    for inner, a, b, values in split_block(sample[BLOCK_FIELD], url, member, at):  # type: ignore[arg-type]
        packed.update(name for name in values if name != "__key__")
        out.append((inner, at + a if out else start, [(BLOCK_FIELD, at + a, b - a)]))
    return out


def _checksums(
    f: BinaryIO, spans: list[tuple[int, int]], running: list[int] | None = None
) -> list[int]:
    """The CRC-32 of each range ``(a, b)`` of ``f``, read again (large samples in pieces);
    a seek only where a range does not start where the one before it ended. ``running``:
    where the ranges follow each other from the start of ``f``, gets the running CRC-32 at
    the start of each and after the last."""
    out = []
    at = -1
    total = 0  # the running CRC-32
    for a, b in spans:
        if a != at:
            f.seek(a)
        if running is not None:
            running.append(total)
        at = b
        crc = 0
        while a < b:
            piece = read_exact(f, min(b - a, 8 << 20))
            if not piece:
                raise ShardFormatError("shard changed while it was indexed", offset=a)
            crc = crc32(piece, crc)
            total = crc32(piece, total)
            a += len(piece)
        out.append(crc)
    if running is not None:
        running.append(total)
    return out
