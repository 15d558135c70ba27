"""Plans as runs: arithmetic on arrays checked against per-sample lists, interleaved order,
planned orders equal to what streams read, the manifest at scale, ``tarstream plan``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from braceexpand import braceexpand
from hypothesis import given, settings
from hypothesis import strategies as st

import tarstream
from tarstream.cli import main
from tarstream.format.braces import expand
from tarstream.format.manifest import Manifest, is_safe_name
from tarstream.plan.interleave import Interleaved
from tarstream.plan.segments import (
    Plan,
    Segment,
    complement_spans,
    concat,
    merge_runs,
    subtract_spans,
    union_spans,
)
from tarstream.plan.specs import resolve_shards

from .conftest import make_samples, write_dataset

sizes_st = st.lists(st.integers(0, 9), min_size=0, max_size=8)


def _numbers(plan: Plan, sizes: list[int]) -> list[int]:
    """The dataset-wide sample numbers of a plan, one by one."""
    first = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [int(first[s.shard]) + i for s in plan for i in range(s.start, s.stop or 0)]


def _shuffled_plan(sizes: list[int], seed: int) -> Plan:
    rng = np.random.default_rng(seed)
    segments = []
    for shard, n in enumerate(sizes):
        cut = int(rng.integers(0, n + 1))
        segments += [Segment(shard, 0, cut), Segment(shard, cut, n)]
    return Plan.of([segments[i] for i in rng.permutation(len(segments))])


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, seed=st.integers(0, 99), parts=st.integers(1, 7), data=st.data())
def test_splits_and_takes_equal_the_same_on_sample_lists(
    sizes: list[int], seed: int, parts: int, data: Any
) -> None:
    plan = _shuffled_plan(sizes, seed)
    flat = _numbers(plan, sizes)
    n = len(flat)
    assert plan.total == n
    for even in (None, "drop", "pad"):
        shares = [_numbers(plan.split(p, parts, even), sizes) for p in range(parts)]
        if even is None:
            assert [x for share in shares for x in share] == flat
        elif even == "drop":
            assert [x for share in shares for x in share] == flat[: n // parts * parts]
        else:
            assert all(len(share) == -(-n // parts) for share in shares) or n == 0
    first = data.draw(st.integers(0, n))
    last = data.draw(st.integers(first, n))
    assert _numbers(plan.take(first, last), sizes) == flat[first:last]


@settings(max_examples=150, deadline=None)
@given(
    total=st.integers(0, 60),
    a=st.sets(st.integers(0, 59)),
    b=st.sets(st.integers(0, 59)),
)
def test_span_arithmetic_equals_set_arithmetic(total: int, a: set[int], b: set[int]) -> None:
    a = {x for x in a if x < total}
    b = {x for x in b if x < total}

    def spans(points: set[int]) -> np.ndarray:
        return np.array([[x, x + 1] for x in sorted(points)], dtype=np.int64).reshape(-1, 2)

    def points(rows: np.ndarray) -> list[int]:
        out = [x for lo, hi in rows.tolist() for x in range(lo, hi)]
        assert all(hi < lo2 for (_, hi), (lo2, _) in itertools.pairwise(rows.tolist()))
        return out

    assert points(union_spans(spans(a), spans(b))) == sorted(a | b)
    assert points(subtract_spans(spans(a), spans(b))) == sorted(a - b)
    assert points(complement_spans(union_spans(spans(a)), total)) == sorted(set(range(total)) - a)


@settings(max_examples=100, deadline=None)
@given(sizes=sizes_st, seed=st.integers(0, 99), parts=st.integers(1, 5))
def test_the_runs_of_several_copies_merge_into_dataset_order(
    sizes: list[int], seed: int, parts: int
) -> None:
    plan = _shuffled_plan(sizes, seed)
    pieces = [plan.split(p, parts) for p in range(parts)]
    first = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    merged = merge_runs(concat(pieces), first)
    assert _numbers(merged, sizes) == list(range(sum(sizes)))
    nonempty = [n for n in sizes if n]
    assert len(merged) == len(nonempty)  # neighbouring runs joined: one run per shard


@settings(max_examples=100, deadline=None)
@given(sizes=sizes_st, k=st.integers(1, 5), seed=st.integers(0, 99), data=st.data())
def test_an_interleaved_order_is_a_permutation_its_spans_and_positions_agree_on(
    sizes: list[int], k: int, seed: int, data: Any
) -> None:
    plan = _shuffled_plan(sizes, seed)
    order = Interleaved(plan, k, seed)
    n = int(plan.total or 0)
    positions = order.positions(np.arange(n)).tolist()
    assert sorted(positions) == list(range(n))
    t = data.draw(st.integers(0, n))
    first = order.group_at(t) if t < n else len(plan)
    if t < n:
        spans = order.delivered(first, t - int(order.bounds[first]))
        got = [x for lo, hi in spans.tolist() for x in range(lo, hi)]
        assert got == sorted(positions[:t])  # the items before t took exactly these


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("plan")
    write_dataset(directory, make_samples(300), max_samples=37)
    return str(directory / "_train.manifest.json")


@pytest.mark.parametrize(
    ("interleave", "buffer", "world"),
    [(1, 0, (0, 1, 0, 1)), (3, 0, (1, 2, 1, 3)), (None, 50, (0, 1, 0, 1)), (4, 20, (1, 3, 0, 2))],
)
def test_the_planned_order_is_the_order_the_stream_reads(
    manifest: str, interleave: int | None, buffer: int, world: tuple[int, int, int, int]
) -> None:
    stream: Any = tarstream.TarStream(manifest, seed=4, shuffle_shards=True, interleave=interleave)
    stream = stream.shuffle(buffer) if buffer else stream
    where = tarstream.World(*world)
    planned = tarstream.planned_order(stream, where)
    # the shards hold samples 0..299 in key order: a key's number is the sample's
    read = [int(s["__key__"].rsplit("/", 1)[-1]) for s in stream.in_world(where)]
    assert planned.tolist() == read


def test_a_loaders_rank_order_takes_a_batch_from_each_worker_in_turn(manifest: str) -> None:
    stream = tarstream.TarStream(manifest, seed=2, shuffle_shards=True).shuffle(30)
    workers = [tarstream.planned_order(stream, tarstream.World(0, 1, w, 2)) for w in range(2)]
    joined = tarstream.rank_order(stream, 0, 1, 2, batch=8)
    assert joined[:16].tolist() == workers[0][:8].tolist() + workers[1][:8].tolist()
    assert sorted(joined.tolist()) == list(range(300))


@settings(max_examples=200, deadline=None)
@given(
    head=st.text("ab-_./%", max_size=6),
    first=st.integers(0, 120),
    count=st.integers(0, 30),
    width=st.integers(1, 4),
    tail=st.text("xy._-", max_size=4),
)
def test_a_numbered_pattern_expands_as_braceexpand_does(
    head: str, first: int, count: int, width: int, tail: str
) -> None:
    pattern = f"{head}{{{first:0{width}d}..{first + count:0{width}d}}}{tail}"
    assert expand(pattern) == list(braceexpand(pattern))


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("ab0_-./%:~\\\n\x01pie"), max_size=12))
def test_a_name_safe_at_a_glance_is_safe_by_every_rule(name: str) -> None:
    from tarstream.format.manifest import _PLAIN_NAME, _safe_by_rules

    assert is_safe_name(name) == bool(_PLAIN_NAME.match(name) or _safe_by_rules(name))
    if _PLAIN_NAME.match(name):
        assert _safe_by_rules(name)


def test_a_manifest_of_many_shards_is_read_without_an_object_per_shard(tmp_path: Path) -> None:
    n = 50_000
    names = [f"s-{i:06d}.tar" for i in range(n)]
    path = tmp_path / "big.manifest.json"
    path.write_text(Manifest(names, [3] * n, [3000] * n, ["txt"]).to_json())
    specs = resolve_shards(str(path))
    assert len(specs) == n and specs.counts()[-1] == 3
    assert specs[n - 1].url == str(tmp_path / "s-049999.tar") and specs[-1] == specs[n - 1]
    assert specs[12].sidecar == str(tmp_path / "s-000012.tar.idx")  # no sidecar_dir named
    stream = tarstream.TarStream(str(path), shuffle_shards=True)
    plan = tarstream.planned_order(stream, tarstream.World(7, 64, 3, 8))
    assert len(plan) in (n * 3 // 512, n * 3 // 512 + 1)


def test_the_plan_command_simulates_a_world_without_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["plan", "--synthetic", "200x50", "--ranks", "3", "--workers", "2", "--batch", "8"]
    args += ["--shuffle-shards", "--shuffle", "100", "--even", "drop", "--cache-shards", "8"]
    assert main([*args, "--epochs", "2"]) == 0
    figures = json.loads(capsys.readouterr().out)
    per_rank = figures["per_rank"]
    assert per_rank["samples"]["min"] == per_rank["samples"]["max"] == 10_000 // 3
    assert per_rank["batches"]["max"] == 10_000 // 3 // 8
    assert figures["per_epoch"]["bytes_read"] == 10_000 // 3 * 3 * 1000
    assert len(figures["cache_hit_rate"]) == 2
    assert figures["quality_rank0"]["samples"] == 10_000 // 3
    assert figures["peak_memory_per_rank"]["open_shards"] == 8  # 4 at once, 2 workers
    assert main(["plan"]) == 2  # neither a manifest nor --synthetic


def test_the_quality_command_measures_the_default_against_the_buffer_alone(
    manifest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rates = []
    for interleave in ("1", "4"):
        args = ["quality", manifest, "--shuffle-shards", "--shuffle", "20"]
        assert main([*args, "--interleave", interleave]) == 0
        rates.append(json.loads(capsys.readouterr().out)["same_shard_successor"])
    assert rates[1] < rates[0]


def test_a_shard_shuffle_after_the_rank_split_shuffles_each_ranks_own_share(
    manifest: str,
) -> None:
    def pipeline() -> tarstream.Pipeline:
        return tarstream.Pipeline(
            tarstream.ShardList(manifest),
            tarstream.SplitByRank(),
            tarstream.ShuffleShards(),  # a share of its own per rank: never another's order
            tarstream.SplitByWorker(),
            tarstream.ReadShards(),
            seed=3,
        )

    shared = pipeline()  # its copies share one shard list, and its cache
    seen = []
    for rank in range(3):
        for worker in range(2):
            part = shared.in_world(tarstream.World(rank, 3, worker, 2))
            seen += [s["__key__"] for s in part]
    assert sorted(seen) == sorted(s["__key__"] for s in make_samples(300))
