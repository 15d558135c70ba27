"""Pipeline.split(n): disjoint, picklable, resumable parts of every epoch, equal if asked."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import pytest

import tarstream
from tarstream.testing import assert_resumable

from .conftest import PACKS, make_samples, write_dataset

N = 97  # uneven shards of 13 (the last of 6)


@pytest.fixture(scope="module", **PACKS)
def manifest(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    directory = tmp_path_factory.mktemp("split")
    write_dataset(directory, make_samples(N), max_samples=13, pack=request.param)
    return str(directory / "_train.manifest.json")


def _keys(pipeline: Any) -> list[str]:
    return [s["__key__"] for s in pipeline]


def _stream(manifest: str) -> tarstream.TarStream:
    return tarstream.TarStream(manifest, seed=3, shuffle_shards=True).shuffle(10)


@pytest.mark.parametrize("n", range(1, 9))
def test_splits_cover_every_sample_once_in_each_of_three_epochs(manifest: str, n: int) -> None:
    parts = _stream(manifest).split(n)
    orders = []
    for epoch in range(3):
        seen: list[str] = []
        for part in parts:
            part.set_epoch(epoch)
            seen += _keys(part)
        assert sorted(seen) == sorted(f"s/{i:05d}" for i in range(N)), (n, epoch)
        orders.append(seen)
        assert sum(len(p) for p in parts) == N
    assert n == 1 or orders[0] != orders[1]  # each epoch re-planned


@pytest.mark.parametrize("n", range(1, 9))
def test_equal_splits_have_equal_counts(manifest: str, n: int) -> None:
    parts = _stream(manifest).split(n, equal=True)
    seen = [_keys(part) for part in parts]
    assert {len(s) for s in seen} == {N // n}
    flat = [k for s in seen for k in s]
    assert len(set(flat)) == len(flat) == N - N % n  # "drop": the rest left out, once
    padded = _stream(manifest).split(n, equal="pad")
    assert {len(_keys(p)) for p in padded} == {-(-N // n)}


def _odd(sample: dict[str, Any]) -> bool:
    return int(sample["__key__"][-5:]) % 3 != 0


def test_equal_splits_stay_equal_after_a_filter_by_repeating_items(manifest: str) -> None:
    parts = _stream(manifest).filter(_odd).split(4, equal=True)
    seen = [_keys(part) for part in parts]
    assert {len(s) for s in seen} == {N // 4}
    for part, keys in zip(parts, seen, strict=True):
        padded = part.stage_stats()["equalize"].padded
        distinct = len(set(keys))
        assert distinct == len(keys) - padded and padded > 0  # the repeats, counted
        assert all(int(k[-5:]) % 3 for k in keys)


def test_a_split_resumes_exactly(manifest: str) -> None:
    assert_resumable(lambda: _stream(manifest).split(3)[1], epochs=2)
    assert_resumable(lambda: _stream(manifest).filter(_odd).split(3, equal=True)[2], epochs=2)


def test_a_split_through_a_loader_with_workers_gives_its_share_once(manifest: str) -> None:
    pytest.importorskip("torch")
    part = _stream(manifest).split(3)[2]
    alone = sorted(_keys(part))
    loader = tarstream.Loader(part.batch(4, tensors="numpy"), num_workers=2)
    assert sorted(k for batch in loader for k in batch["__key__"]) == alone


def _consume(part: bytes) -> list[str]:
    return _keys(pickle.loads(part))


def test_splits_are_consumed_from_separate_processes(manifest: str) -> None:
    parts = _stream(manifest).split(4, equal=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        seen = pool.map(_consume, [pickle.dumps(p) for p in parts])
    assert seen == [_keys(p) for p in parts] and {len(s) for s in seen} == {N // 4}


def test_splits_need_a_rank_split_and_n_of_at_least_one(manifest: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be"):
        _stream(manifest).split(0)
    reader_only = tarstream.Pipeline(tarstream.ShardList(manifest), tarstream.ReadShards())
    for equal in (True, False):
        with pytest.raises(tarstream.ArgumentError, match="splits by rank"):
            reader_only.split(2, equal=equal)


def _plain(manifest: str) -> tarstream.TarStream:
    return tarstream.TarStream(manifest, seed=3, shuffle_shards=True)


def _copies(pipeline: Any, ranks: int, workers: int) -> list[Any]:
    return [
        pipeline.in_world(tarstream.World(r, ranks, w, workers))
        for r in range(ranks)
        for w in range(workers)
    ]


def test_global_take_and_skip_count_the_whole_epoch_over_every_copy(manifest: str) -> None:
    # the epoch's sequence in one process, in plan order (what a global take counts)
    order = _keys(tarstream.TarStream(manifest, seed=3, shuffle_shards=True, interleave=1))
    taken = [k for copy in _copies(_plain(manifest).take_global(30), 3, 2) for k in _keys(copy)]
    assert sorted(taken) == sorted(order[:30]) and len(taken) == 30
    skipped = [k for copy in _copies(_plain(manifest).skip_global(90), 3, 2) for k in _keys(copy)]
    assert sorted(skipped) == sorted(order[90:])
    window = _plain(manifest).skip_global(20).take_global(40)
    assert sorted(_keys(window)) == sorted(order[20:60]) and len(window) == 40
    per_copy = [k for copy in _copies(_plain(manifest).take(10), 3, 2) for k in _keys(copy)]
    assert len(per_copy) == 60  # take counts per copy: 10 in each of 6


def test_a_global_skip_reads_nothing_it_skips(manifest: str) -> None:
    pipeline = _plain(manifest).skip_global(80)
    assert len(_keys(pipeline)) == N - 80
    assert pipeline.stage_stats()["read"].samples == N - 80


def test_a_global_slice_resumes_exactly_and_needs_counts(manifest: str, tmp_path: Path) -> None:
    assert_resumable(lambda: _stream(manifest).skip_global(10).take_global(50), epochs=2)
    write_dataset(tmp_path, make_samples(10), max_samples=5)
    for shard in (tmp_path / ".tarstream").iterdir():
        shard.unlink()
    no_counts = tarstream.TarStream(str(tmp_path / "train-{000000..000001}.tar"))
    with pytest.raises(ValueError, match="sample counts"):
        _keys(no_counts.take_global(3))


def test_a_split_of_a_split_is_a_part_of_its_part(manifest: str) -> None:
    halves = _stream(manifest).split(2)
    quarters = [q for half in halves for q in half.split(2)]
    for half, pair in zip(halves, (quarters[:2], quarters[2:]), strict=True):
        assert sorted(_keys(half)) == sorted(k for q in pair for k in _keys(q))
    with pytest.raises(ValueError, match="equal must be"):
        _stream(manifest).split(2, equal="even")  # type: ignore[arg-type]
