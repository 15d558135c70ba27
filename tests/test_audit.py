"""The exactly-once audit: Loader(audit=...) logs through resumes in any layout, and
``tarstream audit`` passes them, and fails a repeated or a dropped sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tarstream
from tarstream.cli import main
from tarstream.plan.segments import union_spans
from tarstream.run.audit import check_logs, decode_runs, encode_runs, read_logs

from .conftest import make_samples, write_dataset

pytest.importorskip("torch")

N = 400


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("audit")
    write_dataset(directory, make_samples(N), max_samples=33)
    return str(directory / "_train.manifest.json")


def _pipeline(manifest: str, **world: Any) -> tarstream.Pipeline:
    stream = tarstream.TarStream(manifest, seed=5, shuffle_shards=True, **world)
    return stream.shuffle(40).batch(6)


def _loader(manifest: str, logs: Path, workers: int, context: str, **world: Any) -> Any:
    return tarstream.Loader(
        _pipeline(manifest, **world),
        num_workers=workers,
        multiprocessing_context=context if workers else None,
        audit=logs,
        audit_every=4,
    )


def _keys(batches: list[Any]) -> list[str]:
    return [k for b in batches for k in b["__key__"]]


def _take(iterator: Any, n: int) -> list[Any]:
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_run_resumed_exactly_and_elastically_passes_the_audit(
    manifest: str, tmp_path: Path, context: str
) -> None:
    logs = tmp_path / "logs"
    first = _loader(manifest, logs, 2, context)
    iterator = iter(first)
    seen = _keys(_take(iterator, 9))
    state = json.loads(json.dumps(first.state_dict()))
    _take(iterator, 5)  # work the run loses: never saved, delivered again after the resume
    exact = _loader(manifest, logs, 2, context)
    exact.load_state_dict(state)
    iterator = iter(exact)
    seen += _keys(_take(iterator, 7))
    state = json.loads(json.dumps(exact.state_dict()))
    elastic = _loader(manifest, logs, 3, context)  # another layout
    elastic.load_state_dict(state)
    seen += _keys(list(elastic))
    assert sorted(seen) == sorted(s["__key__"] for s in make_samples(N))
    records = read_logs([logs])
    assert any(r["kind"] == "checkpoint" for r in records)
    result = check_logs(records)
    assert result["ok"], result
    assert result["epochs"]["0"]["delivered"] == result["epochs"]["0"]["planned"] == N
    assert main(["audit", str(logs)]) == 0


def test_ranks_saved_together_and_resumed_in_fewer_ranks_pass_the_audit(
    manifest: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    states = []
    for rank in range(3):
        loader = _loader(manifest, logs, 0, "fork", rank=rank, world_size=3)
        iterator = iter(loader)
        _take(iterator, 6)
        states.append(loader.state_dict())
        _take(iterator, 2)  # lost when the run stops
    merged = tarstream.merge_states(states)
    for rank in range(2):
        loader = _loader(manifest, logs, 0, "fork", rank=rank, world_size=2)
        loader.load_state_dict(merged)
        list(loader)
    assert check_logs(read_logs([logs]))["ok"]


def test_the_audit_fails_an_epoch_started_again_without_its_state(
    manifest: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    loader = _loader(manifest, logs, 0, "fork")
    iterator = iter(loader)
    repeated = _keys(_take(iterator, 5))
    loader.state_dict()
    again = _loader(manifest, logs, 0, "fork")  # a restart that forgot load_state_dict
    list(again)
    assert main(["audit", str(logs)]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert "epoch 0: FAILED" in captured.err and "repeated 30" in captured.err
    runs = out["epochs"]["0"]["repeated"]
    numbers = [x for lo, hi in runs for x in range(lo, hi)]
    # the repeated samples are exactly those of the first five batches
    assert sorted(numbers) == sorted(int(k.rsplit("/", 1)[1]) for k in repeated)


def test_the_audit_fails_an_epoch_left_before_its_end(manifest: str, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    loader = _loader(manifest, logs, 0, "fork")
    iterator = iter(loader)
    got = _keys(_take(iterator, 10))
    loader.state_dict()
    loader.set_epoch(1)  # the next epoch, the rest of this one dropped
    list(loader)
    result = check_logs(read_logs([logs]))
    assert not result["ok"] and result["epochs"]["1"]["ok"]
    missed = result["epochs"]["0"]["missed"]
    assert sum(hi - lo for lo, hi in missed) == N - len(got)


def test_records_hold_scattered_samples_as_bitmaps() -> None:
    rng = np.random.default_rng(1)
    for spread in (40_000, 1_000_000):  # half the samples of a range, and a fiftieth
        numbers = np.sort(rng.choice(spread, 20_000, replace=False))
        spans = np.stack([numbers, numbers + 1], axis=1)
        rows = encode_runs(spans)
        assert np.array_equal(decode_runs(rows), union_spans(spans))  # touching ones join
        pairs = len(json.dumps(spans.tolist()))
        assert len(json.dumps(rows)) < pairs / (20 if spread == 40_000 else 3)


def test_the_audit_lists_what_a_lenient_reader_lost(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_dataset(directory, make_samples(120), max_samples=30)
    shard = sorted(directory.glob("*.tar"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # cut in the middle
    logs = tmp_path / "logs"
    stream = tarstream.TarStream(
        str(directory / "_train.manifest.json"), seed=1, shuffle_shards=True, errors="skip"
    )
    loader = tarstream.Loader(stream.batch(5), audit=logs, audit_every=3)
    got = _keys(list(loader))
    lost = loader.stats["read"].samples_lost
    assert lost > 0 and len(got) == 120 - lost
    result = check_logs(read_logs([logs]))
    epoch = result["epochs"]["0"]
    assert not result["ok"] and not epoch["missed"] and not epoch["repeated"]
    dropped = {x for lo, hi in epoch["lost"] for x in range(lo, hi)}
    assert dropped == set(range(120)) - {int(k.rsplit("/", 1)[1]) for k in got}
    assert epoch["delivered"] == len(got)
