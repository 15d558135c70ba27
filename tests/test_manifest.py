"""The dataset manifest and the shard sources TarStream accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from braceexpand import braceexpand
from hypothesis import given, settings
from hypothesis import strategies as st

import tarstream
from tarstream.format.braces import count_names
from tarstream.format.manifest import Manifest, compress_names
from tarstream.plan.specs import resolve_shards

from .conftest import make_samples, write_dataset


def test_manifest_lists_shards_in_brace_form_with_counts_sizes_and_totals(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = dataset
    doc = json.loads((directory / "_train.manifest.json").read_text())
    assert doc["format"] == "tarstream.manifest" and doc["version"] == 1
    assert doc["shards"] == "train-{000000..000002}.tar"
    assert doc["samples"] == [10, 10, 5] and doc["total_samples"] == 25
    assert doc["sizes"] == [(directory / f"train-{i:06d}.tar").stat().st_size for i in range(3)]
    assert doc["total_bytes"] == sum(doc["sizes"])
    assert doc["fields"] == ["cls", "json", "txt"]
    assert doc["writer"]["tool"] == "tarstream.ShardWriter"


def test_a_manifest_names_shards_relative_to_itself(tmp_path: Path) -> None:
    samples = make_samples(25)
    write_dataset(tmp_path / "first", samples, max_samples=10)
    moved = tmp_path / "elsewhere"
    (tmp_path / "first").rename(moved)
    specs = resolve_shards(str(moved / "_train.manifest.json"))
    assert [s.url for s in specs] == [str(moved / f"train-{i:06d}.tar") for i in range(3)]
    assert [s.count for s in specs] == [10, 10, 5]
    keys = [s["__key__"] for s in tarstream.TarStream(str(moved / "_train.manifest.json"))]
    assert keys == [s["__key__"] for s in samples]


def test_sources_brace_patterns_lists_and_manifests_give_the_same_samples(
    dataset: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = dataset
    by_pattern = list(tarstream.TarStream(str(directory / "train-{000000..000002}.tar")))
    by_list = list(tarstream.TarStream([str(directory / f"train-{i:06d}.tar") for i in range(3)]))
    by_manifest = list(tarstream.TarStream(directory / "_train.manifest.json"))
    assert by_pattern == by_list == by_manifest and len(by_pattern) == 25


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a-000007.tar"], "a-000007.tar"),
        (["a-08.tar", "a-09.tar", "a-10.tar"], "a-{08..10}.tar"),
        (["a-98.tar", "a-99.tar", "a-100.tar"], ["a-98.tar", "a-99.tar", "a-100.tar"]),
        (["a-1.tar", "a-3.tar"], ["a-1.tar", "a-3.tar"]),
        ([], []),
    ],
)
def test_compress_names(names: list[str], expected: object) -> None:
    assert compress_names(names) == expected


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "not valid JSON"),
        ({"format": "x"}, "not a tarstream manifest"),
        ({"format": "tarstream.manifest", "version": 2}, "version 2 is not supported"),
        ({"format": "tarstream.manifest", "version": 1}, "missing or bad entry"),
        (
            {
                "format": "tarstream.manifest",
                "version": 1,
                "shards": ["a.tar"],
                "samples": [1],
                "sizes": [],
            },
            "1 shards but 1 sample counts and 0 sizes",
        ),
        (
            {
                "format": "tarstream.manifest",
                "version": 1,
                "shards": ["pipe:cat x"],
                "samples": [1],
                "sizes": [1],
            },
            "relative to the manifest",
        ),
        (
            {
                "format": "tarstream.manifest",
                "version": 1,
                "shards": ["../x.tar"],
                "samples": [1],
                "sizes": [1],
            },
            "relative to the manifest",
        ),
        (
            {
                "format": "tarstream.manifest",
                "version": 1,
                "shards": ["s3://b/x.tar"],
                "samples": [1],
                "sizes": [1],
            },
            "relative to the manifest",
        ),
    ],
)
def test_invalid_manifests_are_rejected_with_a_reason(doc: object, message: str) -> None:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(tarstream.ManifestError, match=message):
        Manifest.from_json(text, url="m.json")


def test_a_missing_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(tarstream.ManifestError, match="cannot read manifest"):
        tarstream.TarStream(str(tmp_path / "nope.manifest.json"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sidecars": "sometimes"}, "sidecars must be one of"),
        ({"max_member_size": 0}, "max_member_size must be >= 1, got 0"),
        ({"read_size": 100}, "read_size must be >= 512, got 100"),
    ],
)
def test_bad_tarstream_options_are_rejected_at_construction(
    dataset: tuple[Path, list[dict[str, Any]]], kwargs: dict[str, Any], message: str
) -> None:
    directory, _ = dataset
    with pytest.raises(ValueError, match=message):
        tarstream.TarStream(str(directory / "train-000000.tar"), **kwargs)


def test_an_empty_source_is_an_error() -> None:
    with pytest.raises(ValueError, match="names no shard"):
        tarstream.TarStream([])


def _manifest(**changes: Any) -> str:
    doc = {
        "format": "tarstream.manifest",
        "version": 1,
        "shards": "t-{000..002}.tar",
        "samples": [1, 1, 1],
        "sizes": [10240, 10240, 10240],
        "fields": ["txt"],
        "sidecar_suffix": ".idx",
    }
    return json.dumps({**doc, **changes})


def test_a_brace_pattern_of_a_trillion_names_is_refused_before_it_is_expanded() -> None:
    # in a process whose memory is capped at 1 GiB: expanding would take far more
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
import tarstream
try:
    tarstream.Manifest.from_json({_manifest(shards="t-{0..999999999999}.tar")!r}, url="m.json")
except tarstream.ManifestError as e:
    print(e)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "names 1,000,000,000,000 shards" in result.stdout
    assert "beyond its 3 sample counts" in result.stdout


@pytest.mark.parametrize(
    "changes",
    [
        {"shards": ["a.tar", "../outside.tar", "c.tar"]},
        {"shards": ["a.tar", "sub/%2e%2e/%2e%2e/outside.tar", "c.tar"]},
        {"shards": ["a.tar", "sub//c.tar", "c.tar"]},
        {"shards": ["a.tar", "b\\\\..\\\\..\\\\x.tar", "c.tar"]},
        {"shards": ["a.tar", "/etc/passwd", "c.tar"]},
        {"shards": ["a.tar", "http://elsewhere/x.tar", "c.tar"]},
        {"shards": ["a.tar", "ok\nx.tar", "c.tar"]},
    ],
)
def test_a_shard_name_that_leaves_the_dataset_directory_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(tarstream.ManifestError, match="must be relative to the manifest"):
        tarstream.Manifest.from_json(_manifest(**changes), url="m.json")


@pytest.mark.parametrize("suffix", ["/../../etc/passwd", "/x", "", ".idx%2f..", "\x00"])
def test_a_sidecar_suffix_that_is_not_a_plain_suffix_is_refused(suffix: str) -> None:
    with pytest.raises(tarstream.ManifestError, match="sidecar_suffix"):
        tarstream.Manifest.from_json(_manifest(sidecar_suffix=suffix), url="m.json")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text("ab-", min_size=1, max_size=3),
            st.builds(lambda a, b: f"{{{a}..{b}}}", st.integers(-20, 20), st.integers(-20, 20)),
            st.lists(st.text("xy", max_size=2), min_size=2, max_size=3).map(
                lambda alts: "{" + ",".join(alts) + "}"
            ),
        ),
        min_size=1,
        max_size=4,
    ).map("".join)
)
def test_brace_counts_equal_what_braceexpand_gives(pattern: str) -> None:
    assert count_names(pattern) == len(list(braceexpand(pattern)))
