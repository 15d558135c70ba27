"""A block's samples, and a read's plain samples, handed to a batch as rows
(``tarstream.format.rows``): the batches are those of the samples as dicts, where the rows
path takes a block or a read and where it leaves one to the dicts; rows never reach
anything but that batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import tarstream
from tarstream.format.rows import columns as row_columns
from tarstream.format.sidecar import ShardIndex
from tarstream.stages import batch as batch_module

from .conftest import make_samples, sidecar_of, write_dataset


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches taken as rows' columns (so a test sees the path)."""
    sizes: list[int] = []

    def counting(items: list[Any]) -> dict[str, list[Any]] | None:
        got = row_columns(items)
        if got is not None:
            sizes.append(len(items))
        return got

    monkeypatch.setattr(batch_module, "row_columns", counting)
    return sizes


def _batches(directory: Path, *, apart: bool, size: int = 8) -> list[dict[str, Any]]:
    """Shuffled samples decoded and batched: rows where the batch takes the reader's
    samples (through the shuffle), dicts where a map passes them on between."""
    stream = tarstream.TarStream(str(directory / "_train.manifest.json"), seed=3)
    stream = stream.shuffle(16).decode()
    return list((stream.map(lambda s: s) if apart else stream).batch(size))


def _assert_same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert list(a) == list(b) and _plain(a) == _plain(b)


def _plain(value: Any) -> Any:
    """A batch's values as Python's, with the type of each array or tensor."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return type(value), value.tolist()
    return value


@pytest.mark.parametrize("pack", ["small", "none"], ids=["packed", "plain"])
def test_blocks_come_to_a_batch_as_rows_with_the_batches_of_dicts(
    pack: str, tmp_path: Path, taken: list[int], applied: list[int]
) -> None:
    samples = make_samples(150)
    for i, sample in enumerate(samples):  # a field whose name is no Python name
        sample["meta.json"] = {"n": i, "tags": ["a"] * (i % 3)}
    write_dataset(tmp_path, samples, pack=pack, max_samples=40)
    rows = _batches(tmp_path, apart=False)
    assert sum(taken) == 150 and not applied  # every batch from rows, none decoded apart
    dicts = _batches(tmp_path, apart=True)
    _assert_same(rows, dicts)
    assert sorted(k for b in rows for k in b["__key__"]) == [s["__key__"] for s in samples]
    assert {u.rsplit("/", 1)[-1] for b in rows for u in b["__url__"]} == {
        f"train-{i:06d}.tar" for i in range(4)
    }


@pytest.mark.parametrize("pack", ["small", "none"], ids=["packed", "plain"])
def test_a_shard_whose_samples_lack_a_field_goes_as_dicts(
    pack: str, tmp_path: Path, taken: list[int]
) -> None:
    # the shard's fields are those of all its samples: a block of samples without "extra"
    # is refused as rows, and the shard is read as dicts
    samples = make_samples(60)
    for sample in samples[:20]:
        sample["extra"] = "more"
    write_dataset(tmp_path, samples, pack=pack)
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json")).shuffle(1).decode()
    got = list(stream.batch(10))
    apart = tarstream.TarStream(str(tmp_path / "_train.manifest.json")).decode()
    _assert_same(got, list(apart.batch(10)))
    assert [b["__key__"][0] for b in got] == [f"s/{i:05d}" for i in range(0, 60, 10)]
    assert not taken and all("extra" in b for b in got[:2]) and "extra" not in got[2]


def test_field_names_to_lower_case_go_as_dicts(tmp_path: Path, taken: list[int]) -> None:
    samples = [{"__key__": f"k{i:03d}", "Caption.txt": f"c{i}", "cls": i} for i in range(50)]
    write_dataset(tmp_path, samples, pack="small")
    got = _batches(tmp_path, apart=False)
    _assert_same(got, _batches(tmp_path, apart=True))
    assert not taken and sorted(c for b in got for c in b["caption.txt"]) == sorted(
        f"c{i}" for i in range(50)
    )


@pytest.mark.parametrize("pack", ["small", "none"], ids=["packed", "plain"])
def test_a_value_rows_refuse_is_a_decode_error_naming_its_member(
    pack: str, tmp_path: Path, taken: list[int]
) -> None:
    """A class the writer kept as bytes: the block holding it goes as dicts, whose batch is
    decoded a sample at a time, naming the culprit after the batches before it."""
    samples = [{"__key__": f"k{i:03d}", "txt": "t", "cls": i} for i in range(100)]
    samples[77]["cls"] = "seventy-seven"
    write_dataset(tmp_path, samples, pack=pack)
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json")).shuffle(1).decode()
    got: list[str] = []
    with pytest.raises(tarstream.DecodeError, match=r"k077\.cls") as caught:
        for batch in stream.batch(10):
            got.extend(batch["__key__"])
            assert batch["cls"].tolist() == list(range(len(got) - 10, len(got)))
    assert got == [f"k{i:03d}" for i in range(70)] and caught.value.member == "k077.cls"


@pytest.mark.parametrize("pack", ["small", "none"], ids=["packed", "plain"])
def test_rows_reach_no_one_but_the_batch_that_takes_them(pack: str, tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(40), pack=pack)
    manifest = str(tmp_path / "_train.manifest.json")
    samples = list(tarstream.TarStream(manifest, seed=1).shuffle(8).decode())
    assert {type(s) for s in samples} == {dict} and len(samples) == 40
    assert samples[0].keys() == {"__key__", "__url__", "txt", "cls", "json"}
    listed = tarstream.TarStream(manifest, seed=1).shuffle(8).decode().batch(8, collate=list)
    assert [s for b in listed for s in b] == samples
    unbatched = list(tarstream.TarStream(manifest, seed=1).shuffle(8).decode().batch(8).unbatch())
    assert [s["__key__"] for s in unbatched] == [s["__key__"] for s in samples]
    assert all(type(s) is dict and isinstance(s["txt"], str) for s in unbatched)


def test_a_reader_that_decodes_takes_blocks_with_their_kinds_known(
    tmp_path: Path, applied: list[int]
) -> None:
    samples = make_samples(150)
    write_dataset(tmp_path, samples, pack="small", max_samples=40)
    got = list(tarstream.TarStream(str(tmp_path / "_train.manifest.json")).decode())
    assert not applied  # every block checked at once, no sample decoded apart
    assert [{k: v for k, v in s.items() if k != "__url__"} for s in got] == samples
    assert all(type(s["cls"]) is int and type(s["txt"]) is str for s in got)


def test_a_value_of_another_kind_in_a_block_is_a_decode_error_naming_its_member(
    tmp_path: Path,
) -> None:
    samples = [{"__key__": f"k{i:03d}", "txt": "t", "cls": i} for i in range(100)]
    samples[77]["cls"] = "seventy-seven"  # kept as bytes by the writer
    write_dataset(tmp_path, samples, pack="small")
    got: list[str] = []
    with pytest.raises(tarstream.DecodeError, match=r"k077\.cls"):
        for sample in tarstream.TarStream(str(tmp_path / "_train.manifest.json")).decode():
            got.append(sample["__key__"])
    assert got == [f"k{i:03d}" for i in range(77)]


@pytest.mark.parametrize("batch", [False, True])
def test_a_field_the_sidecar_does_not_list_is_never_dropped(tmp_path: Path, batch: bool) -> None:
    """Blocks whose samples hold a field besides the sidecar's packed fields (a sidecar
    made up, or stale): an unpacking of the sidecar's fields would leave it out; the
    reader refuses the shard instead, naming the sample."""
    samples = [{"__key__": f"k{i:03d}", "txt": f"t{i}", "cls": i} for i in range(50)]
    write_dataset(tmp_path, samples, pack="small")
    shard = tmp_path / "train-000000.tar"
    sidecar = sidecar_of(shard)
    index = ShardIndex.from_bytes(sidecar.read_bytes(), url="")
    sidecar.write_bytes(dataclasses.replace(index, packed_fields=["txt"]).to_bytes())
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json"))
    pipeline = stream.shuffle(4).decode().batch(5) if batch else stream.decode()
    with pytest.raises(tarstream.ShardFormatError, match="k000"):
        list(pipeline)


def test_samples_of_many_fields_come_whole(tmp_path: Path, taken: list[int]) -> None:
    # 20 fields: a map's size is no longer in its first byte, so the reader's dicts take
    # the sample-by-sample check of their fields; rows test their fields themselves
    samples = [
        {"__key__": f"k{i:03d}", **{f"f{j:02d}.txt": f"{i}-{j}" for j in range(20)}}
        for i in range(30)
    ]
    write_dataset(tmp_path, samples, pack="small")
    manifest = str(tmp_path / "_train.manifest.json")
    got = list(tarstream.TarStream(manifest).decode())
    assert [{k: v for k, v in s.items() if k != "__url__"} for s in got] == samples
    batches = list(tarstream.TarStream(manifest).shuffle(1).decode().batch(10))
    assert sum(taken) == 30 and batches[0]["f19.txt"][:2] == ["0-19", "1-19"]
