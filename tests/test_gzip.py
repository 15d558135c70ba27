"""Gzip-compressed shards (.tar.gz, .tgz): read decompressed, indexed, written, and a
corrupt stream is a typed error naming the shard."""

from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

import tarstream
from tarstream.testing import assert_resumable
from tarstream.write.indexer import index_shards

from .conftest import make_samples, write_dataset


def _rows(stream: tarstream.Pipeline) -> list[tuple[object, object, object]]:
    return [(s["__key__"], s["txt"], s["cls"]) for s in stream]


@pytest.fixture
def compressed(tmp_path: Path) -> tuple[str, list[tuple[object, object, object]]]:
    """Three shards gzipped as a user would (gzip -k), and the rows of the plain ones."""
    write_dataset(tmp_path / "plain", make_samples(25), max_samples=10)
    for n in range(3):
        plain = tmp_path / "plain" / f"train-{n:06d}.tar"
        with open(plain, "rb") as f, gzip.open(tmp_path / f"train-{n:06d}.tar.gz", "wb") as g:
            shutil.copyfileobj(f, g)
    want = _rows(tarstream.TarStream(str(tmp_path / "plain" / "_train.manifest.json")))
    return str(tmp_path / "train-{000000..000002}.tar.gz"), want


def test_gzip_shards_read_as_the_tars_they_hold(compressed: tuple[str, list]) -> None:
    pattern, want = compressed
    assert _rows(tarstream.TarStream(pattern)) == want
    assert _rows(tarstream.TarStream(pattern, read_size=4096)) == want


def test_indexed_gzip_shards_give_counts_and_resume_exactly(
    compressed: tuple[str, list],
) -> None:
    pattern, want = compressed
    manifest, written = index_shards(pattern)
    assert written.samples == [10, 10, 5]
    assert _rows(tarstream.TarStream(manifest, sidecars="require")) == want

    def make() -> tarstream.Pipeline:
        stream = tarstream.TarStream(manifest, sidecars="require", seed=3, shuffle_shards=True)
        return stream.shuffle(6)

    assert len(assert_resumable(make, at=[0, 4, 13, 24])) == 25


def test_webdatasets_own_tgz_shards_read_the_same_in_both(tmp_path: Path) -> None:
    with wds.ShardWriter(str(tmp_path / "w-%06d.tgz"), maxcount=7, verbose=0) as w:
        for i in range(20):
            w.write({"__key__": f"{i:04d}", "txt": f"t{i}", "cls": str(i % 3)})
    pattern = str(tmp_path / "w-{000000..000002}.tgz")
    theirs = [
        (s["__key__"], s["txt"], s["cls"]) for s in wds.WebDataset(pattern, shardshuffle=False)
    ]
    assert _rows(tarstream.TarStream(pattern)) == theirs and len(theirs) == 20


def test_a_cut_gzip_shard_is_a_shard_error(compressed: tuple[str, list], tmp_path: Path) -> None:
    pattern, _ = compressed
    shard = tmp_path / "train-000001.tar.gz"
    shard.write_bytes(shard.read_bytes()[:300])
    with pytest.raises(tarstream.ShardFormatError, match="cannot be decompressed") as caught:
        list(tarstream.TarStream(pattern))
    assert caught.value.shard == str(shard)


def test_a_gzip_shard_named_tar_says_it_is_gzip(
    compressed: tuple[str, list], tmp_path: Path
) -> None:
    (tmp_path / "train-000000.tar.gz").rename(tmp_path / "g.tar")
    with pytest.raises(tarstream.ShardFormatError, match=r"gzip-compressed; name it \.tar\.gz"):
        list(tarstream.TarStream(str(tmp_path / "g.tar")))


def test_the_writer_compresses_a_tar_gz_pattern_reproducibly(tmp_path: Path) -> None:
    for copy in ("a", "b"):
        with tarstream.ShardWriter(str(tmp_path / copy / "t-%06d.tar.gz"), max_samples=10) as w:
            for sample in make_samples(15):
                w.write(sample)
    shard = tmp_path / "a" / "t-000000.tar.gz"
    assert shard.read_bytes()[:2] == b"\x1f\x8b"
    assert shard.read_bytes() == (tmp_path / "b" / "t-000000.tar.gz").read_bytes()
    with tarfile.open(shard, "r:gz") as tf:
        assert len(tf.getnames()) == 30
    got = list(tarstream.TarStream(str(tmp_path / "a" / "_t.manifest.json"), sidecars="require"))
    assert [s["__key__"] for s in got] == [s["__key__"] for s in make_samples(15)]
