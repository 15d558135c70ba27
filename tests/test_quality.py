"""Shuffle quality: order_quality on numbers, measure_order on streams and loaders, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tarstream
from tarstream.cli import main
from tarstream.plan.quality import order_quality

from .conftest import make_samples, write_dataset


def test_dataset_order_and_a_uniform_permutation_give_the_extremes() -> None:
    starts = np.arange(0, 1000, 100)  # 10 shards of 100
    ordered = order_quality(np.arange(1000), starts)
    assert ordered.same_shard_successor == round(990 / 999, 4)
    assert ordered.displacement == {"p10": 0.0, "p50": 0.0, "p90": 0.0}
    assert ordered.sample_entropy == 0.0 and ordered.shard_entropy < 0.1
    shuffled = order_quality(np.random.default_rng(5).permutation(1000), starts)
    assert abs(shuffled.same_shard_successor - 0.099) < 0.03  # 10 shards: about 1 in 10
    for q, want in shuffled.displacement_uniform.items():
        assert abs(shuffled.displacement[q] - want) < 0.05
    assert abs(shuffled.sample_entropy - shuffled.sample_entropy_uniform) < 0.3
    assert ordered.same_shard_successor_uniform == pytest.approx(0.099, abs=0.03)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("quality")
    write_dataset(directory, make_samples(2000), max_samples=200)
    return str(directory / "_train.manifest.json")


@pytest.mark.parametrize("interleave", [1, None])
def test_a_bigger_shuffle_buffer_mixes_shards_better(manifest: str, interleave: int | None) -> None:
    stream = tarstream.TarStream(manifest, seed=1, shuffle_shards=True, interleave=interleave)
    rates = [
        tarstream.measure_order(stream, stream.select_columns().shuffle(n)).same_shard_successor
        for n in (1, 100, 1000)
    ]
    assert rates[0] > rates[1] > rates[2]
    if interleave == 1:  # shard after shard
        assert rates[0] > 0.99
    else:  # the default reads 4 shards at once: about 1 in 4 neighbours share a shard
        assert rates[0] < 0.4
    assert tarstream.measure_order(stream).samples == 2000  # the plan alone, no bytes read


def test_measure_order_takes_what_a_loader_delivered(manifest: str) -> None:
    pytest.importorskip("torch")
    stream = tarstream.TarStream(manifest, seed=1, shuffle_shards=True)
    loader = tarstream.Loader(stream.shuffle(100).batch(16), num_workers=2)
    quality = tarstream.measure_order(stream, loader)
    assert quality.samples == 2000 and quality.same_shard_successor < 0.9


def test_the_quality_command_prints_the_figures(
    manifest: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["quality", manifest, "--shuffle-shards", "--shuffle", "500"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["samples"] == 2000 and 0 < figures["same_shard_successor"] < 1
    assert set(figures["displacement"]) == {"p10", "p50", "p90"}
