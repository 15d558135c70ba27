"""Interoperability with webdataset, Python's tarfile and GNU tar, both directions."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds

import tarstream
from tarstream.cli import main as cli_main

from .conftest import make_samples, write_dataset

#: Keys in several scripts, with UTF-8 lengths around the 100-byte ustar name field.
UNICODE_KEYS = [
    "日本語/サンプル",
    "ελληνικά/δείγμα",
    "русский",
    "عربى",
    "emoji-😀",
    "a" * 40 + "é" * 28,  # 96 bytes, with ".cls" 100: fits the field, but not ASCII
    "b" * 40 + "é" * 29,  # 98 bytes: the name needs a PAX record
    "ü" * 48,
    "x" * 95,  # ASCII: 99 bytes with ".txt", in the ustar field
    "y" * 96,  # ASCII: 100 bytes with ".txt", PAX
    "z" * 120,
]


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


@pytest.mark.parametrize("sidecars", ["auto", "require", "ignore"])
def test_unicode_keys_round_trip_through_every_sidecar_mode(tmp_path: Path, sidecars: str) -> None:
    samples = [{"__key__": k, "txt": k, "cls": i} for i, k in enumerate(UNICODE_KEYS)]
    write_dataset(tmp_path, samples, max_samples=4)
    manifest = str(tmp_path / "_train.manifest.json")
    read = list(tarstream.TarStream(manifest, sidecars=sidecars).decode())  # type: ignore[arg-type]
    assert [(s["__key__"], s["txt"], s["cls"]) for s in read] == [
        (k, k, i) for i, k in enumerate(UNICODE_KEYS)
    ]


def test_unicode_keys_are_indexed_and_read_by_webdataset(tmp_path: Path) -> None:
    samples = [{"__key__": k, "txt": k} for k in UNICODE_KEYS]
    write_dataset(tmp_path, samples, max_samples=100)
    for sidecar in tmp_path.glob(".tarstream/*.idx"):
        sidecar.unlink()
    assert cli_main(["index", str(tmp_path / "train-000000.tar")]) == 0
    stream = tarstream.TarStream(str(tmp_path / "train-000000.tar"), sidecars="require")
    assert [s["__key__"] for s in stream] == UNICODE_KEYS
    read = wds.WebDataset(str(tmp_path / "train-000000.tar"), shardshuffle=False)
    assert [s["__key__"] for s in read] == UNICODE_KEYS


#: (tool, format): every format GNU tar and bsdtar write (bsdtar's default is restricted pax).
TAR_FORMATS = [("tar", f) for f in ("gnu", "oldgnu", "posix", "ustar", "v7")] + [
    ("bsdtar", f) for f in ("paxr", "pax", "ustar", "gnutar", "v7tar")
]
_LONG_NAMES = {"gnu", "oldgnu", "posix", "paxr", "pax", "gnutar"}


def _gnu_tar(source: Path, out: Path, fmt: str, *extra: str, tool: str = "tar") -> None:
    if tool == "bsdtar":  # sorted like GNU tar's --sort=name: the names, in order
        names = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
        command = ["bsdtar", "--format", fmt, *extra, "-cf", str(out), "-C", str(source)]
        subprocess.run([*command, *names], check=True, capture_output=True)
        return
    command = ["tar", f"--format={fmt}", "--sort=name", *extra, "-cf", str(out), "-C"]
    subprocess.run([*command, str(source), "."], check=True, capture_output=True)


@pytest.mark.parametrize(("tool", "fmt"), TAR_FORMATS)
def test_every_tar_format_reads_byte_identically(tmp_path: Path, tool: str, fmt: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    source = tmp_path / "src"
    names = ["a/0001", "a/0002", "b" * 60 + "/" + "c" * 30]  # 91 bytes: ustar prefix or long
    if fmt in _LONG_NAMES:
        names += ["d" * 120, "ünï/0003"]  # past 100 bytes; non-ASCII
    files = {}
    for i, key in enumerate(names):
        for field in ("txt", "cls"):
            path = source / f"{key}.{field}"
            path.parent.mkdir(parents=True, exist_ok=True)
            files[(key, field)] = f"{field} {i} ".encode() * (i * 50 + 1)
            path.write_bytes(files[(key, field)])
    _gnu_tar(source, tmp_path / "g.tar", fmt, tool=tool)
    for sidecars in ("ignore", "auto"):
        got = {
            (s["__key__"].removeprefix("./"), f): s[f]  # type: ignore[union-attr]
            for s in tarstream.TarStream(str(tmp_path / "g.tar"), sidecars=sidecars)  # type: ignore[arg-type]
            for f in ("txt", "cls")
        }
        assert got == files
        if sidecars == "ignore":
            assert cli_main(["index", str(tmp_path / "g.tar")]) == 0


@pytest.mark.parametrize(("tool", "fmt"), [("tar", "gnu"), ("tar", "posix"), ("bsdtar", "pax")])
def test_hard_links_and_sparse_files_are_errors_not_lost_fields(
    tmp_path: Path, tool: str, fmt: str
) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    source = tmp_path / "src"
    source.mkdir()
    (source / "0001.txt").write_text("text")
    os.link(source / "0001.txt", source / "0001.copy")  # a hard link: stored as a link
    _gnu_tar(source, tmp_path / "links.tar", fmt, tool=tool)
    with pytest.raises(tarstream.ShardFormatError, match="is a hardlink") as caught:
        list(tarstream.TarStream(str(tmp_path / "links.tar")))
    assert caught.value.member in ("./0001.txt", "0001.txt")  # after 0001.copy: its link
    (source / "0001.copy").unlink()
    with open(source / "0002.bin", "wb") as f:  # mostly a hole
        f.seek(1 << 20)
        f.write(b"end")
    _gnu_tar(
        source, tmp_path / "sparse.tar", fmt, *(["--sparse"] if tool == "tar" else []), tool=tool
    )
    with pytest.raises(tarstream.ShardFormatError, match="is a sparse file") as caught:
        list(tarstream.TarStream(str(tmp_path / "sparse.tar")))
