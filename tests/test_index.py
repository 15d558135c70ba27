"""Sidecar indexes: agreement with the shard, seeking, and detection of a mismatch."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tarstream
from tarstream.format.samples import build_sidecar
from tarstream.format.sidecar import ShardIndex
from tarstream.plan.specs import ShardSpec
from tarstream.read.shard import read_shard, read_shard_at
from tarstream.testing import assert_resumable

from .conftest import make_samples, sidecar_of, write_dataset


def _spec(path: Path) -> ShardSpec:
    return ShardSpec(str(path), str(sidecar_of(path)))


def test_the_writers_sidecar_equals_one_built_by_scanning_the_shard(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = dataset
    for i in range(3):
        shard = directory / f"train-{i:06d}.tar"
        with open(shard, "rb") as f:
            scanned = build_sidecar(f, str(shard), name=shard.name)
        assert scanned.to_bytes() == sidecar_of(directory / f"train-{i:06d}.tar").read_bytes()


def test_sidecar_records_counts_keys_offsets_size_and_checksum(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    import hashlib

    directory, samples = dataset
    shard = directory / "train-000001.tar"
    index = ShardIndex.from_bytes(sidecar_of(directory / "train-000001.tar").read_bytes(), url="x")
    assert index.count == 10 and index.keys == [s["__key__"] for s in samples[10:20]]
    assert index.size == shard.stat().st_size
    assert index.sha256 == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert index.fields == ["cls", "json", "txt"]
    data = shard.read_bytes()
    for key, offset in zip(index.keys, index.offsets[:-1].tolist(), strict=True):
        assert data[offset : offset + len(key) + 5] == f"{key}.cls\x00".encode()


def test_indexed_reading_equals_parsing(dataset: tuple[Path, list[dict[str, Any]]]) -> None:
    directory, _ = dataset
    pattern = str(directory / "train-{000000..000002}.tar")
    assert list(tarstream.TarStream(pattern, sidecars="require")) == list(
        tarstream.TarStream(pattern, sidecars="ignore")
    )


@pytest.mark.parametrize("first", [0, 1, 5, 9, 10])
@pytest.mark.parametrize("sidecars", ["require", "ignore"])
def test_reading_from_sample_k_yields_the_tail(
    dataset: tuple[Path, list[dict[str, Any]]], first: int, sidecars: str
) -> None:
    directory, _ = dataset
    spec = _spec(directory / "train-000000.tar")
    full = list(read_shard(spec, sidecars="ignore"))
    assert list(read_shard(spec, sidecars=sidecars, first=first)) == full[first:]  # type: ignore[arg-type]


def test_a_swapped_shard_of_the_same_size_is_detected(tmp_path: Path) -> None:
    a = [{"__key__": f"a{i:03d}", "txt": "x" * 10} for i in range(5)]
    b = [{"__key__": f"b{i:03d}", "txt": "y" * 10} for i in range(5)]
    write_dataset(tmp_path / "a", a)
    write_dataset(tmp_path / "b", b)
    shard = tmp_path / "a" / "train-000000.tar"
    shutil.copy(tmp_path / "b" / "train-000000.tar", shard)
    assert shard.stat().st_size == (tmp_path / "b" / "train-000000.tar").stat().st_size
    with pytest.raises(tarstream.SidecarError, match="does not match its sidecar") as info:
        list(tarstream.TarStream(str(shard)))
    assert info.value.member == "a000.txt" and info.value.offset == 0
    assert str(shard) in str(info.value)


def test_a_shard_longer_than_its_sidecar_says_is_detected(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = dataset
    shard = directory / "train-000000.tar"
    shard.write_bytes(shard.read_bytes() + bytes(10240))
    with pytest.raises(tarstream.SidecarError, match="sidecar says"):
        list(tarstream.TarStream(str(shard)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xc1garbage", "not a valid sidecar"),
        (msgpack.packb({"format": "other"}), "not a tarstream sidecar"),
        (msgpack.packb({"format": "tarstream.shard-index", "version": 99}), "version 99"),
        (msgpack.packb({"format": "tarstream.shard-index", "version": 1}), "missing"),
    ],
)
def test_an_unreadable_sidecar_is_a_clear_error(
    dataset: tuple[Path, list[dict[str, Any]]], content: bytes, message: str
) -> None:
    directory, _ = dataset
    sidecar_of(directory / "train-000000.tar").write_bytes(content)
    with pytest.raises(tarstream.SidecarError, match=message) as info:
        list(tarstream.TarStream(str(directory / "train-000000.tar")))
    assert "train-000000.tar.idx" in str(info.value)


def test_sidecars_require_names_the_shard_and_the_command_that_builds_one(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = dataset
    os.unlink(sidecar_of(directory / "train-000001.tar"))
    pattern = str(directory / "train-{000000..000002}.tar")
    assert len(list(tarstream.TarStream(pattern))) == 25  # "auto" falls back to parsing
    with pytest.raises(tarstream.SidecarError, match="tarstream index") as info:
        list(tarstream.TarStream(pattern, sidecars="require"))
    assert "train-000001.tar" in str(info.value)


def test_a_manifest_that_disagrees_with_a_sidecar_is_an_error(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = dataset
    manifest = directory / "_train.manifest.json"
    manifest.write_text(manifest.read_text().replace("10,", "11,", 1))
    with pytest.raises(tarstream.SidecarError, match="manifest says 11 samples, sidecar says 10"):
        list(tarstream.TarStream(str(manifest)))


def test_an_empty_shard_has_a_valid_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "empty.tar"
    import tarfile

    with tarfile.open(path, "w"):
        pass
    with open(path, "rb") as f:
        index = build_sidecar(f, str(path), name=path.name)
    assert index.count == 0
    sidecar_of(tmp_path / "empty.tar").write_bytes(index.to_bytes())
    assert list(tarstream.TarStream(str(path), sidecars="require")) == []


def test_many_samples_read_in_several_chunks(tmp_path: Path) -> None:
    samples = make_samples(400)
    write_dataset(tmp_path, samples)
    shard = str(tmp_path / "train-000000.tar")
    small_reads = list(tarstream.TarStream(shard, sidecars="require", read_size=4096))
    assert [s["__key__"] for s in small_reads] == [s["__key__"] for s in samples]
    assert small_reads == list(tarstream.TarStream(shard, sidecars="ignore"))


def _rewrite_sidecar(path: Path, **changes: Any) -> None:
    """Write a sidecar for shard ``path`` that says something else (built without checks)."""
    sidecar = sidecar_of(path)
    index = ShardIndex.from_bytes(sidecar.read_bytes(), url=str(sidecar))
    fields = {f.name: getattr(index, f.name) for f in dataclasses.fields(ShardIndex)}
    sidecar.write_bytes(ShardIndex(**{**fields, **changes}).to_bytes())


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # member 3 (sample 1's first) made to point into sample 0
        (lambda ix: {"member_offset": _with(ix.member_offset, 3, 1024)}, "outside its sample"),
        # member 0's size runs into the next member's header
        (lambda ix: {"member_size": _with(ix.member_size, 0, 700)}, "overlapping"),
        (lambda ix: {"member_offset": _with(ix.member_offset, 1, 1500)}, "512-byte block"),
        (lambda ix: {"offsets": _with(ix.offsets, 2, 0)}, "out of order"),
        (lambda ix: {"keys": ["s/00000", "s/00000", *ix.keys[2:]]}, "appears twice"),
        # out of order (tested by hashing), and in order but for the last (by comparing)
        (lambda ix: {"keys": [*ix.keys[:-1], ix.keys[3]][::-1]}, "'s/00003' appears twice"),
        (lambda ix: {"keys": [*ix.keys[:-1], ix.keys[3]]}, "'s/00003' appears twice"),
        (lambda ix: {"keys": ["../../etc/x", *ix.keys[1:]]}, "unsafe as a path"),
        (lambda ix: {"keys": [*ix.keys[:-1], "s/x/../../y"]}, "unsafe as a path"),
        (lambda ix: {"keys": [*ix.keys[:-1], "/s/y"]}, "unsafe as a path"),
    ],
)
def test_a_sidecar_that_describes_an_impossible_shard_is_refused(
    tmp_path: Path, change: Any, problem: str
) -> None:
    write_dataset(tmp_path, make_samples(10), max_samples=10)
    shard = tmp_path / "train-000000.tar"
    sidecar = sidecar_of(shard)
    _rewrite_sidecar(shard, **change(ShardIndex.from_bytes(sidecar.read_bytes(), url="")))
    with pytest.raises(tarstream.SidecarError, match=problem) as caught:
        list(tarstream.TarStream(str(shard)))
    assert caught.value.shard == str(sidecar)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # sample 3's element made to start inside sample 2
        (
            lambda ix: {"member_offset": _with(ix.member_offset, 3, int(ix.offsets[3]) - 1)},
            "outside",
        ),
        # sample 0's element made to run into sample 1
        (lambda ix: {"member_size": _with(ix.member_size, 0, int(ix.offsets[1]))}, "outside"),
        (lambda ix: {"offsets": _with(ix.offsets, 2, int(ix.offsets[1]))}, "out of order"),
        (lambda ix: {"offsets": _with(ix.offsets, len(ix.offsets) - 1, 99)}, "512-byte block"),
        (lambda ix: {"member_start": _with(ix.member_start, 1, 0)}, "without members"),
    ],
)
def test_a_sidecar_of_blocks_that_describes_an_impossible_shard_is_refused(
    tmp_path: Path, change: Any, problem: str
) -> None:
    write_dataset(tmp_path, make_samples(10), max_samples=10, pack="small")
    shard = tmp_path / "train-000000.tar"
    sidecar = sidecar_of(shard)
    index = ShardIndex.from_bytes(sidecar.read_bytes(), url="")
    assert index.fields == ["tarstream-block.mp"] and index.count == 10
    _rewrite_sidecar(shard, **change(index))
    with pytest.raises(tarstream.SidecarError, match=problem):
        list(tarstream.TarStream(str(shard)))


def _with(array: Any, i: int, value: int) -> Any:
    out = array.copy()
    out[i] = value
    return out


@pytest.mark.parametrize(
    ("where", "what"),
    [
        (lambda ix: int(ix.member_offset[7]) + 3, "a byte of member data"),
        (lambda ix: int(ix.member_offset[8]) - 512 + 130, "a byte of a later member's header"),
        (lambda ix: int(ix.member_offset[6]) + int(ix.member_size[6]) + 5, "a padding byte"),
    ],
)
@pytest.mark.parametrize("decoded", [False, True], ids=["bytes", "decoded"])
def test_a_flipped_byte_is_caught_before_its_sample_is_yielded(
    tmp_path: Path, where: Any, what: str, decoded: bool
) -> None:
    write_dataset(tmp_path, make_samples(10), max_samples=10)
    shard = tmp_path / "train-000000.tar"
    index = ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url="")
    data = bytearray(shard.read_bytes())
    position = where(index)
    data[position] ^= 0x20
    shard.write_bytes(bytes(data))
    sample = int(np.searchsorted(index.offsets, position, "right")) - 1  # = 2 here
    got: list[Any] = []
    stream = tarstream.TarStream(str(shard))  # decoded: a read's samples decoded at once
    with pytest.raises(tarstream.ShardFormatError, match="does not match the checksum") as caught:
        got.extend(stream.decode() if decoded else stream)
    assert [s["__key__"] for s in got] == [f"s/{i:05d}" for i in range(sample)], what
    assert caught.value.offset == int(index.offsets[sample])
    assert caught.value.member == f"s/{sample:05d}.cls"
    # the same through a resume's fetch (random access), and without the check it is silent
    with pytest.raises(tarstream.ShardFormatError, match="does not match the checksum"):
        read_shard_at(_spec(shard), [sample])
    assert len(list(tarstream.TarStream(str(shard), verify=False))) == 10


def test_the_running_checksum_is_zlibs_crc32_of_the_shard_up_to_each_sample(
    tmp_path: Path,
) -> None:
    import zlib

    write_dataset(tmp_path / "plain", make_samples(30), max_samples=30)
    write_dataset(tmp_path / "packed", make_samples(30), max_samples=30, pack="small")
    shard = tmp_path / "plain" / "train-000000.tar"
    index = ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url="")
    data = shard.read_bytes()
    assert index.running_checksums is not None
    assert index.running_checksums.tolist() == [zlib.crc32(data[:o]) for o in index.offsets]
    packed = sidecar_of(tmp_path / "packed" / "train-000000.tar").read_bytes()
    assert "running_crc32" not in msgpack.unpackb(packed)  # blocks have checksums of their own


@pytest.fixture
def crc_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the byte ranges a read of plain samples checks (``format.columns``, and
    ``format.sliced`` where the read goes sample by sample)."""
    from tarstream.format import columns, sliced

    sizes: list[int] = []
    crc32 = columns.crc32

    def counting(data: Any, value: int = 0) -> int:
        sizes.append(len(data))
        return crc32(data, value)

    monkeypatch.setattr(columns, "crc32", counting)
    monkeypatch.setattr(sliced, "crc32", counting)
    return sizes


@pytest.mark.parametrize("without", ["", "running", "combine", "damaged"])
def test_a_read_is_checked_at_once_against_the_running_checksum(
    tmp_path: Path, crc_calls: list[int], monkeypatch: pytest.MonkeyPatch, without: str
) -> None:
    from tarstream.format import columns

    write_dataset(tmp_path, make_samples(300), max_samples=300)
    shard = tmp_path / "train-000000.tar"
    expected = list(tarstream.TarStream(str(shard), verify=False))
    index = ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url="")
    assert index.running_checksums is not None
    if without == "running":  # a sidecar of an earlier writer
        _rewrite_sidecar(shard, running_checksums=None)
    elif without == "damaged":  # the samples' own checksums still hold: read, each checked
        _rewrite_sidecar(shard, running_checksums=index.running_checksums ^ 1)
    elif without == "combine":  # the standard library's zlib has no crc32_combine
        monkeypatch.setattr(columns, "crc32_combine", None)
    got = list(tarstream.TarStream(str(shard), read_size=64 << 10))
    assert got == expected
    reads = -(-int(index.offsets[-1]) // (64 << 10))
    if not without:
        assert reads <= len(crc_calls) <= reads + 1 and sum(crc_calls) == index.offsets[-1]
    else:
        assert len(crc_calls) >= 300  # each sample against its own


def _mixed(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples of two field sets: every third without its class."""
    return [{k: v for k, v in s.items() if k != "cls" or i % 3} for i, s in enumerate(samples)]


@pytest.fixture(scope="module")
def running_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes]]:
    """Shards of 60 samples with a running checksum, and their sidecars: one field set (read
    a field at a time), two field sets, and small fields packed per sample beside a large
    one (``pack="all"``): both sliced sample by sample."""
    made = {}
    for name, samples, pack in [
        ("one", make_samples(60), "none"),
        ("two", _mixed(make_samples(60)), "none"),
        ("packed", [{**s, "bin": bytes(range(256)) * 2} for s in make_samples(60)], "all"),
    ]:
        directory = tmp_path_factory.mktemp(name)
        write_dataset(directory, samples, max_samples=60, pack=pack, pack_limit=256)
        shard = directory / "train-000000.tar"
        made[name] = shard.read_bytes(), sidecar_of(shard).read_bytes()
    return made


@settings(max_examples=90, deadline=None)
@given(
    name=st.sampled_from(["one", "two", "packed"]),
    where=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 7),
    blocks=st.integers(1, 40),
)
def test_any_flipped_bit_stops_a_read_at_its_sample_after_every_sample_before_it(
    running_shards: dict[str, tuple[bytes, bytes]],
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    where: float,
    bit: int,
    blocks: int,
) -> None:
    data, sidecar = running_shards[name]
    index = ShardIndex.from_bytes(sidecar, url="")
    assert index.running_checksums is not None
    position = int(where * int(index.offsets[-1]))  # any byte of any sample
    directory = tmp_path_factory.mktemp("flipped")
    shard = directory / "train-000000.tar"
    changed = bytearray(data)
    changed[position] ^= 1 << bit
    shard.write_bytes(bytes(changed))
    (directory / ".tarstream").mkdir()
    sidecar_of(shard).write_bytes(sidecar)
    sample = int(np.searchsorted(index.offsets, position, "right")) - 1
    for decoded in (False, True):  # reads of 512 bytes to 20 KiB: the sample anywhere in one
        stream = tarstream.TarStream(str(shard), read_size=512 * blocks)
        got: list[Any] = []
        with pytest.raises(tarstream.ShardError) as caught:  # a flipped name: "replaced"
            got.extend(stream.decode() if decoded else stream)
        assert [s["__key__"] for s in got] == [f"s/{i:05d}" for i in range(sample)]
        assert caught.value.offset == int(index.offsets[sample])


@pytest.mark.parametrize("name", ["two", "packed"])
def test_a_read_sliced_sample_by_sample_is_checked_at_once_too(
    running_shards: dict[str, tuple[bytes, bytes]],
    tmp_path: Path,
    crc_calls: list[int],
    name: str,
) -> None:
    data, sidecar = running_shards[name]
    shard = tmp_path / "train-000000.tar"
    shard.write_bytes(data)
    (tmp_path / ".tarstream").mkdir()
    sidecar_of(shard).write_bytes(sidecar)
    expected = list(tarstream.TarStream(str(shard), verify=False))
    assert not crc_calls
    assert list(tarstream.TarStream(str(shard), read_size=16 << 10)) == expected
    end = int(ShardIndex.from_bytes(sidecar, url="").offsets[-1])
    assert sum(crc_calls) == end  # every sample's bytes once, a read at a time
    assert len(crc_calls) <= end // (16 << 10) + 1 < 60  # not a sample at a time


def test_sidecars_of_earlier_writers_without_checksums_still_read(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(10), max_samples=10)
    shard = tmp_path / "train-000000.tar"
    _rewrite_sidecar(shard, checksums=None)
    assert "sample_crc32" not in msgpack.unpackb(sidecar_of(shard).read_bytes())
    assert len(list(tarstream.TarStream(str(shard), sidecars="require"))) == 10


def _flip_sample(shard: Path, sample: int) -> None:
    index = ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url="")
    data = bytearray(shard.read_bytes())
    data[int(index.member_offset[int(index.member_start[sample])])] ^= 1
    shard.write_bytes(bytes(data))


def test_a_lenient_reader_ends_a_bad_shard_counts_it_and_goes_on(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(25), max_samples=10)
    _flip_sample(tmp_path / "train-000001.tar", 3)  # s/00013
    manifest = str(tmp_path / "_train.manifest.json")
    stream = tarstream.TarStream(manifest, errors="skip")
    keys = [s["__key__"] for s in stream]
    assert keys == [f"s/{i:05d}" for i in [*range(13), *range(20, 25)]]
    stats = stream.stats
    assert (stats.shards_failed, stats.samples_lost) == (1, 7)
    assert stats.errors == {"ShardFormatError": 1}
    assert "train-000001.tar: member 's/00013.cls'" in stats.failures[0]
    with pytest.raises(tarstream.ShardFormatError, match="more than max_errors=0"):
        list(tarstream.TarStream(manifest, errors="skip", max_errors=0))
    with pytest.raises(ValueError, match="errors must be 'strict' or 'skip'"):
        tarstream.TarStream(manifest, errors="lenient")  # type: ignore[arg-type]


def test_a_lenient_reader_resumes_exactly_past_a_bad_shard(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(25), max_samples=10)
    _flip_sample(tmp_path / "train-000001.tar", 3)
    manifest = str(tmp_path / "_train.manifest.json")

    def make() -> tarstream.Pipeline:
        stream = tarstream.TarStream(manifest, errors="skip", seed=2, shuffle_shards=True)
        return stream.shuffle(4).map(lambda s: s["__key__"])

    with pytest.warns(tarstream.ResumeWarning, match="lenient reader"):
        keys = assert_resumable(make, at=range(19), epochs=2)
    assert len(keys) == 18 and len(set(keys)) == 18


def test_an_interleaving_lenient_reader_ends_bad_and_empty_shards_and_goes_on(
    tmp_path: Path,
) -> None:
    write_dataset(tmp_path, make_samples(40), max_samples=10)
    _flip_sample(tmp_path / "train-000001.tar", 3)  # s/00013: 13..19 lost
    (tmp_path / "train-000002.tar").write_bytes(b"")  # 20..29: its shard is empty
    stream = tarstream.TarStream(
        str(tmp_path / "_train.manifest.json"), errors="skip", interleave=4
    )
    keys = [s["__key__"] for s in stream]
    assert sorted(keys) == [f"s/{i:05d}" for i in [*range(13), *range(30, 40)]]
    assert keys != sorted(keys)  # interleaved
    stats = stream.stats
    assert (stats.shards_failed, stats.samples_lost) == (2, 17)
    assert sorted(stats.lost) == [[13, 20], [20, 30]]


@pytest.mark.parametrize("errors", ["strict", "skip"])
def test_an_interleaving_reader_ends_shards_failing_mid_group_in_the_order_it_had(
    tmp_path: Path, errors: str
) -> None:
    """Every shard of the group opens; two fail, in their fourth and seventh samples: the
    others go on in the order they had (that of the clean shards, less the lost samples),
    a state taken anywhere, before a failure or after, resumes to the same rest (a failed
    shard is not read again), and a state once taken does not change."""
    write_dataset(tmp_path, make_samples(40), max_samples=10)
    manifest = str(tmp_path / "_train.manifest.json")

    def make() -> tarstream.Pipeline:
        stream = tarstream.TarStream(manifest, errors=errors, interleave=4)  # type: ignore[arg-type]
        return stream.map(lambda s: s["__key__"])

    clean = list(make())
    _flip_sample(tmp_path / "train-000001.tar", 3)  # s/00013: 13..19 lost
    _flip_sample(tmp_path / "train-000002.tar", 6)  # s/00026: 26..29 lost
    expected = [k for k in clean if not (13 <= int(k[2:]) < 20 or 26 <= int(k[2:]) < 30)]
    if errors == "strict":
        first_bad = min(clean.index("s/00013"), clean.index("s/00026"))
        got: list[str] = []
        with pytest.raises(tarstream.ShardFormatError, match=clean[first_bad]):
            got.extend(make())
        assert got == clean[:first_bad]
        return
    stream = make()
    taken = [(stream.state_dict(), json.dumps(stream.state_dict())) for _ in stream]
    assert [json.dumps(state) for state, _ in taken] == [text for _, text in taken]
    assert json.loads(taken[-1][1]) != json.loads(taken[0][1])
    read = stream.stats["read"] if isinstance(stream.stats, dict) else stream.stats
    assert (read.shards_failed, read.samples_lost) == (2, 11)
    assert assert_resumable(make, at=range(0, 30, 3)) == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet="ab./\x00", min_size=1, max_size=6), max_size=6, unique=True))
def test_the_sidecars_key_screen_refuses_exactly_what_the_key_rules_refuse(
    keys: list[str],
) -> None:
    from tarstream.format.keys import unsafe_key
    from tarstream.format.sidecar import _key_problem

    refused = [k for k in keys if unsafe_key(k) is not None]
    problem = _key_problem(keys)
    assert (problem is not None) == bool(refused), (keys, problem)


def test_a_reader_keeps_its_read_buffer_but_not_one_grown_for_a_huge_sample(
    tmp_path: Path,
) -> None:
    pattern = str(tmp_path / "b-%06d.tar")
    with tarstream.ShardWriter(pattern, max_samples=100) as w:
        for i in range(6):
            w.write({"__key__": f"{i:04d}", "bin": bytes([i]) * (50 if i != 3 else 20_000)})
    spec = _spec(tmp_path / "b-000000.tar")
    pool: list[bytearray] = []
    samples = list(read_shard(spec, read_size=1024, buffers=pool))
    written = [bytes([i]) * (50 if i != 3 else 20_000) for i in range(6)]
    assert [s["bin"] for s in samples] == written
    assert pool == []  # the buffer grown to 20 KB for sample 3 was let go
    list(read_shard(spec, first=4, read_size=1024, buffers=pool))
    assert len(pool) == 1 and len(pool[0]) == 1024  # a buffer of read_size, kept
    (buffer,) = pool
    again = list(read_shard(spec, first=4, read_size=1024, buffers=pool))
    assert pool[0] is buffer and [s["bin"] for s in again] == [b"\x04" * 50, b"\x05" * 50]
