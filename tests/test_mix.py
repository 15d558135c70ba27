"""tarstream.mix: weighted draws from several pipelines, schedules, costs, stops, resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import tarstream
from tarstream.testing import assert_resumable

SIZES = {"a": (600, 10), "b": (300, 100), "c": (150, 40)}  # samples, characters of txt


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("mix")
    manifests = {}
    for name, (n, chars) in SIZES.items():
        with tarstream.ShardWriter(str(directory / f"{name}-%06d.tar"), max_samples=70) as w:
            for i in range(n):
                w.write({"__key__": f"{name}{i:04d}", "txt": name * chars, "cls": i})
        manifests[name] = str(directory / f"_{name}.manifest.json")
    return manifests


def _streams(sources: dict[str, str], *names: str) -> dict[str, tarstream.Pipeline]:
    return {
        n: tarstream.TarStream(sources[n], seed=7, shuffle_shards=True).shuffle(50)
        for n in names or sources
    }


def _source(item: dict[str, Any]) -> str:
    return str(item["__key__"][0])


def _tokens(item: dict[str, Any]) -> float:
    return float(len(item["txt"]))


def test_each_source_gets_its_weight_within_one_percent_over_200000_draws(
    sources: dict[str, str],
) -> None:
    weights = [0.6, 0.3, 0.1]
    mixed = tarstream.mix(_streams(sources), weights, seed=3, stop="never").take(200_000)
    counts = Counter(_source(item) for item in mixed)
    assert sum(counts.values()) == 200_000
    for name, weight in zip("abc", weights, strict=True):
        assert abs(counts[name] / 200_000 - weight) < 0.01, counts
    stats = mixed.stage_stats()["mix"]
    assert stats.samples == Counter({n: counts[n] for n in "abc"}) and stats.loops["c"] > 100


def test_a_schedule_changes_the_shares_at_the_step_it_names(sources: dict[str, str]) -> None:
    schedule = [(0, [0.9, 0.1]), (100_000, [0.3, 0.7])]
    mixed = tarstream.mix(_streams(sources, "a", "b"), schedule, stop="never").take(200_000)
    names = [_source(item) for item in mixed]
    for phase, want in ((names[:100_000], 0.9), (names[100_000:], 0.3)):
        assert abs(phase.count("a") / len(phase) - want) < 0.01


def test_weights_by_cost_give_cost_shares_not_sample_shares(sources: dict[str, str]) -> None:
    mixed = tarstream.mix(_streams(sources, "a", "b"), [0.5, 0.5], stop="never", cost=_tokens).take(
        200_000
    )
    tokens = Counter()
    for item in mixed:
        tokens[_source(item)] += len(item["txt"])
    share = tokens["a"] / sum(tokens.values())
    assert abs(share - 0.5) < 0.01  # a's samples are a tenth of b's: ten times as many
    assert mixed.stage_stats()["mix"].shares()["a"] == pytest.approx(share)


def test_stop_first_ends_with_the_first_source_that_ends(sources: dict[str, str]) -> None:
    items = list(tarstream.mix(_streams(sources, "a", "c"), [0.5, 0.5], seed=1))
    counts = Counter(_source(i) for i in items)
    assert counts["c"] == 150 and counts["a"] < 600  # c ran out first
    keys = [i["__key__"] for i in items]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("stop", ["all", "all_exhausted"])
def test_stop_all_loops_the_others_until_each_has_ended_once(
    sources: dict[str, str], stop: str
) -> None:
    mixed = tarstream.mix(_streams(sources), [1, 1, 1], seed=2, stop=stop)
    counts = Counter(_source(i) for i in mixed)
    assert counts["a"] == 600  # the last to end: each of its samples once
    assert counts["b"] > 300 and counts["c"] > 150  # ended and started again
    loops = mixed.stage_stats()["mix"].loops
    assert loops["a"] == 1 and loops["c"] >= 3


def test_a_source_started_again_has_its_next_epochs_order(sources: dict[str, str]) -> None:
    mixed = tarstream.mix(_streams(sources, "a", "c"), [0.1, 0.9], stop="all")
    c = [i["__key__"] for i in mixed if _source(i) == "c"]
    first, second = c[:150], c[150:300]
    assert sorted(first) == sorted(second) and first != second


def test_mixing_resumes_exactly_at_any_point(sources: dict[str, str]) -> None:
    def make() -> tarstream.Pipeline:
        return (
            tarstream.mix(_streams(sources), [0.5, 0.3, 0.2], seed=5, stop="all")
            .map(lambda s: s["__key__"])
            .batch(16, tensors="numpy")
        )

    run = assert_resumable(make, at=[0, 1, 7, 40, 74], epochs=2)
    assert len(run) > 60


def test_mixing_resumes_exactly_through_a_loader_with_workers(sources: dict[str, str]) -> None:
    pytest.importorskip("torch")

    def make() -> tarstream.Loader:
        mixed = tarstream.mix(_streams(sources), [0.5, 0.3, 0.2], seed=5, stop="all")
        return tarstream.Loader(mixed.map(_key).batch(8, tensors="numpy"), num_workers=2)

    full = [list(b) for b in make()]
    loader = make()
    head = []
    for batch in loader:
        head.append(list(batch))
        if len(head) == 30:
            state = json.loads(json.dumps(loader.state_dict()))
            break
    resumed = make()
    resumed.load_state_dict(state)
    assert head + [list(b) for b in resumed] == full
    assert sum(resumed.stats["mix"].samples.values()) == sum(len(b) for b in full[30:])


def _key(sample: dict[str, Any]) -> str:
    return str(sample["__key__"])


def test_across_ranks_each_sample_of_a_source_comes_once_per_source_epoch(
    sources: dict[str, str],
) -> None:
    firsts: dict[str, list[str]] = {name: [] for name in sources}
    for rank in range(3):
        streams = {n: tarstream.TarStream(p).shuffle(20) for n, p in sources.items()}
        mixed = tarstream.mix(streams, [1, 1, 1], stop="never", rank=rank, world_size=3)
        keys = [_key(s) for s in mixed.take(900)]
        for name, manifest in sources.items():
            share = {_key(s) for s in tarstream.TarStream(manifest, rank=rank, world_size=3)}
            drawn = [k for k in keys if k[0] == name]
            assert len(drawn) > len(share)  # its first epoch here ended, another began
            assert set(drawn[: len(share)]) == share  # the rank's share, each once
            firsts[name] += drawn[: len(share)]
    for name, (n, _) in SIZES.items():
        assert len(firsts[name]) == len(set(firsts[name])) == n  # over the ranks: all, once


@pytest.mark.parametrize(
    ("weights", "said"),
    [
        ([1.0], "3 sources need 3 weights"),
        ([1, -1, 1], "finite, >= 0"),
        ([0, 0, 0], "not all 0"),
        ([(5, [1, 1, 1])], "starts at draw 0"),
    ],
)
def test_bad_weights_are_clear_errors(sources: dict[str, str], weights: Any, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        tarstream.mix(_streams(sources), weights)


def test_mix_takes_pipelines_and_known_stops(sources: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(tarstream.ArgumentError, match="pipelines"):
        tarstream.mix([sources["a"]])  # type: ignore[list-item]
    with pytest.raises(tarstream.ArgumentError, match="give them to mix"):
        tarstream.mix([tarstream.TarStream(sources["a"], rank=1, world_size=2)])
    with pytest.raises(ValueError, match="stop must be"):
        tarstream.mix(_streams(sources), stop="sometimes")


def _mixed_in(sources: dict[str, str], world: tarstream.World) -> tarstream.Pipeline:
    streams = {
        n: tarstream.TarStream(p, seed=4, shuffle_shards=True).shuffle(30)
        for n, p in sources.items()
    }
    return tarstream.mix(streams, [0.5, 0.3, 0.2], seed=9, stop="first").in_world(world)


def test_elastic_resume_through_a_mix_owes_each_sample_once(sources: dict[str, str]) -> None:
    from tarstream.run.elastic import rest_of_epoch
    from tarstream.run.resume import base_of

    pre: list[str] = []
    states = []
    for rank in range(2):
        for worker in range(2):
            pipeline = _mixed_in(sources, tarstream.World(rank, 2, worker, 2))
            iterator = iter(pipeline)
            pre += [_key(next(iterator)) for _ in range(13 + 17 * rank + 5 * worker)]
            states.append(json.loads(json.dumps(pipeline.state_dict())))
    state = tarstream.merge_states(states)
    fresh = _mixed_in(sources, tarstream.World(0, 1, 0, 1))
    rest = rest_of_epoch(fresh.connect, fresh.seed, 0, base_of(state))
    assert isinstance(rest, dict) and sorted(rest) == ["a", "b", "c"]
    for name, (n, _) in SIZES.items():
        owed = {f"{name}{70 * s.shard + i:04d}" for s in rest[name] for i in range(s.start, s.stop)}
        before = {k for k in pre if k[0] == name}
        assert not owed & before and len(owed | before) == n  # every sample: once, somewhere
    post: list[str] = []
    for rank in range(3):
        pipeline = _mixed_in(sources, tarstream.World(rank, 3, 0, 1))
        pipeline.load_state_dict(state)
        post += [_key(s) for s in pipeline]
    assert len(set(pre + post)) == len(pre + post)  # nothing twice
    assert len(post) > 100


def test_elastic_resume_through_a_mix_whose_source_restarted_is_refused(
    sources: dict[str, str],
) -> None:
    def looping(world: tarstream.World) -> tarstream.Pipeline:
        streams = {n: tarstream.TarStream(p) for n, p in sources.items()}
        return tarstream.mix(streams, [1, 1, 8], stop="all").in_world(world)

    pipeline = looping(tarstream.World(0, 1, 0, 1))
    iterator = iter(pipeline)
    for _ in range(400):  # c (150 samples, most of the draws) has started again
        next(iterator)
    state = pipeline.state_dict()
    moved = looping(tarstream.World(0, 2, 0, 1))
    moved.load_state_dict(state)
    with pytest.raises(tarstream.ResumeError, match="started again"):
        list(moved)


def test_an_endless_mixture_has_the_epoch_length_it_is_given(sources: dict[str, str]) -> None:
    def endless() -> tarstream.Pipeline:
        return tarstream.mix(_streams(sources), [0.2, 0.3, 0.5], stop="never", length=1000)

    pipeline = endless().batch(64, tensors="numpy")
    assert len(pipeline) == 16 and sum(len(b["__key__"]) for b in pipeline) == 1000
    shares = [endless().in_world(tarstream.World(r, 2, w, 3)) for r in range(2) for w in range(3)]
    assert [len(s) for s in shares] == [167, 167, 167, 167, 166, 166]
    assert sum(len(_keys(s)) for s in shares) == 1000
    assert_resumable(lambda: endless().map(_key), at=[0, 500, 999], epochs=2)


def _keys(pipeline: Any) -> list[str]:
    return [_key(s) for s in pipeline]
