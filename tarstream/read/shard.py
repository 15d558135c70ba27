"""Read one shard: through its sidecar where there is one, by parsing headers otherwise."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from typing import Any, BinaryIO, NamedTuple, Protocol, cast

from ..codecs.encode import TYPED_KINDS
from ..codecs.extensions import kind_of
from ..errors import ShardFormatError, SidecarError, redact_url
from ..format.columns import as_rows
from ..format.members import read_members
from ..format.packed import BLOCK_FIELD, unpack_samples
from ..format.rows import Unpacker, unpacker
from ..format.samples import Sample, read_samples
from ..format.scan import DEFAULT_MAX_MEMBER_SIZE, DEFAULT_READ_SIZE, ReadStats, read_exact
from ..format.sidecar import ShardIndex
from ..format.sliced import read_sliced, sliced_runs
from ..plan.specs import ShardSpec, SidecarMode, load_sidecar
from ..storage.compressed import GunzipInput, is_gzip_name
from ..storage.files import open_input
from ..storage.urls import is_local, is_pipe
from .packed import TypedFields, packed_values

__all__ = [
    "Decoding",
    "OpenShard",
    "is_remote",
    "open_shard",
    "pick_fields",
    "read_fields",
    "read_shard",
    "read_shard_at",
]


class Decoding(Protocol):
    """The decoding of the stage right after a reader, which the reader applies itself
    (``tarstream.stages.decode.Decode`` in strict mode): each sample's, or a run's at once
    (a block read whole, ``tarstream.format.blocks.Block``: its samples as they are where
    they need no decoding, checked together)."""

    def apply(self, item: Sample) -> Sample: ...

    def run(self, samples: Sequence[Sample]) -> Iterable[Sample]: ...


#: Samples whose chosen members are located and read together.
_CHUNK = 256


class OpenShard(NamedTuple):
    """A shard opened for reading: its sidecar (None: none), file and size if known."""

    sidecar: ShardIndex | None
    file: BinaryIO
    size: int | None


def open_shard(
    spec: ShardSpec, *, sidecars: SidecarMode = "auto", background: bool = False
) -> OpenShard:
    """Load the sidecar of ``spec`` (as ``sidecars`` says) and open the shard.

    A remote shard starts arriving in the background at once; ``background=True`` also
    fills a cache entry in the background (to open the next shard while one is read). A
    gzip-compressed shard (``.tar.gz``, ``.tgz``) is decompressed as it is read.
    """
    index = _index_for(spec, sidecars)
    if is_gzip_name(spec.url):  # sizes and checksums are of the tar inside
        raw, _ = open_input(spec.url, spec.storage, background=background)
        return OpenShard(index, cast(BinaryIO, GunzipInput(raw, spec.url)), None)
    f, size = open_input(
        spec.url,
        spec.storage,
        size=index.size if index is not None else spec.size,
        sha256=index.sha256 if index is not None else None,
        background=background,
    )
    return OpenShard(index, f, size)


def is_remote(spec: ShardSpec) -> bool:
    """Return True for a shard read over the network (worth opening ahead of time)."""
    return not (is_local(spec.url) or is_pipe(spec.url))


def read_shard(
    spec: ShardSpec,
    *,
    sidecars: SidecarMode = "auto",
    first: int = 0,
    stop: int | None = None,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    read_size: int = DEFAULT_READ_SIZE,
    stats: ReadStats | None = None,
    opened: OpenShard | None = None,
    verify: bool = True,
    lenient: bool = False,
    lowercase: bool = False,
    fields: frozenset[str] | None = None,
    typed: TypedFields = None,
    buffers: list[bytearray] | None = None,
    decoding: Decoding | None = None,
    rows: bool = False,
) -> Iterator[Sample]:
    """Yield samples ``first:stop`` of one shard (``stop`` None: to its end); close it.

    With a sidecar (``sidecars`` "auto" or "require") members are sliced at the offsets it
    records, each sample checked against its checksum unless ``verify`` is false, and
    ``first`` seeks; without one, headers are parsed and ``first`` samples are read and
    dropped. ``opened``: the shard as ``open_shard`` opened it ahead of time. ``lenient``:
    skip and count members with unsafe or repeated keys (``read_samples``). ``lowercase``:
    lower-case field names. ``fields``: only these fields (besides ``__key__`` and
    ``__url__``); with a sidecar only their members are read (``read_fields``: their
    headers are checked instead of the sample checksums), else they are picked.
    ``typed``: the packed fields handed on as they are held (``tarstream.read.packed``).
    ``buffers``: read buffers kept from shard to shard. ``decoding``: the next stage's,
    applied here (``Decoding``). ``rows``: samples may come as rows (``format.rows``)."""
    index, f, size = opened if opened is not None else open_shard(spec, sidecars=sidecars)
    label = redact_url(spec.url)
    with f:
        plain = index is not None and not index.packed
        if plain and fields is not None and not is_gzip_name(spec.url):
            assert index is not None
            picked = read_fields(f, label, index, fields, first, stop, size, lowercase, stats)
            yield from picked if decoding is None else map(decoding.apply, picked)
            return
        args = (first, stop, None, size, read_size, stats, verify, lowercase, None, buffers)
        if index is not None:  # read_sliced's samples, in the runs it chains
            whole = fields is None and _blocks_whole(index, typed, lowercase)
            fast = _unpacker(index, lowercase, rows, decoding) if whole else None
            together = plain and fields is None and decoding is not None  # samples of a read
            runs = sliced_runs(f, label, index, *args, fast=fast, runs=together)
            if decoding is not None and (whole or together):
                yield from chain.from_iterable(map(decoding.run, runs))  # a block, a read at once
                return
            rowed = plain and rows and fields is None and _all_typed(index, typed, lowercase, True)
            samples: Iterator[Sample] = chain.from_iterable(map(as_rows, runs) if rowed else runs)
        else:
            kw: dict[str, Any] = {"read_size": read_size, "lowercase": lowercase, "stats": stats}
            scan = read_samples(f, label, max_member_size=max_member_size, lenient=lenient, **kw)
            samples = islice(unpack_samples(scan, label, lowercase, stats), first, stop)
        samples = pick_fields(samples, fields)
        as_held = plain or _all_typed(index, typed, lowercase)
        samples = samples if as_held else packed_values(samples, label, typed)
        yield from samples if decoding is None else map(decoding.apply, samples)


def _blocks_whole(index: ShardIndex, typed: TypedFields, lowercase: bool) -> bool:
    """Whether a shard's samples may come in blocks read whole (``tarstream.format.blocks``),
    handed on as they are held."""
    return (
        index.fields == [BLOCK_FIELD]
        and index.block_checksums is not None
        and _all_typed(index, typed, lowercase)
    )


def _unpacker(
    index: ShardIndex, lowercase: bool, rows: bool, decoding: Decoding | None
) -> Unpacker | None:
    """The unpacking of a shard's blocks into samples of its packed fields, each value of
    its field's kind (``tarstream.format.rows``): rows for a batch that takes them
    (``rows``), dicts for the ``decoding`` applied here; none for others, or where its
    field names are not their names as they are."""
    names = index.packed_fields
    if (not rows and decoding is None) or (lowercase and any(n != n.lower() for n in names)):
        return None
    kinds = tuple((n, TYPED_KINDS[kind_of(n)]) for n in sorted(names))
    return unpacker(kinds, decoding is None)


def _all_typed(
    index: ShardIndex | None, typed: TypedFields, lowercase: bool, plain: bool = False
) -> bool:
    """Whether every field a shard's packed members hold (its sidecar says, and checks) is
    handed on typed: its values then need no look (the ``Decode`` asking checks kinds).
    ``plain``: every field of a plain shard is one the ``Decode`` asking decodes to a
    typed value (its samples may then come as rows, ``format.columns``)."""
    return (
        index is not None
        and typed is not None
        and all(
            kind_of(f) in TYPED_KINDS and typed(f.lower() if lowercase else f)
            for f in (index.fields if plain else index.packed_fields)
        )
    )


def pick_fields(samples: Iterator[Sample], fields: frozenset[str] | None) -> Iterator[Sample]:
    """``samples`` with only ``fields`` (and the metadata) where fields are named."""
    if fields is None:
        return samples
    return ({k: v for k, v in s.items() if k in fields or k.startswith("__")} for s in samples)


def read_fields(
    f: BinaryIO,
    url: str,
    index: ShardIndex,
    fields: frozenset[str],
    first: int,
    stop: int | None,
    size: int | None,
    lowercase: bool,
    stats: ReadStats | None,
) -> Iterator[Sample]:
    """Samples ``first:stop`` with only ``fields``, reading only their members' headers
    and bytes (``tarstream.format.members``), ``_CHUNK`` samples at a time."""
    if size is not None and size != index.size:
        raise SidecarError(
            f"shard is {size} bytes, its sidecar says {index.size} (shard replaced or "
            "sidecar stale)",
            shard=url,
        )

    def read_at(start: int, n: int) -> bytes:
        f.seek(start)
        data = read_exact(f, n)
        if stats is not None:
            stats.bytes_read += len(data)
        return data

    end = index.count if stop is None else min(stop, index.count)
    for chunk in range(first, end, _CHUNK):
        samples = range(chunk, min(chunk + _CHUNK, end))
        for sample in read_members(read_at, url, index, samples, fields, lowercase=lowercase):
            if stats is not None:
                stats.samples += 1
            yield sample
    if stats is not None and end == index.count:
        stats.shards += 1


def read_shard_at(
    spec: ShardSpec,
    indices: Iterable[int],
    *,
    sidecars: SidecarMode = "auto",
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    verify: bool = True,
    lowercase: bool = False,
    fields: frozenset[str] | None = None,
    typed: TypedFields = None,
) -> dict[int, Sample]:
    """Return the samples of one shard at ``indices`` (sample numbers), by number.

    With a sidecar only the regions holding those samples are read (seeking over gaps
    longer than a read); without one the shard is parsed up to the last of them.
    ``fields``: only these fields (and the metadata), picked from the whole samples.
    ``typed``: as ``read_shard`` takes it.
    """
    wanted = sorted(set(indices))
    if not wanted:
        return {}
    index, f, size = open_shard(spec, sidecars=sidecars)
    label = redact_url(spec.url)
    with f:
        if index is not None:
            run = pick_fields(
                read_sliced(
                    f, label, index, only=wanted, file_size=size, verify=verify, lowercase=lowercase
                ),
                fields,
            )
            if index.packed:
                run = packed_values(run, label, typed)
            return dict(zip(wanted, run, strict=True))
        keep = set(wanted)
        out: dict[int, Sample] = {}
        samples = unpack_samples(
            read_samples(f, label, max_member_size=max_member_size, lowercase=lowercase),
            label,
            lowercase,
        )
        for position, sample in enumerate(
            packed_values(pick_fields(samples, fields), label, typed)
        ):
            if position in keep:
                out[position] = sample
                if len(out) == len(keep):
                    return out
    raise ShardFormatError(
        f"sample {max(keep - set(out))} asked for, the shard has fewer", shard=spec.url
    )


def _index_for(spec: ShardSpec, sidecars: SidecarMode) -> ShardIndex | None:
    index = None if sidecars == "ignore" else load_sidecar(spec)
    if index is None and sidecars == "require":
        raise SidecarError(
            "shard has no sidecar index (sidecars='require'); build one with "
            "`tarstream index PATTERN`",
            shard=spec.url,
        )
    return index
