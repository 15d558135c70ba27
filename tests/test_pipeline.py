"""Stages and pipelines: the resumable contract for every stage, composition, decoding."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import tarstream
from tarstream import (
    Batch,
    Decode,
    Filter,
    Map,
    Pipeline,
    ReadShards,
    Rename,
    Repeat,
    Select,
    ShardList,
    Shuffle,
    ShuffleShards,
    Skip,
    SplitByRank,
    SplitByWorker,
    Take,
    ToTuple,
    Unbatch,
)
from tarstream.stage import Stage, State
from tarstream.stages.collate import collate
from tarstream.testing import assert_resumable, comparable

from .conftest import write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 shards of 13 samples with text, class, JSON, npy and a small PNG."""
    directory = tmp_path_factory.mktemp("pipeline")
    samples = []
    for i in range(52):
        pixels = np.full((4, 6, 3), i, dtype=np.uint8)
        samples.append(
            {
                "__key__": f"{i:04d}",
                "txt": f"t{i}",
                "cls": i % 5,
                "json": {"i": i},
                "npy": np.arange(3) * i,
                "png": pixels,
            }
        )
    write_dataset(directory, samples, max_samples=13)
    return directory


def source(data: Path, **options: Any) -> tuple[Stage[Any], ...]:
    return (
        ShardList(str(data / "_train.manifest.json")),
        ShuffleShards(),
        SplitByRank(**options),
        SplitByWorker(),
        ReadShards(),
    )


class EveryOther(Stage[Any]):
    """A user's own stage: every other item, with its own state."""

    def reset(self, state: State | None = None) -> None:
        super().reset(state)
        self.count = state["count"] if state else 0

    def next(self) -> Any:
        while True:
            item = self.require_source().next()
            self.count += 1
            if self.count % 2:
                return item

    def get_state(self) -> State:
        return {"source": self.require_source().get_state(), "count": self.count}


def pairs(items: Iterable[Any]) -> Iterator[Any]:
    """A plain generator function used as a stage."""
    items = iter(items)
    for first in items:
        yield (first["__key__"], next(items, {"__key__": None})["__key__"])


STAGES: dict[str, Callable[[], tuple[Stage[Any] | Callable[..., Any], ...]]] = {
    "ShardList": lambda: (),
    "ShuffleShards": lambda: (),
    "SplitByRank": lambda: (),
    "SplitByWorker": lambda: (),
    "ReadShards": lambda: (),
    "Shuffle": lambda: (Shuffle(20, initial=5),),
    "Decode": lambda: (Decode(),),
    "Map": lambda: (Map(lambda s: s["__key__"]),),
    "Filter": lambda: (Filter(lambda s: int(s["cls"]) != 2),),
    "Select": lambda: (Select("txt", "jpg;png"),),
    "Rename": lambda: (Rename(image="jpg;png", label="cls"),),
    "ToTuple": lambda: (Decode(), ToTuple("png", "cls")),
    "Batch": lambda: (Decode(), ToTuple("npy", "cls"), Batch(5)),
    "Unbatch": lambda: (Decode(), ToTuple("npy", "cls"), Batch(5), Unbatch()),
    "Take": lambda: (Take(17),),
    "Skip": lambda: (Skip(9),),
    "Repeat": lambda: (Shuffle(8), Repeat(3)),
    "custom stage": lambda: (EveryOther(),),
    "generator function": lambda: (pairs,),
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_resumes_exactly(data: Path, name: str) -> None:
    if name in ("ShardList", "ShuffleShards", "SplitByRank", "SplitByWorker"):
        plan = source(data)[
            : ["ShardList", "ShuffleShards", "SplitByRank", "SplitByWorker"].index(name) + 1
        ]
        make = lambda: Pipeline(*plan, seed=4)  # noqa: E731
    else:
        make = lambda: Pipeline(*source(data), *STAGES[name](), seed=4)  # noqa: E731
    full = assert_resumable(make, epochs=3)
    assert full, "the pipeline produced nothing"


def test_resume_in_a_simulated_worker_and_rank(data: Path) -> None:
    world = tarstream.World(1, 2, 2, 3)

    def make() -> Pipeline:
        stream = tarstream.TarStream(
            str(data / "_train.manifest.json"), seed=2, shuffle_shards=True
        )
        return stream.shuffle(7).decode().in_world(world)

    # rank 1 of 2 has 26 samples; worker share (2 + epoch 0) % 3 = 2 gets 26 - 17 = 9
    assert len(assert_resumable(make, at=range(0, 10), epochs=2)) == 9


def test_list_and_fluent_composition_give_the_same_items(data: Path) -> None:
    listed = Pipeline(*source(data), Shuffle(10), Decode(), ToTuple("txt", "cls"), Batch(8), seed=9)
    fluent = Pipeline(*source(data), seed=9).shuffle(10).decode().to_tuple("txt", "cls").batch(8)
    assert comparable(list(listed)) == comparable(list(fluent))


def test_fluent_methods_return_new_pipelines_and_leave_the_original_alone(data: Path) -> None:
    base = tarstream.TarStream(str(data / "_train.manifest.json"))
    shuffled = base.shuffle(10)
    batched = shuffled.batch(4)
    assert base is not shuffled is not batched
    assert len(base.stages) == 4 and len(shuffled.stages) == 5 and len(batched.stages) == 6
    assert [s["__key__"] for s in base] == [f"{i:04d}" for i in range(52)]
    assert len(list(batched)) == 13


def test_one_stage_object_serves_several_pipelines(data: Path) -> None:
    shuffle = Shuffle(10)
    a = Pipeline(*source(data), shuffle, seed=1)
    b = Pipeline(*source(data), shuffle, seed=1)
    both = zip(iter(a), iter(b), strict=True)
    assert all(x["__key__"] == y["__key__"] for x, y in both)


def test_order_differs_between_epochs_and_repeats_across_runs(data: Path) -> None:
    def run(epoch: int) -> list[Any]:
        stream = tarstream.TarStream(
            str(data / "_train.manifest.json"), seed=3, shuffle_shards=True
        )
        stream.set_epoch(epoch)
        return [s["__key__"] for s in stream.shuffle(20)]

    assert run(0) == run(0) and run(1) == run(1)
    assert run(0) != run(1) and sorted(run(0)) == sorted(run(1))


def test_seed_changes_the_order(data: Path) -> None:
    orders = [
        [
            s["__key__"]
            for s in tarstream.TarStream(str(data / "_train.manifest.json"), seed=s).shuffle(52)
        ]
        for s in (1, 2)
    ]
    assert orders[0] != orders[1]


def test_decode_by_extension(data: Path) -> None:
    sample = next(iter(tarstream.TarStream(str(data / "train-000000.tar")).skip(7).decode()))
    assert sample["txt"] == "t7" and sample["cls"] == 2 and sample["json"] == {"i": 7}
    assert (sample["npy"] == np.arange(3) * 7).all()
    assert sample["png"].shape == (4, 6, 3) and sample["png"].dtype == np.uint8
    assert (sample["png"] == 7).all()


@pytest.mark.parametrize(
    ("spec", "layout", "shape", "dtype"),
    [
        ("rgb8", "HWC", (4, 6, 3), np.uint8),
        ("rgb8", "CHW", (3, 4, 6), np.uint8),
        ("l8", "HWC", (4, 6), np.uint8),
        ("rgb", "HWC", (4, 6, 3), np.float32),
        ("rgba8", "HWC", (4, 6, 4), np.uint8),
        ("torchrgb8", "HWC", (3, 4, 6), torch.uint8),
        ("torchl", "HWC", (1, 4, 6), torch.float32),
    ],
)
def test_image_decoding_modes(spec: str, layout: str, shape: tuple[int, ...], dtype: Any) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 6, 3), 255, dtype=np.uint8)).save(buf, "PNG")
    from tarstream.codecs.images import decode_image

    image = decode_image(buf.getvalue(), spec, layout=layout)
    assert tuple(image.shape) == shape and image.dtype == dtype
    assert float(image.max()) == (1.0 if dtype in (np.float32, torch.float32) else 255)


def test_decode_pil_and_bad_specs() -> None:
    from tarstream.codecs.images import decode_image

    buf = io.BytesIO()
    Image.new("RGB", (3, 2)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), "pil").size == (3, 2)
    with pytest.raises(ValueError, match="image must be"):
        Decode("rgb16")
    with pytest.raises(ValueError, match="layout must be"):
        Decode(layout="WHC")


def test_collate_stacks_arrays_and_tensors_and_keeps_other_values() -> None:
    batch = collate(
        [
            {"a": np.zeros((2, 3)), "t": torch.ones(4), "n": 1, "s": "x", "r": np.zeros(2)},
            {"a": np.ones((2, 3)), "t": torch.zeros(4), "n": 2, "s": "y", "r": np.zeros(3)},
        ]
    )
    assert batch["a"].shape == (2, 2, 3) and tuple(batch["t"].shape) == (2, 4)
    assert batch["n"].tolist() == [1, 2] and batch["s"] == ["x", "y"]
    assert isinstance(batch["r"], list)
    images, labels = collate([(np.zeros(3), 1), (np.ones(3), 0)])
    assert images.shape == (2, 3) and labels.tolist() == [1, 0]


def test_batches_and_partial_batches(data: Path) -> None:
    stream = tarstream.TarStream(str(data / "_train.manifest.json")).to_tuple("txt", "cls")
    assert [len(b[0]) for b in stream.batch(10)] == [10, 10, 10, 10, 10, 2]
    assert [len(b[0]) for b in stream.batch(10, partial=False)] == [10] * 5
    assert len(stream.batch(10)) == 6 and len(stream.batch(10, partial=False)) == 5


def test_length_is_known_through_count_preserving_stages_only(data: Path) -> None:
    stream = tarstream.TarStream(str(data / "_train.manifest.json"))
    assert len(stream) == 52 and len(stream.shuffle(5).decode().take(30)) == 30
    assert len(stream.skip(50).repeat(3)) == 6
    with pytest.raises(TypeError, match="length unknown"):
        len(stream.filter(lambda s: True))


def test_missing_fields_name_the_sample(data: Path) -> None:
    with pytest.raises(KeyError, match=r"sample '0000' .* has no field 'jpg'"):
        list(tarstream.TarStream(str(data / "train-000000.tar")).to_tuple("jpg"))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Shuffle(0), "buffer_size must be >= 1, got 0"),
        (lambda: Shuffle(5, initial=6), "initial must be in 1..5, got 6"),
        (lambda: Batch(0), "size must be >= 1, got 0"),
        (lambda: Take(-1), "n must be >= 0, got -1"),
        (lambda: Repeat(0), "times must be >= 1 or None, got 0"),
        (lambda: SplitByRank(even="some"), "even must be None, 'drop' or 'pad'"),
        (lambda: Pipeline(), "at least one stage"),
    ],
)
def test_bad_stage_options_are_rejected_at_construction(
    build: Callable[[], Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_state_is_small_json_and_versioned(data: Path) -> None:
    stream = tarstream.TarStream(str(data / "_train.manifest.json")).shuffle(40).decode().batch(4)
    iterator = iter(stream)
    next(iterator)
    state = stream.state_dict()
    assert state["version"] == 2 and len(json.dumps(state)) < 1000
    with pytest.raises(tarstream.ResumeError, match="unknown state version 7"):
        stream.load_state_dict({"version": 7})


def test_decoded_chw_images_batch_into_channels_last_tensors_with_the_same_values() -> None:
    hwc = [torch.randint(0, 255, (5, 7, 3), dtype=torch.uint8) for _ in range(4)]
    batch = collate([t.permute(2, 0, 1) for t in hwc])
    assert batch.shape == (4, 3, 5, 7)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.stack([t.permute(2, 0, 1).contiguous() for t in hwc]))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.stride() == b.stride()
            and torch.equal(a, b)
        )
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b)


def _chw(seed: int, shape: tuple[int, int] = (5, 7)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 255, (*shape, 3), dtype=torch.uint8, generator=generator).permute(
        2, 0, 1
    )


class _ListStage(tarstream.Stage[Any]):
    """The items of a list, as a first stage."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__()
        self.items = items

    def reset(self, state: dict[str, Any] | None = None) -> None:
        self.position = state["position"] if state else 0

    def next(self) -> Any:
        if self.position >= len(self.items):
            raise StopIteration
        self.position += 1
        return self.items[self.position - 1]

    def get_state(self) -> dict[str, Any]:
        return {"position": self.position}


BATCH_ITEMS = {
    "arrays, tensors, numbers, strings": [
        {"a": np.full((2, 3), i), "t": torch.full((4,), i), "n": i, "s": str(i)} for i in range(7)
    ],
    "chw image views": [(_chw(i), i) for i in range(7)],
    "a shape changes midway": [np.zeros(3)] * 3 + [np.zeros(4)] + [np.zeros(3)] * 3,
    "a dtype changes midway": [np.zeros(3, np.float32)] * 4 + [np.zeros(3, np.int64)] * 3,
    "an image of another size midway": [_chw(i, (5, 7) if i != 4 else (6, 7)) for i in range(7)],
    "a tensor then an array": [torch.zeros(2)] * 2 + [np.zeros(2)] + [torch.zeros(2)] * 4,
    "contiguous tensors": [torch.full((3, 2, 2), i) for i in range(7)],
    # nothing to stack: items kept whole, collated at the end
    "records of bytes, strings, numbers": [
        {"__key__": f"{i:04d}", "txt": b"x" * i, "cls": i, "f": i / 2} for i in range(7)
    ],
    "tuples of strings and numbers": [(str(i), i, None) for i in range(7)],
    "records, arrays from the fourth on": [
        {"x": None if i < 3 else np.full(2, i), "n": i} for i in range(7)
    ],
    "nested records": [{"meta": {"a": i, "b": str(i)}, "n": i} for i in range(7)],
}


@pytest.mark.parametrize("name", BATCH_ITEMS)
@pytest.mark.parametrize("size", [1, 3, 7, 10])
def test_batches_built_as_items_arrive_equal_collate_of_the_list(name: str, size: int) -> None:
    items = BATCH_ITEMS[name]
    batches = list(Pipeline(_ListStage(items), Batch(size, tensors="numpy")))
    expected = [collate(items[i : i + size]) for i in range(0, len(items), size)]
    assert len(batches) == len(expected)
    for got, want in zip(batches, expected, strict=True):
        assert _same(got, want), (name, size)


@pytest.mark.parametrize(
    "items",
    [[(1, "a"), (2, "b", "c")], [(np.zeros(2), 1), (np.zeros(2), 2, 3)]],
    ids=["kept whole", "stacked"],
)
def test_tuples_of_different_lengths_in_one_batch_are_an_error(items: list[Any]) -> None:
    with pytest.raises(ValueError, match="tuples of 3 and 2 in one batch"):
        list(Pipeline(_ListStage(items), Batch(2)))


# -- images decoded straight into the batch ------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 shards of 23 JPEG samples of 9 x 12 pixels; sample 0005 is 10 x 12."""
    directory = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    samples = [
        {
            "__key__": f"{i:04d}",
            "jpg": rng.integers(0, 255, (10 if i == 5 else 9, 12, 3), dtype=np.uint8),
            "cls": i,
        }
        for i in range(23)
    ]
    write_dataset(directory, samples, max_samples=8)
    return directory


COMPOSITIONS: dict[str, Callable[[Pipeline], Pipeline]] = {
    "to_tuple": lambda p: p.to_tuple("jpg;png", "cls"),
    "select": lambda p: p.select("jpg"),
    "rename then to_tuple": lambda p: p.rename(image="jpg").to_tuple("image"),
}


@pytest.mark.parametrize("spec", ["torchrgb8", "rgb8", "torchl8", "l8", "rgba8"])
@pytest.mark.parametrize("compose", COMPOSITIONS)
def test_images_decoded_into_the_batch_equal_batches_of_decoded_images(
    images: Path, spec: str, compose: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tarstream.stages.deferred import PendingImage

    packed: list[tuple[int, ...]] = []
    pack = PendingImage.pack

    def counting_pack(image: Any, out: np.ndarray) -> None:
        packed.append(out.shape)
        pack(image, out)

    monkeypatch.setattr(PendingImage, "pack", staticmethod(counting_pack))
    stream = tarstream.TarStream(str(images / "_train.manifest.json"))
    into_place = list(COMPOSITIONS[compose](stream.decode(spec)).batch(4))
    assert len(packed) == 23 - 3  # all but 0005 and the two after it in its batch
    packed.clear()
    # a map between decode and batch: every image decoded on its own, then copied
    one_by_one = list(COMPOSITIONS[compose](stream.decode(spec).map(lambda s: s)).batch(4))
    assert not packed
    assert len(into_place) == len(one_by_one) == 6
    for got, want in zip(into_place, one_by_one, strict=True):
        assert _same(got, want), spec
    assert isinstance(into_place[1][0] if compose != "select" else into_place[1]["jpg"], list)


@pytest.mark.parametrize("bad", [4, 6])  # the first image of a batch, and one inside it
def test_a_corrupt_image_decoded_into_a_batch_is_a_decode_error_naming_it(
    tmp_path: Path, bad: int
) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 80, 200)).save(jpeg, "JPEG")
    data = jpeg.getvalue()
    samples = [
        {"__key__": f"{i:04d}", "jpg": data if i != bad else data[: len(data) // 2], "cls": i}
        for i in range(10)
    ]
    write_dataset(tmp_path, samples)
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json"))
    with pytest.raises(tarstream.DecodeError, match=rf"train-000000\.tar: member '000{bad}\.jpg'"):
        list(stream.decode("torchrgb8").to_tuple("jpg", "cls").batch(4))
