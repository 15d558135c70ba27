"""Blocks read whole (``tarstream.format.blocks``): a read's block members checked by one
CRC-32 each and unpacked by one call give exactly the samples, and the errors, of reading
them one sample at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest

from tarstream.errors import ShardFormatError, SidecarError
from tarstream.format import blocks
from tarstream.format.packed import BLOCK_FIELD, FAST_BLOCK
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
