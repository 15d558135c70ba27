"""FORMAT.md is the truth about the files: check it against what the writer produces."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgpack

from .conftest import sidecar_of

FORMAT_MD = Path(__file__).resolve().parent.parent / "FORMAT.md"


def _table_keys(section: str) -> set[str]:
    text = FORMAT_MD.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", body, flags=re.MULTILINE))


def test_the_sidecar_table_lists_exactly_the_keys_the_writer_writes(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = dataset
    doc = msgpack.unpackb(sidecar_of(directory / "train-000000.tar").read_bytes())
    assert set(doc) == _table_keys("Sidecar index")
    assert doc["format"] == "tarstream.shard-index" and doc["version"] == 1


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
