"""Shared fixtures: small datasets written into tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tarstream
from tarstream.stage import Stage, State
from tarstream.stages.decode import Decode


def make_samples(n: int, *, prefix: str = "s") -> list[dict[str, Any]]:
    """Samples with text, a class id and JSON; sizes vary so shards differ."""
    return [
        {
            "__key__": f"{prefix}/{i:05d}",
            "txt": "x" * (i * 37 % 900 + 1),
            "cls": i % 7,
            "json": {"i": i, "even": i % 2 == 0},
        }
        for i in range(n)
    ]


def write_dataset(
    directory: Path, samples: list[dict[str, Any]], **options: Any
) -> tarstream.ShardWriter:
    with tarstream.ShardWriter(str(directory / "train-%06d.tar"), **options) as writer:
        for sample in samples:
            writer.write(sample)
    return writer


#: Both layouts of a dataset (``ShardWriter(pack=...)``), for fixtures that run the same
#: tests over each: plain members, and blocks of packed small samples.
PACKS = {"params": ["none", "small"], "ids": ["plain", "packed"]}


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A 3-shard dataset of 25 samples (max_samples=10), with sidecars and manifest."""
    samples = make_samples(25)
    write_dataset(tmp_path, samples, max_samples=10)
    return tmp_path, samples


class Positions(Stage[int]):
    """0, 1, ..., n - 1, addressable by position; its own iterator starts where the stage
    was when ``own_iterator()`` was called (as a user's stage may build it). Raises
    ``ValueError`` instead of item ``fail`` where given."""

    def __init__(self, n: int, fail: int | None = None) -> None:
        super().__init__()
        self.n, self.fail = n, fail
        self.position = 0

    def reset(self, state: State | None = None) -> None:
        self.position = state["position"] if state else 0

    def next(self) -> int:
        return next(self._from(self.position))

    def own_iterator(self) -> Iterator[int]:
        return self._from(self.position)

    def _from(self, start: int) -> Iterator[int]:
        for i in range(start, self.n):
            if i == self.fail:
                raise ValueError(f"item {i} is damaged")
            self.position = i + 1
            yield i

    def get_state(self) -> State:
        return {"position": self.position}

    def addressable(self) -> bool:
        return True

    def remaining(self, state: State | None) -> int:
        return self.n - (state["position"] if state else 0)

    def advance(self, state: State | None, n: int) -> State:
        return {"position": (state["position"] if state else 0) + n}

    def fetch(self, state: State | None, offsets: list[int]) -> list[Any]:
        start = state["position"] if state else 0
        return [start + offset for offset in offsets]

    def positions(self, state: State | None, offsets: list[int]) -> Any:
        return np.asarray(self.fetch(state, offsets))


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the samples ``Decode.apply`` decodes one by one (so a test sees the path)."""
    calls: list[int] = []
    apply = Decode.apply

    def counting(self: Decode, item: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return apply(self, item)

    monkeypatch.setattr(Decode, "apply", counting)
    return calls


def sidecar_of(shard: Path) -> Path:
    """Where the writer puts the sidecar of ``shard``: ``.tarstream/NAME.idx`` beside it
    (the folder is made, for a test that writes one)."""
    (shard.parent / ".tarstream").mkdir(exist_ok=True)
    return shard.parent / ".tarstream" / (shard.name + ".idx")


def files_under(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by its relative name (hidden ones included)."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run tests over the packed layout (``PACKS``) under fork, not again under spawn: the
    layouts differ in the reader alone, which both start methods run alike, and a spawn
    case of the loader tests takes a minute."""
    dropped = [
        item
        for item in items
        if (spec := getattr(item, "callspec", None)) is not None
        and "packed" in spec.id
        and "spawn" in spec.id
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
