"""The stage contract: named sources, state keys, the position protocols."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import tarstream
from tarstream import Map, Pipeline, ReadShards, ShardList, Shuffle, SplitByRank, SplitByWorker
from tarstream.stage import Accounted, Addressable, Stage, State, is_addressable
from tarstream.testing import assert_resumable
from tarstream.world import Context, World

from .conftest import make_samples, write_dataset


class Alternate(Stage[Any]):
    """Items of two named sources in turn (a, b, a, b, ...); when one ends, the other's rest.

    State: each source's own part (under its name), whose turn it is, and which ended.
    """

    TURN_KEY = "turn"
    ENDED_KEY = "ended"

    def __init__(self, *, a: Sequence[Stage[Any]], b: Sequence[Stage[Any]]) -> None:
        super().__init__()
        self._chains = {"a": tuple(a), "b": tuple(b)}

    def inputs(self) -> dict[str, tuple[Stage[Any], ...]]:
        return self._chains

    def reset(self, state: State | None = None) -> None:
        super().reset(state)
        self._turn = state[self.TURN_KEY] if state else 0
        self._ended = set(state[self.ENDED_KEY]) if state else set()

    def next(self) -> Any:
        for _ in range(2):
            name = "ab"[self._turn % 2]
            self._turn += 1
            if name in self._ended:
                continue
            try:
                return self.sources[name].next()
            except StopIteration:
                self._ended.add(name)
        raise StopIteration

    def get_state(self) -> State:
        return {
            **super().get_state(),
            self.TURN_KEY: self._turn,
            self.ENDED_KEY: sorted(self._ended),
        }


def _reader(source: str) -> list[Stage[Any]]:
    return [ShardList(source), SplitByRank(), SplitByWorker(), ReadShards()]


@pytest.fixture
def two_datasets(tmp_path: Path) -> tuple[str, str]:
    write_dataset(tmp_path / "a", make_samples(17, prefix="a"), max_samples=5)
    write_dataset(tmp_path / "b", make_samples(9, prefix="b"), max_samples=4)
    return str(tmp_path / "a" / "_train.manifest.json"), str(
        tmp_path / "b" / "_train.manifest.json"
    )


def test_a_stage_with_two_named_sources_alternates_and_resumes_each_from_its_own_state(
    two_datasets: tuple[str, str],
) -> None:
    a, b = two_datasets

    def make() -> Pipeline:
        alternate = Alternate(a=_reader(a), b=[*_reader(b), Shuffle(4)])
        return Pipeline(alternate, Map(lambda s: s["__key__"]), seed=5)

    keys = assert_resumable(make, at=range(0, 27), epochs=2)
    assert sorted(keys) == sorted(
        [f"a/{i:05d}" for i in range(17)] + [f"b/{i:05d}" for i in range(9)]
    )
    assert [k[0] for k in keys[:18]] == ["a", "b"] * 9  # in turn while both last
    assert keys[18:] == [f"a/{i:05d}" for i in range(9, 17)]  # then the rest of a, in order
    state = next_state(make(), 3)
    assert set(state["parts"][0]["stages"]["source"]) == {"a", "b", "turn", "ended"}


def next_state(pipeline: Pipeline, n: int) -> State:
    iterator = iter(pipeline)
    for _ in range(n):
        next(iterator)
    return pipeline.state_dict()


def test_a_state_of_another_dataset_is_refused_by_a_pipeline_of_named_sources(
    two_datasets: tuple[str, str],
) -> None:
    a, b = two_datasets
    first = Pipeline(Alternate(a=_reader(a), b=_reader(b)))
    swapped = Pipeline(Alternate(a=_reader(b), b=_reader(a)))
    state = next_state(first, 2)
    with pytest.raises(tarstream.ResumeError, match="another dataset"):
        swapped.load_state_dict(state)


def test_a_stage_with_named_sources_must_come_first(two_datasets: tuple[str, str]) -> None:
    a, b = two_datasets
    pipeline = Pipeline(ShardList(a), ReadShards(), Alternate(a=_reader(a), b=_reader(b)))
    with pytest.raises(TypeError, match="must be the first stage"):
        list(pipeline)


def test_positions_are_protocols_a_stage_opts_into(two_datasets: tuple[str, str]) -> None:
    a, _ = two_datasets
    assert isinstance(ReadShards(), Addressable) and isinstance(ReadShards(), Accounted)
    assert isinstance(tarstream.Map(str), Addressable)  # a 1:1 transform, over its source
    assert isinstance(Shuffle(3), Accounted) and not isinstance(Shuffle(3), Addressable)
    assert not isinstance(tarstream.Filter(bool), (Addressable, Accounted))
    with_sidecars = tarstream.TarStream(a).map(str)
    chain = with_sidecars.connect(Context(0, 0, World()))
    assert is_addressable(chain)
    without = tarstream.TarStream(a, sidecars="ignore").map(str)
    assert not is_addressable(without.connect(Context(0, 0, World())))


def test_state_keys_are_class_constants() -> None:
    assert (ReadShards.SEGMENT_KEY, ReadShards.OFFSET_KEY) == ("segment", "offset")
    assert (Shuffle.START_KEY, Shuffle.RETURNED_KEY) == ("start", "returned")
    assert Stage.SOURCE_KEY == "source"
