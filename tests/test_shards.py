"""Epoch plans: rank and worker splits deliver every sample exactly once; even= equalizes."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tarstream
from tarstream.plan.segments import Segment, split_segments
from tarstream.world import World

from .conftest import write_dataset


def _expand(segments: list[Segment]) -> list[tuple[int, int]]:
    return [(s.shard, i) for s in segments for i in range(s.start, s.stop or 0)]


def _layout(
    sizes: list[int], world_size: int, workers: int, even: str | None
) -> list[list[list[tuple[int, int]]]]:
    shards = [Segment(i, 0, n) for i, n in enumerate(sizes)]
    out = []
    for rank in range(world_size):
        mine = split_segments(shards, rank, world_size, even)  # type: ignore[arg-type]
        out.append([_expand(split_segments(mine, w, workers)) for w in range(workers)])
    return out


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=0, max_size=12),
    world_size=st.integers(1, 8),
    workers=st.integers(1, 8),
)
def test_every_sample_once_across_ranks_and_workers(
    sizes: list[int], world_size: int, workers: int
) -> None:
    layout = _layout(sizes, world_size, workers, None)
    delivered = [s for rank in layout for worker in rank for s in worker]
    assert sorted(delivered) == [(i, j) for i, n in enumerate(sizes) for j in range(n)]
    per_rank = [sum(len(w) for w in rank) for rank in layout]
    assert max(per_rank) - min(per_rank) <= 1


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    world_size=st.integers(1, 8),
    workers=st.integers(1, 8),
    even=st.sampled_from(["drop", "pad"]),
)
def test_even_gives_every_rank_the_same_count(
    sizes: list[int], world_size: int, workers: int, even: str
) -> None:
    total = sum(sizes)
    layout = _layout(sizes, world_size, workers, even)
    per_rank = [sum(len(w) for w in rank) for rank in layout]
    expected = total // world_size if even == "drop" else -(-total // world_size)
    assert per_rank == [expected] * world_size
    counts = Counter(s for rank in layout for worker in rank for s in worker)
    everything = {(i, j) for i, n in enumerate(sizes) for j in range(n)}
    if even == "drop":  # a subset, each once, missing fewer than world_size samples
        assert set(counts) <= everything and max(counts.values(), default=1) == 1
        assert total - len(counts) < world_size
    else:  # all of it, repeats only to fill the last shares
        assert set(counts) == everything
        assert sum(counts.values()) - total < world_size or total < world_size


def test_without_counts_whole_shards_are_dealt_and_even_is_an_error() -> None:
    shards = [Segment(i) for i in range(5)]
    assert [s.shard for s in split_segments(shards, 1, 2)] == [1, 3]
    assert list(split_segments(shards, 7, 8)) == []
    with pytest.raises(ValueError, match="even='pad' needs sample counts"):
        split_segments(shards, 0, 2, "pad")


@pytest.fixture
def uneven(tmp_path: Path) -> tuple[Path, list[str]]:
    """7 shards of uneven sizes (3..21 samples, 84 in all): not divisible by layouts."""
    keys: list[str] = []
    for shard, size in enumerate([3, 21, 8, 14, 5, 19, 14]):
        samples = [{"__key__": f"s{shard}/{i:03d}", "txt": f"{shard}-{i}"} for i in range(size)]
        keys += [str(s["__key__"]) for s in samples]
        write_dataset(tmp_path, samples, start_index=shard)
        os.rename(tmp_path / "_train.manifest.json", tmp_path / f"m{shard}.json")
    return tmp_path, keys


LAYOUTS = [(1, 1), (1, 3), (2, 2), (3, 4), (8, 8), (5, 1)]


@pytest.mark.parametrize(("world_size", "workers"), LAYOUTS)
@pytest.mark.parametrize(("shuffle", "interleave"), [(False, 1), (True, None), (True, 3)])
def test_reading_in_simulated_worlds_gives_each_sample_once(
    uneven: tuple[Path, list[str]],
    world_size: int,
    workers: int,
    shuffle: bool,
    interleave: int | None,
) -> None:
    # interleave None: shuffled shards are read 4 at a time, the default
    directory, keys = uneven
    stream = tarstream.TarStream(
        str(directory / "train-{000000..000006}.tar"),
        seed=5,
        shuffle_shards=shuffle,
        interleave=interleave,
    )
    seen = []
    for rank in range(world_size):
        for worker in range(workers):
            part = stream.in_world(World(rank, world_size, worker, workers))
            seen += [s["__key__"] for s in part]
    assert sorted(seen) == sorted(keys)


@pytest.mark.parametrize(("world_size", "workers"), LAYOUTS)
def test_even_drop_and_pad_read_equal_counts_per_rank(
    uneven: tuple[Path, list[str]], world_size: int, workers: int
) -> None:
    directory, keys = uneven
    for even in ("drop", "pad"):
        stream = tarstream.TarStream(str(directory / "train-{000000..000006}.tar"), even=even)
        counts = []
        for rank in range(world_size):
            got = [
                s["__key__"]
                for w in range(workers)
                for s in stream.in_world(World(rank, world_size, w, workers))
            ]
            counts.append(len(got))
            assert len(stream.in_world(World(rank, world_size, 0, 1))) == len(got)
        expected = len(keys) // world_size if even == "drop" else -(-len(keys) // world_size)
        assert counts == [expected] * world_size


def test_without_sidecars_splits_deal_shards_and_even_is_a_clear_error(
    uneven: tuple[Path, list[str]],
) -> None:
    directory, keys = uneven
    pattern = str(directory / "train-{000000..000006}.tar")
    stream = tarstream.TarStream(pattern, sidecars="ignore")
    seen = [s["__key__"] for r in range(3) for s in stream.in_world(World(r, 3, 0, 1))]
    assert sorted(seen) == sorted(keys)
    with pytest.raises(ValueError, match="even='drop' needs sample counts"):
        list(tarstream.TarStream(pattern, sidecars="ignore", even="drop"))
    with pytest.raises(TypeError, match="length unknown"):
        len(stream)


def test_a_worker_with_nothing_to_do_ends_quietly(uneven: tuple[Path, list[str]]) -> None:
    directory, _ = uneven
    stream = tarstream.TarStream(str(directory / "train-000000.tar"), sidecars="ignore")
    assert list(stream.in_world(World(0, 1, 2, 3))) == []


def test_assignment_to_workers_changes_between_epochs(uneven: tuple[Path, list[str]]) -> None:
    directory, _ = uneven
    stream = tarstream.TarStream(str(directory / "train-{000000..000006}.tar"))
    first = [s["__key__"] for s in stream.in_world(World(0, 1, 0, 3))]
    stream.set_epoch(1)
    second = [s["__key__"] for s in stream.in_world(World(0, 1, 0, 3))]
    assert first and second and set(first) != set(second)


def test_rank_and_world_size_come_from_the_environment_at_iteration_time(
    uneven: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, keys = uneven
    stream = tarstream.TarStream(str(directory / "train-{000000..000006}.tar"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        seen.append([s["__key__"] for s in stream])
    assert len(seen[0]) == len(seen[1]) == 42 and sorted(seen[0] + seen[1]) == sorted(keys)
