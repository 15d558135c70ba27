"""Columns and formats: select_columns at the reader, batched map, with_format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tarstream
from tarstream.testing import assert_resumable

from .conftest import make_samples, sidecar_of, write_dataset


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> str:
    """40 samples of a 100 KB field, a class id and a 2x3 array, in 4 shards."""
    directory = tmp_path_factory.mktemp("columns")
    rng = np.random.default_rng(0)
    with tarstream.ShardWriter(str(directory / "l-%06d.tar"), max_samples=10) as w:
        for i in range(40):
            w.write(
                {
                    "__key__": f"{i:04d}",
                    "bin": rng.bytes(100_000),
                    "cls": i,
                    "npy": np.full((2, 3), i, np.int16),
                }
            )
    return str(directory / "_l.manifest.json")


def test_select_columns_reads_only_the_chosen_members(large: str) -> None:
    whole = tarstream.TarStream(large)
    expected = [{k: s[k] for k in ("__key__", "__url__", "cls")} for s in whole]
    chosen = tarstream.TarStream(large).shuffle(5).select_columns("cls")
    got = sorted(chosen, key=lambda s: s["__key__"])
    assert got == expected
    read = chosen.stage_stats()["read"].bytes_read
    assert read < 40 * 1024 < 40 * 100_000 < whole.stage_stats()["read"].bytes_read
    assert sorted(next(iter(tarstream.TarStream(large, fields="cls npy")))) == [
        "__key__",
        "__url__",
        "cls",
        "npy",
    ]


def test_select_columns_resumes_exactly(large: str) -> None:
    assert_resumable(
        lambda: tarstream.TarStream(large, shuffle_shards=True).shuffle(8).select_columns("cls"),
        epochs=2,
    )


def test_select_columns_without_sidecars_picks_the_fields(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(12), max_samples=5)
    plain = tarstream.TarStream(str(tmp_path / "train-{000000..000002}.tar"), sidecars="ignore")
    assert [sorted(s) for s in plain.select_columns("txt")] == [["__key__", "__url__", "txt"]] * 12


def test_a_chosen_member_whose_header_disagrees_is_an_error(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(6), max_samples=6)
    shard = tmp_path / "train-000000.tar"
    index = tarstream.ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url=str(shard))
    data = bytearray(shard.read_bytes())
    header = int(index.member_offset[4]) - 512  # sample 1's json member
    data[header : header + 5] = b"other"
    shard.write_bytes(bytes(data))
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json")).select_columns("json")
    with pytest.raises(tarstream.SidecarError, match=r"s/00001\.json"):
        list(stream)


def _doubled(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {
        "key": [k for k in columns["__key__"] for _ in range(2)],
        "cls": [c * 10 + j for c in columns["cls"] for j in range(2)],
    }


def test_a_batched_map_gets_columns_and_may_change_the_count(large: str) -> None:
    stream = tarstream.TarStream(large).select_columns("cls").decode()
    mapped = list(stream.map(_doubled, batched=True, batch_size=7))
    assert len(mapped) == 80
    assert mapped[:3] == [
        {"key": "0000", "cls": 0},
        {"key": "0000", "cls": 1},
        {"key": "0001", "cls": 10},
    ]
    assert_resumable(
        lambda: (
            tarstream.TarStream(large)
            .select_columns("cls")
            .decode()
            .shuffle(5)
            .map(_doubled, batched=True, batch_size=7)
        )
    )


def _numbers(sample: dict[str, Any]) -> dict[str, Any]:
    return {"cls": sample["cls"], "npy": sample["npy"]}


def test_with_format_converts_batches(large: str) -> None:
    torch = pytest.importorskip("torch")
    stream = tarstream.TarStream(large).select_columns("cls", "npy").decode()
    batches = stream.map(_numbers).batch(4, tensors="numpy")
    python = next(iter(batches.with_format("python")))
    assert python == {"cls": [0, 1, 2, 3], "npy": [[[i] * 3] * 2 for i in range(4)]}
    tensors = next(iter(batches.with_format("torch")))
    assert isinstance(tensors["npy"], torch.Tensor) and tensors["npy"].shape == (4, 2, 3)
    arrays = next(iter(stream.map(_numbers).batch(4).with_format("numpy")))
    assert isinstance(arrays["cls"], np.ndarray) and arrays["cls"].tolist() == [0, 1, 2, 3]
    table = next(iter(batches.with_format("arrow")))
    assert table.column_names == ["cls", "npy"] and table.num_rows == 4
    assert table.column("npy").to_pylist()[3] == [[3, 3, 3], [3, 3, 3]]
    tuples = next(iter(stream.to_tuple("cls", "npy").batch(4).with_format("arrow")))
    assert tuples.column_names == ["0", "1"] and tuples.column("0").to_pylist() == [0, 1, 2, 3]
    with pytest.raises(tarstream.ArgumentError, match="format must be"):
        stream.with_format("pandas")  # type: ignore[arg-type]


def test_with_format_resumes_exactly(large: str) -> None:
    assert_resumable(
        lambda: (
            tarstream.TarStream(large)
            .select_columns("cls")
            .decode()
            .shuffle(6)
            .map(_just_cls)
            .batch(3)
            .with_format("python")
        )
    )


def _just_cls(sample: dict[str, Any]) -> dict[str, Any]:
    return {"cls": sample["cls"]}
