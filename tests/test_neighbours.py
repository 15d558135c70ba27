"""The directory tarstream writes is readable by its neighbours, and theirs by tarstream:
Hugging Face ``datasets`` and Ray Data read it as plain webdataset shards, Megatron-Energon's
index files beside the shards change nothing, and datasets written before the sidecar
folder still read through their sidecars."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import tarstream

from .conftest import sidecar_of


def _samples(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [
        {
            "__key__": f"s{i:04d}",
            "jpg": Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)),
            "txt": f"caption {i} " * (i % 4 + 1),
            "cls": i % 5,
            "json": {"i": i, "tags": ["a", "b"][: i % 3]},
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset of 30 samples in 3 shards, written as a user would."""
    directory = tmp_path_factory.mktemp("out")
    _write(directory, 30)
    return directory


def _write(directory: Path, n: int) -> None:
    """``n`` samples as a user writes them: shards of 10, sidecars, manifest."""
    with tarstream.ShardWriter(str(directory / "train-%06d.tar"), max_samples=10) as w:
        for sample in _samples(n):
            w.write(sample)


def _ours(directory: Path) -> list[tuple[str, str, int, Any, np.ndarray]]:
    stream = tarstream.TarStream(str(directory / "_train.manifest.json")).decode("rgb8")
    return [(s["__key__"], s["txt"], s["cls"], s["json"], s["jpg"]) for s in stream]


def _same(got: list[tuple[str, str, int, Any, np.ndarray]], out: Path) -> None:
    want = _ours(out)
    assert [g[:4] for g in got] == [w[:4] for w in want]
    assert all(np.array_equal(g[4], w[4]) for g, w in zip(got, want, strict=True))


@pytest.fixture
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


@pytest.mark.parametrize("streaming", [False, True])
def test_hugging_face_datasets_loads_the_output_directory(
    out: Path, hf_offline: None, streaming: bool
) -> None:
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(out), split="train", streaming=streaming)
    rows = sorted(loaded, key=lambda r: r["__key__"])
    got = [
        (r["__key__"], r["txt"], r["cls"], r["json"], np.asarray(r["jpg"].convert("RGB")))
        for r in rows
    ]
    _same(got, out)


@pytest.mark.slow
def test_ray_data_reads_the_output_directory(out: Path) -> None:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        rows = ray.data.read_webdataset(str(out)).take_all()
    finally:
        ray.shutdown()
    rows.sort(key=lambda r: r["__key__"])
    got = [(r["__key__"], r["txt"], r["cls"], r["json"], np.asarray(r["jpg"])) for r in rows]
    _same(got, out)


def _energon_index(shard: Path) -> bytes:
    """What Megatron-Energon's ``energon prepare`` writes as ``NAME.tar.idx``: the byte
    offset of each sample, as little-endian u64."""
    return struct.pack("<4Q", 0, 3072, 6144, shard.stat().st_size)


def test_energon_index_files_beside_the_shards_change_nothing(
    tmp_path: Path,
) -> None:
    _write(tmp_path, 20)
    shards = sorted(tmp_path.glob("train-*.tar"))
    for shard in shards:
        Path(f"{shard}.idx").write_bytes(_energon_index(shard))  # Energon's file
    pattern = str(tmp_path / "train-{000000..000001}.tar")
    want = [s["__key__"] for s in tarstream.TarStream(str(tmp_path / "_train.manifest.json"))]
    for sidecars in ("auto", "require"):
        got = tarstream.TarStream(pattern, sidecars=sidecars)  # type: ignore[arg-type]
        assert [s["__key__"] for s in got] == want
    for shard in shards:  # without our sidecars, Energon's file is not taken for one
        sidecar_of(shard).unlink()
        assert Path(f"{shard}.idx").read_bytes() == _energon_index(shard)  # left alone
    assert [s["__key__"] for s in tarstream.TarStream(pattern)] == want
    with pytest.raises(tarstream.SidecarError, match="no sidecar"):
        list(tarstream.TarStream(pattern, sidecars="require"))


def test_a_dataset_written_before_the_sidecar_folder_reads_through_its_sidecars(
    tmp_path: Path,
) -> None:
    _write(tmp_path, 20)
    want = list(tarstream.TarStream(str(tmp_path / "_train.manifest.json")))
    # The old layout: NAME.tar.idx beside each shard, a manifest without sidecar_dir.
    for shard in sorted(tmp_path.glob("train-*.tar")):
        sidecar_of(shard).rename(f"{shard}.idx")
    (tmp_path / ".tarstream").rmdir()
    doc = json.loads((tmp_path / "_train.manifest.json").read_text())
    del doc["sidecar_dir"]
    (tmp_path / "train.manifest.json").write_text(json.dumps(doc))
    (tmp_path / "_train.manifest.json").unlink()
    pattern = str(tmp_path / "train-{000000..000001}.tar")
    for source in (str(tmp_path / "train.manifest.json"), pattern):
        assert list(tarstream.TarStream(source, sidecars="require")) == want


@pytest.mark.slow
def test_megatron_energon_prepares_and_reads_the_output_and_tarstream_still_reads_it(
    tmp_path: Path,
) -> None:
    pytest.importorskip("megatron.energon")
    energon = shutil.which("energon", path=str(Path(sys.executable).parent))
    assert energon is not None, "megatron-energon's energon command is not installed"
    _write(tmp_path, 25)
    want = [(s["__key__"], s["txt"]) for s in _text_samples(tmp_path)]
    prepare = [energon, "prepare", "--non-interactive", "--no-progress", "--split-ratio", "1,0,0"]
    prepare += ["--sample-type", "TextSample", "--field-map", '{"text": "txt"}', str(tmp_path)]
    subprocess.run(prepare, check=True, capture_output=True, cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.tar.idx")) == [  # beside ours, not on them
        f"train-{i:06d}.tar.idx" for i in range(3)
    ]
    code = """
import json, sys
from megatron.energon import WorkerConfig, get_loader, get_val_dataset
config = WorkerConfig(rank=0, world_size=1, num_workers=0)
dataset = get_val_dataset(sys.argv[1], split_part="train", worker_config=config, batch_size=None)
print(json.dumps(sorted((s.__key__, s.text) for s in get_loader(dataset))))
"""
    read = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True
    )
    assert [tuple(row) for row in json.loads(read.stdout.splitlines()[-1])] == sorted(want)
    assert [(s["__key__"], s["txt"]) for s in _text_samples(tmp_path)] == want  # ours still


def _text_samples(directory: Path) -> Any:
    pattern = str(directory / "train-{000000..000002}.tar")
    for source in (str(directory / "_train.manifest.json"), pattern):
        assert list(tarstream.TarStream(source, sidecars="require"))  # through our sidecars
    return tarstream.TarStream(str(directory / "_train.manifest.json")).decode(only="txt")
