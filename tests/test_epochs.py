"""Epochs in every loader: set_epoch reaches DataLoader workers (persistent or not, fork and
spawn, torchdata's StatefulDataLoader) with no other call, and an epoch iterated again
without set_epoch warns instead of silently repeating its order."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import tarstream

from .conftest import make_samples, write_dataset

torch = pytest.importorskip("torch")


def _key(sample: dict[str, Any]) -> Any:
    return sample["__key__"]  # a module function: spawned workers unpickle it


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tarstream.Pipeline:
    directory = tmp_path_factory.mktemp("epochs")
    write_dataset(directory, make_samples(48), max_samples=6)
    stream = tarstream.TarStream(str(directory / "_train.manifest.json"), shuffle_shards=True)
    return stream.shuffle(8).map(_key)


def _keys(pipeline: tarstream.Pipeline, epoch: int) -> list[str]:
    """The order of ``epoch`` as DataLoader(num_workers=2) delivers it, round-robin."""
    fresh = pipeline.then()
    fresh.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(fresh, batch_size=None, num_workers=2)
    return list(loader)


@pytest.mark.parametrize(
    ("loader_class", "context", "persistent"),
    [
        ("DataLoader", "fork", False),
        ("DataLoader", "fork", True),
        ("DataLoader", "spawn", True),
        ("StatefulDataLoader", "fork", True),
    ],
)
def test_set_epoch_reaches_the_workers_of_every_loader(
    pipeline: tarstream.Pipeline, loader_class: str, context: str, persistent: bool
) -> None:
    if loader_class == "StatefulDataLoader":
        from torchdata.stateful_dataloader import StatefulDataLoader as Loader
    else:
        Loader = torch.utils.data.DataLoader
    mine = pipeline.then()
    loader: Any = Loader(
        mine,
        batch_size=None,
        num_workers=2,
        persistent_workers=persistent,
        multiprocessing_context=context,
    )
    orders = []
    for epoch in range(3):
        mine.set_epoch(epoch)
        orders.append(list(loader))
    everything = sorted(f"s/{i:05d}" for i in range(48))
    assert all(sorted(order) == everything for order in orders)  # each once, every epoch
    assert orders[0] != orders[1] != orders[2]
    assert orders == [_keys(pipeline, epoch) for epoch in range(3)]  # the epoch's own order


def test_a_second_epoch_without_set_epoch_warns_once(pipeline: tarstream.Pipeline) -> None:
    mine = pipeline.then()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = list(mine)
    with pytest.warns(tarstream.EpochWarning, match="epoch 0 is iterated again"):
        assert list(mine) == first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(mine)  # once only
        mine.set_epoch(1)
        assert list(mine) != first


def test_a_pipeline_without_shuffles_repeats_without_a_warning(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(10), max_samples=5)
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(stream) == list(stream)
