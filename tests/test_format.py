"""FORMAT.md is the truth about the files: check it against what the writer produces."""

from __future__ import annotations

import json
import re
import tarfile
import zlib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from tarstream.format.packed import BLOCK_FIELD, PACKED_FIELD

from .conftest import sidecar_of, write_dataset

FORMAT_MD = Path(__file__).resolve().parent.parent / "FORMAT.md"


def _table_keys(section: str) -> set[str]:
    text = FORMAT_MD.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", body, flags=re.MULTILINE))


def test_the_sidecar_table_lists_exactly_the_keys_the_writer_writes(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, samples = dataset
    doc = msgpack.unpackb(sidecar_of(directory / "train-000000.tar").read_bytes())
    version_2 = {"packed_fields", "width", "block_crc32"}
    assert set(doc) == _table_keys("Sidecar index") - version_2
    assert doc["format"] == "tarstream.shard-index" and doc["version"] == 1
    write_dataset(directory / "packed", samples, pack="small")
    doc = msgpack.unpackb(sidecar_of(directory / "packed" / "train-000000.tar").read_bytes())
    assert set(doc) == _table_keys("Sidecar index") - {"running_crc32"} and doc["version"] == 2
    assert doc["packed_fields"] == ["cls", "json", "txt"] and doc["width"] == 4


def test_the_packed_members_are_as_documented(tmp_path: Path) -> None:
    text = FORMAT_MD.read_text()
    assert f"`KEY.{BLOCK_FIELD}`" in text and f"`KEY.{PACKED_FIELD}`" in text
    sample = {"__key__": "a", "txt": "t", "cls": 3, "json": {"k": [1]}, "ids.json": {1: 2}}
    write_dataset(tmp_path, [sample, {**sample, "__key__": "b"}], pack="small")
    with tarfile.open(tmp_path / "train-000000.tar") as tar:
        (member,) = tar.getmembers()
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
    assert member.name == f"a.{BLOCK_FIELD}"
    block = msgpack.unpackb(data, strict_map_key=False)
    assert block[0] == {
        "__key__": "a",
        "cls": 3,
        "ids.json": b'{"1":2}',
        "json": {"k": [1]},
        "txt": "t",
    }
    assert list(block[1]) == ["__key__", "cls", "ids.json", "json", "txt"]


def test_the_manifest_table_lists_exactly_the_keys_the_writer_writes(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = dataset
    doc = json.loads((directory / "_train.manifest.json").read_text())
    assert set(doc) == _table_keys("Manifest")


def test_the_documented_limits_are_the_implemented_ones() -> None:
    from tarstream.format.keys import MAX_FIELD_BYTES, MAX_KEY_BYTES

    text = FORMAT_MD.read_text()
    assert f"at most {MAX_KEY_BYTES} bytes of UTF-8" in text
    assert f"are at most {MAX_FIELD_BYTES} bytes" in text


def test_the_checksum_is_zlibs_crc32_whichever_library_computes_it() -> None:
    from tarstream.format.checksum import ACCELERATED, crc32

    rng = np.random.default_rng(3)
    for size in (0, 1, 511, 512, 16_000, 1 << 20):
        data = rng.bytes(size)
        assert crc32(data) == zlib.crc32(data)
        assert crc32(memoryview(data)[size // 3 :], 12345) == zlib.crc32(data[size // 3 :], 12345)
    assert ACCELERATED  # the dev environment has the fast extra: the test runs zlib-ng's
