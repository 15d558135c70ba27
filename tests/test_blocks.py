"""Blocks read whole (``tarstream.format.blocks``): a read's block members checked by one
CRC-32 each and unpacked by one call give exactly the samples, and the errors, of reading
them one sample at a time."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import msgpack
import pytest

import tarstream
from tarstream.errors import ShardFormatError, SidecarError
from tarstream.format import blocks
from tarstream.format.packed import BLOCK_FIELD, FAST_BLOCK
from tarstream.format.samples import build_sidecar
from tarstream.format.sidecar import ShardIndex, block_spans
from tarstream.format.sliced import read_sliced

from .conftest import sidecar_of, write_dataset

pytestmark = pytest.mark.skipif(FAST_BLOCK is None, reason="msgspec (the fast extra) is absent")


def _samples(n: int, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [
        {
            "__key__": f"k{i:05d}",
            "txt": "words " * (i % 50) + str(i),
            "cls": i % 7,
            "json": {"id": i, "tags": ["a", i % 3]},
            **(extra or {}),
        }
        for i in range(n)
    ]


def _shard(tmp_path: Path, samples: list[dict[str, Any]]) -> tuple[Path, ShardIndex]:
    write_dataset(tmp_path, samples, pack="small", max_samples=len(samples))
    shard = tmp_path / "train-000000.tar"
    index = ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url=str(shard))
    assert index.fields == [BLOCK_FIELD] and index.block_checksums is not None
    return shard, index


def _without_block_checksums(index: ShardIndex) -> ShardIndex:
    doc = msgpack.unpackb(index.to_bytes())
    del doc["block_crc32"]
    return ShardIndex.from_bytes(msgpack.packb(doc), url="x")


def _read(shard: Path, index: ShardIndex, **kw: Any) -> list[dict[str, Any]]:
    with open(shard, "rb") as f:
        return list(read_sliced(f, str(shard), index, **kw))


@pytest.fixture
def whole(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the blocks read whole (so a test sees the path it means to test was taken)."""
    taken: list[int] = []
    block = blocks._block

    def counting(*args: Any) -> Any:
        out = block(*args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(blocks, "_block", counting)
    return taken


@pytest.mark.parametrize("read_size", [3000, 150_000, 512 << 10])
@pytest.mark.parametrize(("first", "stop"), [(0, None), (123, None), (0, 1500), (77, 1111)])
def test_blocks_read_whole_give_what_reading_each_sample_gives(
    tmp_path: Path, whole: list[int], read_size: int, first: int, stop: int | None
) -> None:
    shard, index = _shard(tmp_path, _samples(2000))
    assert len(block_spans(index)) > 5  # several blocks (~60 KB), cut by reads and first/stop
    kw = {"first": first, "stop": stop, "read_size": read_size}
    got = _read(shard, index, **kw)
    assert got == _read(shard, _without_block_checksums(index), **kw)
    assert [s["__key__"] for s in got] == index.keys[first:stop]
    assert got[0]["json"] == {"id": first, "tags": ["a", first % 3]}
    # each block that lies whole in a read was read whole; none does in a 3,000-byte read
    assert all(whole) and bool(whole) == (read_size > 3000)


def test_a_damaged_block_read_whole_fails_at_its_sample_after_the_samples_before_it(
    tmp_path: Path, whole: list[int]
) -> None:
    shard, index = _shard(tmp_path, _samples(2000))
    (b, e), *_ = [span for span in block_spans(index) if span[0] > 0]
    culprit = (b + e) // 2
    raw = bytearray(shard.read_bytes())
    raw[int(index.member_offset[culprit]) + 3] ^= 1
    shard.write_bytes(bytes(raw))
    got: list[str] = []
    with pytest.raises(ShardFormatError, match="checksum") as caught, open(shard, "rb") as f:
        got.extend(s["__key__"] for s in read_sliced(f, "s.tar", index))
    assert got == index.keys[:culprit]  # every sample before it, none of it or after it
    assert caught.value.member == f"{index.keys[culprit]}.{BLOCK_FIELD}"
    assert caught.value.offset == int(index.offsets[culprit]) and caught.value.shard == "s.tar"
    assert whole[0] and not whole[-1]  # the block before read whole, the damaged one not


def test_a_stale_block_checksum_leaves_the_block_to_each_sample_s_checksum(
    tmp_path: Path, whole: list[int]
) -> None:
    shard, index = _shard(tmp_path, _samples(600))
    doc = msgpack.unpackb(index.to_bytes())
    doc["block_crc32"] = bytes(len(doc["block_crc32"]))  # all zero: none matches
    stale = ShardIndex.from_bytes(msgpack.packb(doc), url="x")
    got = _read(shard, stale)
    assert whole and not any(whole)
    assert got == _read(shard, index)


def test_values_msgspec_refuses_and_names_to_lower_case_are_read_a_sample_at_a_time(
    tmp_path: Path, whole: list[int]
) -> None:
    shard, index = _shard(tmp_path, _samples(300, {"mask.bin": b"\x00\x01", "Up.TXT": "u"}))
    got = _read(shard, index)
    assert got == _read(shard, _without_block_checksums(index)) and not any(whole)
    assert got[5]["mask.bin"] == b"\x00\x01" and got[5]["cls"] == 5
    lowered = _read(shard, index, lowercase=True)
    assert lowered[5]["up.txt"] == "u" and "Up.TXT" not in lowered[5] and not any(whole)


def test_a_sidecar_with_block_checksums_of_other_blocks_is_refused(tmp_path: Path) -> None:
    _, index = _shard(tmp_path, _samples(600))
    doc = msgpack.unpackb(index.to_bytes())
    doc["block_crc32"] = doc["block_crc32"][:-4]
    with pytest.raises(SidecarError, match="block checksums for"):
        ShardIndex.from_bytes(msgpack.packb(doc), url="x")


def _pipelines(directory: Path) -> tuple[Any, Any]:
    """``decode()`` right after the reader (the reader decodes: fused), and after a map
    that passes samples on (``Decode`` decodes each sample itself)."""
    manifest = str(directory / "_train.manifest.json")
    return tarstream.TarStream(manifest).decode(), tarstream.TarStream(manifest).map(
        lambda s: s
    ).decode()


@pytest.mark.parametrize("pack", ["small", "none"])
def test_a_decode_right_after_the_reader_gives_what_a_decode_a_stage_later_gives(
    tmp_path: Path, whole: list[int], pack: str, applied: list[int]
) -> None:
    samples = _samples(900, {"mask.bin": b"\x01"}) if pack == "none" else _samples(900)
    write_dataset(tmp_path, samples, pack=pack, max_samples=400)
    fused, apart = _pipelines(tmp_path)
    got = list(fused)
    fused_calls = len(applied)
    assert got == list(apart) and len(got) == 900
    assert got[7]["txt"] == samples[7]["txt"] and got[7]["json"] == samples[7]["json"]
    assert bool(whole) == (pack == "small") and all(whole)
    # blocks read whole need no sample decoded one by one, nor plain samples decoded a
    # read at a time a field at a time (text, class and JSON bytes)
    assert fused_calls == 0 and len(applied) - fused_calls == 900
    decode_stats = [p.stages[-1].stats.samples for p in (fused, apart)]  # type: ignore[attr-defined]
    assert decode_stats == [900, 900]


def test_a_block_value_of_the_wrong_kind_is_a_decode_error_after_the_samples_before_it(
    tmp_path: Path,
) -> None:
    """A block another writer made, holding a class that is a str: read whole, its kinds
    are checked in C and the block is decoded sample by sample, which names the culprit."""
    elements = [{"__key__": f"k{i}", "cls": i, "txt": "t"} for i in range(20)]
    elements[13]["cls"] = "thirteen"
    data = msgpack.packb(elements)
    shard = tmp_path / "t.tar"
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"k0.{BLOCK_FIELD}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with open(shard, "rb") as f:
        index = build_sidecar(f, str(shard), name=shard.name)
    assert index.block_checksums is not None and len(index.block_checksums) == 1
    sidecar_of(shard).write_bytes(index.to_bytes())
    got: list[str] = []
    with pytest.raises(tarstream.DecodeError, match="packed member holds a str") as caught:
        got.extend(s["__key__"] for s in tarstream.TarStream(str(shard)).decode())
    assert got == [f"k{i}" for i in range(13)] and caught.value.member == "k13.cls"


def test_a_lenient_reader_does_not_decode_for_a_strict_decode(tmp_path: Path) -> None:
    """A reader that skips failed shards would take a ``DecodeError`` for one: after it, a
    strict ``Decode`` decodes each sample itself, and its error reaches the caller."""
    write_dataset(tmp_path, [{"__key__": "a", "cls": b"not a number"}], pack="small")
    manifest = str(tmp_path / "_train.manifest.json")
    with pytest.raises(tarstream.DecodeError, match=r"a\.cls"):
        list(tarstream.TarStream(manifest, errors="skip").decode())
    with pytest.raises(tarstream.DecodeError, match=r"a\.cls"):
        list(tarstream.TarStream(manifest).decode())
