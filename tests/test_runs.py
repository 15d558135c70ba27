"""Items handled many at a time: a full shuffle buffer returns runs of items (the order
and the state of one item at a time), and a ``Batch`` right after a strict ``Decode``
checks a batch's typed values a field at a time (what decoding each sample gives)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

import tarstream
from tarstream.format import sliced as sliced_module
from tarstream.stages import shuffle as shuffle_module
from tarstream.stages.shuffle import Shuffle
from tarstream.testing import assert_resumable
from tarstream.write.indexer import index_shards

from .conftest import PACKS, Positions, make_samples, write_dataset


def _shuffled(n: int, size: int, initial: int | None = None) -> list[int]:
    return list(tarstream.Pipeline(Positions(n), Shuffle(size, initial=initial), seed=4))


@pytest.mark.parametrize(
    ("n", "size", "initial"), [(9000, 1000, None), (5000, 7, 3), (300, 2, None), (130, 200, 50)]
)
def test_a_full_shuffle_buffer_returns_runs_in_the_order_of_one_item_at_a_time(
    monkeypatch: pytest.MonkeyPatch, n: int, size: int, initial: int | None
) -> None:
    # 9,000 items cross the 4,096 draws taken at a time, and runs end inside them
    in_runs = _shuffled(n, size, initial)
    monkeypatch.setattr(shuffle_module, "_RUN", 1)
    assert in_runs == _shuffled(n, size, initial)
    assert sorted(in_runs) == list(range(n)) and in_runs != list(range(n))


def test_a_shuffle_resumes_exactly_from_the_middle_of_a_run() -> None:
    def make() -> tarstream.Pipeline:
        return tarstream.Pipeline(Positions(700), Shuffle(10), seed=2)

    # runs of 128 from item 10 on: states taken inside runs, at their ends, and after
    assert_resumable(make, at=[11, 100, 137, 138, 139, 400, 690, 700])


@pytest.mark.parametrize("run", [1, 128])
def test_a_source_error_inside_a_run_comes_after_the_items_before_it(
    monkeypatch: pytest.MonkeyPatch, run: int
) -> None:
    monkeypatch.setattr(shuffle_module, "_RUN", run)
    pipeline = tarstream.Pipeline(Positions(1000, fail=300), Shuffle(10), seed=4)
    got: list[int] = []
    with pytest.raises(ValueError, match="item 300 is damaged"):
        got.extend(pipeline)
    # the first item once 10 are in, then one per item pulled: 1 + 290 before item 300
    assert got == _shuffled(1000, 10)[:291]


def _batches(directory: Path, *, apart: bool, **decode: Any) -> list[dict[str, Any]]:
    """Shuffled samples decoded and batched by 32: ``decode().batch()`` (the batch decodes),
    or with a map that passes samples on between them (``Decode`` decodes each sample)."""
    stream = tarstream.TarStream(str(directory / "_train.manifest.json"), seed=3)
    stream = stream.shuffle(40).decode(**decode)
    return list((stream.map(lambda s: s) if apart else stream).batch(32))


@pytest.fixture(**PACKS)
def pack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("custom", [False, True])
def test_a_batch_after_decode_gives_what_decoding_each_sample_gives(
    tmp_path: Path, pack: str, applied: list[int], custom: bool
) -> None:
    samples = make_samples(300)
    write_dataset(tmp_path, samples, pack=pack, max_samples=70)
    decoders = {"cls": lambda data: int(data) + 0} if custom else {}
    fused = _batches(tmp_path, apart=False, decoders=decoders)
    fused_calls = len(applied)
    apart = _batches(tmp_path, apart=True, decoders=decoders)
    assert len(fused) == len(apart) == 10 and fused[-1]["cls"].shape == (300 - 9 * 32,)
    for a, b in zip(fused, apart, strict=True):
        assert a.keys() == b.keys() and a["txt"] == b["txt"] and a["__key__"] == b["__key__"]
        assert a["cls"].tolist() == b["cls"].tolist() and type(a["cls"]) is type(b["cls"])
        assert a["json"]["i"].tolist() == b["json"]["i"].tolist()
    first = {s["__key__"]: s for s in samples}[fused[0]["__key__"][0]]
    assert fused[0]["txt"][0] == first["txt"] and int(fused[0]["cls"][0]) == first["cls"]
    # typed packed values checked and plain ones decoded a field at a time; with a decoder
    # of the user's (which takes bytes, packed or not), one sample at a time
    assert fused_calls == (300 if custom else 0) and len(applied) - fused_calls == 300


def test_a_sample_that_fails_in_a_batch_is_a_decode_error_naming_its_member(
    tmp_path: Path,
) -> None:
    """A class the writer kept as bytes (it is not a number): the batch that holds it is
    decoded a sample at a time, which names the culprit; the batches before it come."""
    samples = [{"__key__": f"k{i:03d}", "txt": "t", "cls": i} for i in range(100)]
    samples[77]["cls"] = "seventy-seven"
    write_dataset(tmp_path, samples, pack="small")
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json")).map(lambda s: s)
    got: list[str] = []
    with pytest.raises(tarstream.DecodeError, match=r"k077\.cls") as caught:
        for batch in stream.decode().batch(10):
            got.extend(batch["__key__"])
    assert got == [f"k{i:03d}" for i in range(70)] and caught.value.member == "k077.cls"


def test_a_plain_sample_that_fails_in_a_batch_is_a_decode_error_naming_its_member(
    tmp_path: Path,
) -> None:
    """JSON that does not parse, in a plain shard: the batch's JSON column fails, so its
    samples are decoded one at a time, which names the culprit; the batches before it come."""
    samples = [{"__key__": f"k{i:03d}", "txt": "t", "json": {"i": i}} for i in range(100)]
    samples[77]["json"] = b'{"i": 77'
    write_dataset(tmp_path, samples)
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json")).map(lambda s: s)
    got: list[str] = []
    with pytest.raises(tarstream.DecodeError, match=r"k077\.json") as caught:
        for batch in stream.decode().batch(10):
            got.extend(batch["__key__"])
            assert batch["json"]["i"].tolist() == list(range(len(got) - 10, len(got)))
    assert got == [f"k{i:03d}" for i in range(70)] and caught.value.member == "k077.json"


def test_a_batch_of_samples_of_different_fields_is_refused(tmp_path: Path) -> None:
    samples = [{"__key__": f"k{i}", "txt": "t", **({"cls": 1} if i % 2 else {})} for i in range(8)]
    write_dataset(tmp_path, samples, pack="small")
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json")).map(lambda s: s)
    with pytest.raises(ValueError, match="items of one batch differ"):
        list(stream.decode().batch(4))
    one = list(stream.decode().batch(1))
    assert [b["__key__"] for b in one] == [[f"k{i}"] for i in range(8)]
    assert [b["cls"].tolist() for b in one[1::2]] == [[1]] * 4


def test_batches_decoded_at_once_resume_exactly_in_process_and_in_workers(
    tmp_path: Path, pack: str, applied: list[int]
) -> None:
    write_dataset(tmp_path, make_samples(150), pack=pack, max_samples=40)
    manifest = str(tmp_path / "_train.manifest.json")

    def make() -> tarstream.Pipeline:
        stream = tarstream.TarStream(manifest, seed=3, shuffle_shards=True).shuffle(16)
        return stream.decode().batch(8)

    full = assert_resumable(make, at=range(20), epochs=2)  # 19 batches: every one
    assert len(full) == 19 and not applied  # each batch decoded a field at a time
    # two forked workers: stopped after 7 batches, a new loader delivers exactly the rest
    uninterrupted = [b["__key__"] for b in tarstream.Loader(make(), num_workers=2)]
    first = tarstream.Loader(make(), num_workers=2, multiprocessing_context="fork")
    taken = [b["__key__"] for _, b in zip(range(7), first, strict=False)]
    resumed = tarstream.Loader(make(), num_workers=2, multiprocessing_context="fork")
    resumed.load_state_dict(first.state_dict())
    assert taken + [b["__key__"] for b in resumed] == uninterrupted
    assert sorted(k for b in uninterrupted for k in b) == [f"s/{i:05d}" for i in range(150)]


def test_a_read_of_plain_samples_is_decoded_a_field_at_a_time(
    tmp_path: Path, applied: list[int]
) -> None:
    samples = make_samples(300)
    write_dataset(tmp_path, samples, max_samples=70)
    manifest = str(tmp_path / "_train.manifest.json")
    got = list(tarstream.TarStream(manifest).decode())
    assert not applied  # the reader decoded each read's samples a field at a time
    assert [{k: v for k, v in s.items() if k != "__url__"} for s in got] == samples
    assert got == list(tarstream.TarStream(manifest).map(lambda s: s).decode())
    assert len(applied) == 300  # a stage later: one sample at a time, the same samples


def test_a_plain_read_that_fails_to_decode_names_its_sample_after_those_before_it(
    tmp_path: Path,
) -> None:
    samples = [{"__key__": f"k{i:03d}", "txt": "t", "json": {"i": i}} for i in range(100)]
    samples[77]["json"] = b'{"i": 77'
    write_dataset(tmp_path, samples)
    got: list[Any] = []
    with pytest.raises(tarstream.DecodeError, match=r"k077\.json") as caught:
        got.extend(tarstream.TarStream(str(tmp_path / "_train.manifest.json")).decode())
    assert [s["json"]["i"] for s in got] == list(range(77)) and caught.value.member == "k077.json"


def test_a_plain_read_of_samples_of_several_field_sets_is_decoded_sample_by_sample(
    tmp_path: Path, applied: list[int]
) -> None:
    samples = [
        {"__key__": f"k{i:03d}", "txt": f"t{i}", **({"cls": i} if i % 3 else {})} for i in range(60)
    ]
    write_dataset(tmp_path, samples)
    got = list(tarstream.TarStream(str(tmp_path / "_train.manifest.json")).decode())
    assert [{k: v for k, v in s.items() if k != "__url__"} for s in got] == samples
    assert len(applied) == 60


@pytest.fixture
def sliced_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the samples ``sliced._slice`` slices one at a time (a read's fields sliced at
    once, ``format.columns``, count none)."""
    calls: list[int] = []
    slice_samples = sliced_module._slice

    def counting(*args: Any, **kwargs: Any) -> Any:
        for sample in slice_samples(*args, **kwargs):
            calls.append(1)
            yield sample

    monkeypatch.setattr(sliced_module, "_slice", counting)
    return calls


def _items(samples: list[dict[str, Any]]) -> list[list[tuple[str, Any]]]:
    return [list(s.items()) for s in samples]  # the fields' order too


def test_a_plain_read_is_sliced_a_field_at_a_time_into_the_samples_of_one_at_a_time(
    tmp_path: Path, sliced_one_at_a_time: list[int], applied: list[int]
) -> None:
    write_dataset(tmp_path, make_samples(300), max_samples=70)
    manifest = str(tmp_path / "_train.manifest.json")
    raw = list(tarstream.TarStream(manifest, read_size=4096))
    decoded = list(tarstream.TarStream(manifest, read_size=4096).decode())
    assert not sliced_one_at_a_time and not applied  # every read a field at a time
    assert _items(raw) == _items(list(tarstream.TarStream(manifest, verify=False)))
    assert _items(decoded) == _items(list(tarstream.TarStream(manifest).map(lambda s: s).decode()))
    assert len(sliced_one_at_a_time) == 300  # without checksums: one at a time, the same


def test_a_shard_whose_samples_order_their_members_differently_is_sliced_sample_by_sample(
    tmp_path: Path, sliced_one_at_a_time: list[int]
) -> None:
    with tarfile.open(tmp_path / "mixed.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(40):
            members = [("txt", f"t{i}".encode()), ("cls", str(i).encode())]
            for field, data in members if i % 5 else members[::-1]:  # every fifth: cls first
                info = tarfile.TarInfo(f"k{i:03d}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    manifest, _ = index_shards(str(tmp_path / "mixed.tar"))
    got = list(tarstream.TarStream(manifest).decode())
    assert [(s["__key__"], s["txt"], s["cls"]) for s in got] == [
        (f"k{i:03d}", f"t{i}", i) for i in range(40)
    ]
    assert len(sliced_one_at_a_time) == 40
