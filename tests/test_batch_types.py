"""A batch has the same container and types wherever it is made: in one process, in
tarstream.Loader workers and in a plain torch DataLoader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import tarstream

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("batches")
    with tarstream.ShardWriter(str(directory / "b-%06d.tar"), max_samples=8) as w:
        for i in range(16):
            image = Image.fromarray(np.full((6, 5, 3), i, np.uint8))
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


def _first(iterable: Any) -> Any:
    return next(iter(iterable))


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_torch_batches_are_the_same_in_process_in_the_loader_and_a_plain_dataloader(
    manifest: str, kind: str
) -> None:
    pipeline = _pipelines(manifest, "torch")[kind]
    here = _shape(_first(pipeline))
    loader = _shape(_first(tarstream.Loader(pipeline, num_workers=2)))
    plain = _shape(_first(torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)))
    assert here == loader == plain
    images = here[1][0] if kind == "tuple" else here[1]["png"]
    assert images == ("Tensor", "torch.uint8", (4, 6, 5, 3))
    strings = here[1][2] if kind == "tuple" else here[1]["txt"]
    assert strings == ("list", ["str"])


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_numpy_batches_keep_their_container_through_the_loaders(manifest: str, kind: str) -> None:
    pipeline = _pipelines(manifest, "numpy")[kind]
    here = _first(pipeline)
    assert isinstance(here, tuple if kind == "tuple" else dict)
    labels = here[1] if kind == "tuple" else here["cls"]
    assert isinstance(labels, np.ndarray)
    for batch in (
        _first(tarstream.Loader(pipeline, num_workers=2)),
        _first(torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)),
    ):
        assert type(batch) is type(
            here
        )  # DataLoaders turn arrays into tensors, not tuples into lists
        labels = batch[1] if kind == "tuple" else batch["cls"]
        assert isinstance(labels, torch.Tensor)


def test_tensors_must_be_numpy_or_torch(manifest: str) -> None:
    with pytest.raises(ValueError, match="tensors must be"):
        tarstream.TarStream(manifest).batch(4, tensors="jax")  # type: ignore[arg-type]
    assert Path(manifest).exists()
