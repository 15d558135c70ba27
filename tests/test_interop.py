"""Interoperability with webdataset, Python's tarfile and GNU tar, both directions."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds

import tarstream

from .conftest import make_samples, write_dataset


def _raw(sample: dict[str, Any]) -> dict[str, bytes]:
    out = {}
    for field, value in sample.items():
        if field.startswith("__"):
            continue
        out[field] = tarstream.codecs.encode.encode_field(sample["__key__"], field, value)
    return out


def test_webdataset_reads_tarstream_shards_with_the_same_keys_and_bytes(tmp_path: Path) -> None:
    samples = make_samples(120)
    write_dataset(tmp_path, samples, max_samples=50)
    pattern = str(tmp_path / "train-{000000..000002}.tar")
    read = list(wds.WebDataset(pattern, shardshuffle=False))
    assert [s["__key__"] for s in read] == [s["__key__"] for s in samples]
    for got, sent in zip(read, samples, strict=True):
        assert {k: v for k, v in got.items() if not k.startswith("__")} == _raw(sent)


def test_tarstream_reads_webdataset_shards_with_the_same_keys_and_bytes(tmp_path: Path) -> None:
    samples = [
        {"__key__": f"{i:05d}", "txt": f"text {i}" * (i % 50), "cls": str(i % 3)}
        for i in range(300)
    ]
    with wds.ShardWriter(str(tmp_path / "w-%06d.tar"), maxcount=100, verbose=0) as w:
        for s in samples:
            w.write(s)
    pattern = str(tmp_path / "w-{000000..000002}.tar")
    read = list(tarstream.TarStream(pattern))
    assert [s["__key__"] for s in read] == [s["__key__"] for s in samples]
    for got, sent in zip(read, samples, strict=True):
        assert got["txt"] == sent["txt"].encode() and got["cls"] == sent["cls"].encode()
        assert got["__url__"].startswith(str(tmp_path))  # type: ignore[union-attr]
    assert read == list(tarstream.TarStream(pattern, read_size=4096))


def test_tarfile_reads_tarstream_shards(dataset: tuple[Path, list[dict[str, Any]]]) -> None:
    directory, samples = dataset
    with tarfile.open(directory / "train-000000.tar") as tf:
        names = tf.getnames()
        first = tf.extractfile(names[2])
        assert first is not None and first.read() == _raw(samples[0])["txt"]
    assert names[:3] == ["s/00000.cls", "s/00000.json", "s/00000.txt"]


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_gnu_tar_lists_tarstream_shards(dataset: tuple[Path, list[dict[str, Any]]]) -> None:
    directory, samples = dataset
    listing = subprocess.run(
        ["tar", "tf", str(directory / "train-000000.tar")],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = [f"{s['__key__']}.{f}" for s in samples[:10] for f in ("cls", "json", "txt")]
    assert listing.stdout.split() == expected
    assert listing.stderr == ""


def test_tarstream_reads_a_tar_written_by_gnu_tar(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    for i in range(5):
        (source / "a" / f"{i:03d}.txt").write_text(f"t{i}")
        (source / "a" / f"{i:03d}.cls").write_text(str(i))
    tar = ["tar", "--sort=name", "-cf", str(tmp_path / "g.tar"), "-C", str(source), "a"]
    subprocess.run(tar, check=True)
    read = list(tarstream.TarStream(str(tmp_path / "g.tar")))
    assert sorted((s["__key__"], s["txt"], s["cls"]) for s in read) == [
        (f"a/{i:03d}", f"t{i}".encode(), str(i).encode()) for i in range(5)
    ]


def test_webdataset_decoded_fields_match_the_written_values(tmp_path: Path) -> None:
    import numpy as np

    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    write_dataset(tmp_path, [{"__key__": "k", "npy": array, "json": {"a": 1}, "cls": 4}])
    [sample] = list(wds.WebDataset(str(tmp_path / "train-000000.tar"), shardshuffle=False).decode())
    assert (sample["npy"] == array).all() and sample["json"] == {"a": 1} and sample["cls"] == 4
