"""A batch has the same container and types wherever it is made: in one process, in
tarstream.Loader workers and in a plain torch DataLoader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import tarstream
from tarstream.stage import Stage

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("batches")
    with tarstream.ShardWriter(str(directory / "b-%06d.tar"), max_samples=8) as w:
        for i in range(16):
            image = Image.fromarray(np.full((96, 80, 3), i, np.uint8))
            w.write({"__key__": f"{i:03d}", "png": image, "cls": i % 3, "txt": f"t{i}"})
    return str(directory / "_b.manifest.json")


def _shape(batch: Any) -> Any:
    """The container and element types of a batch, with array dtypes and shapes."""
    if isinstance(batch, dict):
        return ("dict", {k: _shape(v) for k, v in sorted(batch.items())})
    if isinstance(batch, tuple):
        return (type(batch).__name__, [_shape(v) for v in batch])
    if isinstance(batch, list):
        return ("list", sorted({type(v).__name__ for v in batch}))
    if isinstance(batch, (np.ndarray, torch.Tensor)):
        return (type(batch).__name__, str(batch.dtype), tuple(batch.shape))
    return type(batch).__name__


def _pipelines(manifest: str, tensors: str) -> dict[str, tarstream.Pipeline]:
    stream = tarstream.TarStream(manifest).decode("rgb8")
    return {
        "tuple": stream.to_tuple("png", "cls", "txt").batch(4, tensors=tensors),  # type: ignore[arg-type]
        "dict": stream.select("png", "cls", "txt").batch(4, tensors=tensors),  # type: ignore[arg-type]
    }


def _fields(shape: Any, kind: str) -> list[Any]:
    """The image, label and string columns of a batch's ``_shape``."""
    return shape[1] if kind == "tuple" else [shape[1][k] for k in ("png", "cls", "txt")]


def _first(iterable: Any) -> Any:
    return next(iter(iterable))


@pytest.mark.parametrize("tensors", ["auto", "torch"])
@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_batches_are_the_same_in_process_in_the_loader_and_a_plain_dataloader(
    manifest: str, kind: str, tensors: str
) -> None:
    pipeline = _pipelines(manifest, tensors)[kind]
    here = _shape(_first(pipeline))
    loaders = [
        tarstream.Loader(pipeline),
        tarstream.Loader(pipeline, num_workers=2),
        torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2),
    ]
    assert [_shape(_first(loader)) for loader in loaders] == [here] * 3
    assert here[0] == ("BatchTuple" if kind == "tuple" else "dict")
    images, labels, strings = _fields(here, kind)
    assert images == ("Tensor", "torch.uint8", (4, 96, 80, 3))
    assert labels == ("Tensor", "torch.int64", (4,))
    assert strings == ("list", ["str"])


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_numpy_batches_stay_numpy_through_tarstreams_loader(manifest: str, kind: str) -> None:
    pipeline = _pipelines(manifest, "numpy")[kind]
    here = _shape(_first(pipeline))
    images, labels, strings = _fields(here, kind)
    assert images == ("ndarray", "uint8", (4, 96, 80, 3))  # over 64 KiB: a shared block
    assert labels == ("ndarray", "int64", (4,))
    assert strings == ("list", ["str"])
    for context in ("fork", "spawn"):
        loader = tarstream.Loader(pipeline, num_workers=2, multiprocessing_context=context)
        assert [_shape(b) for b in loader] == [here] * 4
    assert _shape(_first(tarstream.Loader(pipeline))) == here
    # A plain DataLoader converts arrays itself (torch's default_convert); the container
    # stays what it was.
    plain = _first(torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2))
    assert type(plain) is type(_first(pipeline))
    assert isinstance(plain[1] if kind == "tuple" else plain["cls"], torch.Tensor)


def test_numpy_batches_from_the_loader_hold_the_values_read(manifest: str) -> None:
    pipeline = _pipelines(manifest, "numpy")["tuple"]
    expected = [(images.copy(), labels.copy()) for images, labels, _ in pipeline]
    received = list(tarstream.Loader(pipeline, num_workers=2))  # every batch held at once
    assert len(received) == len(expected) == 4
    got = sorted(received, key=lambda b: int(b[0][0, 0, 0, 0]))
    for (images, labels, _), (want_images, want_labels) in zip(got, expected, strict=True):
        assert np.array_equal(images, want_images) and np.array_equal(labels, want_labels)


def test_tensors_must_be_auto_numpy_or_torch(manifest: str) -> None:
    with pytest.raises(ValueError, match="tensors must be"):
        tarstream.TarStream(manifest).batch(4, tensors="jax")  # type: ignore[arg-type]
    assert Path(manifest).exists()


@pytest.mark.parametrize("tensors", ["numpy", "torch"])
def test_dicts_with_other_fields_in_one_batch_are_an_error_not_a_dropped_field(
    manifest: str, tensors: str
) -> None:
    def drop_txt_of_the_third(sample: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sample.items() if not (k == "txt" and sample["cls"] == 2)}

    stream = tarstream.TarStream(manifest).decode().select("png", "cls", "txt")
    pipeline = stream.map(drop_txt_of_the_third).batch(4, tensors=tensors)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'png', 'txt'\] then a dict with keys"):
        next(iter(pipeline))
    custom = stream.map(drop_txt_of_the_third).batch(4, collate=tarstream.stages.collate.collate)
    with pytest.raises(ValueError, match="items of one batch differ"):
        next(iter(custom))


def test_collate_refuses_dicts_of_other_keys_and_takes_dict_subclasses_of_the_same() -> None:
    from collections import OrderedDict

    from tarstream.stages.collate import collate

    with pytest.raises(ValueError, match="items of one batch differ"):  # same size, other key
        collate([{"a": 1, "b": 2}, {"a": 3, "c": 4}])
    with pytest.raises(ValueError, match="items of one batch differ"):  # a key more
        collate([{"a": 1}, {"a": 3, "c": 4}])
    with pytest.raises(ValueError, match="items of one batch differ"):  # not a dict
        collate([{"a": 1}, [("a", 3)]])
    out = collate([{"a": 1, "b": "x"}, OrderedDict(b="y", a=2)])  # keys in another order
    assert out["a"].tolist() == [1, 2] and out["b"] == ["x", "y"]


class _Rows(Stage[Any]):
    def __init__(self, items: list[Any]) -> None:
        super().__init__()
        self.items = items

    def reset(self, state: Any = None) -> None:
        self._items = iter(self.items)

    def next(self) -> Any:
        return next(self._items)


_ROWS: dict[str, list[Any]] = {
    "flat dicts": [
        {"t": f"s{i}", "b": b"x" * i, "i": i, "f": i / 2, "ok": i % 2 == 0} for i in range(5)
    ],
    "nested json": [{"json": {"id": i, "tags": ["a", str(i)], "score": i / 3}} for i in range(4)],
    "mixed numbers": [{"n": v} for v in (1, 2.5, True)],
    "numbers and None": [{"n": v} for v in (1, None, 3)],
    "big ints": [{"n": v} for v in (1, 2**70)],
    "numpy scalars": [{"n": np.float32(i)} for i in range(3)],
    "text and bytes": [{"v": v} for v in ("a", b"b")],
    "ragged arrays": [{"a": np.zeros(i + 1)} for i in range(3)],
    "a number then arrays": [{"v": 1}, {"v": np.zeros(2)}, {"v": [np.ones(1)]}],
    "tuples": [(i, f"t{i}") for i in range(3)],
    "strings": ["a", "b"],
    "an ordered dict": [{"a": 1, "b": "x"}, __import__("collections").OrderedDict(b="y", a=2)],
}


@pytest.mark.parametrize("rows", list(_ROWS), ids=list(_ROWS))
@pytest.mark.parametrize("tensors", ["numpy", "torch"])
def test_a_batch_of_rows_is_what_collate_then_to_torch_make(rows: str, tensors: str) -> None:
    """``Batch`` collates rows with no images by a shorter path (``finish_batch``): the
    same containers, types, dtypes and values as ``collate`` and ``to_torch`` give."""
    from tarstream.stages.collate import collate, to_torch

    items = _ROWS[rows]
    expected = collate(items)
    if tensors == "torch":
        expected = to_torch(expected)
    (got,) = tarstream.Pipeline(_Rows(items), tarstream.Batch(len(items), tensors=tensors))  # type: ignore[arg-type]
    assert _shape(got) == _shape(expected)
    assert repr(got) == repr(expected)


@pytest.mark.parametrize(
    "values",
    [
        [1, 2, 3],
        [-(2**63), 2**63 - 1],
        [2**63],  # past int64: numpy's unsigned type
        [-1, 2**63],  # float64, as numpy chooses
        [1, 2**70],  # object
        [0.5, 1e300, float("nan")],
        [1, 2.5],
        [True, False],
        [np.int32(3), 4],
        [np.float32(1), np.float32(2)],
    ],
    ids=repr,
)
def test_a_column_of_numbers_is_the_array_numpy_makes_of_it(values: list[Any]) -> None:
    """Plain ints and floats are converted in one pass (``_numbers``); the array is the
    one ``np.asarray`` makes: its dtype and values, an int past 64 bits included."""
    from tarstream.stages.collate import collate

    got, expected = collate(values), np.asarray(values)
    assert got.dtype == expected.dtype
    assert repr(got.tolist()) == repr(expected.tolist())
