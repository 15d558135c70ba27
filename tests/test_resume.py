"""Resuming: exact (Loader workers, fork and spawn, persistent or not), elastic (other world
sizes and worker counts), fast (no re-reading), through StatefulDataLoader and DDP."""

from __future__ import annotations

import json
import os
import socket
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
from hypothesis import given, settings
from hypothesis import strategies as st

import tarstream
from tarstream import ResumeError, ResumeWarning, Shuffle, World
from tarstream.testing import assert_resumable

from .conftest import PACKS, Positions, write_dataset

SIZES = [20, 7, 25, 11, 24]  # 87 samples, uneven shards


@pytest.fixture(scope="module", **PACKS)
def shards(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[str, list[str]]:
    """5 shards with sidecars, 87 samples of uneven shard sizes; plain or packed."""
    directory = tmp_path_factory.mktemp("resume")
    keys = []
    start = 0
    for shard, size in enumerate(SIZES):
        samples = [{"__key__": f"k{start + i:04d}", "cls": start + i} for i in range(size)]
        keys += [str(s["__key__"]) for s in samples]
        write_dataset(directory, samples, start_index=shard, manifest=None, pack=request.param)
        start += size
    return str(directory / "train-{000000..000004}.tar"), keys


def _stream(pattern: str, **options: Any) -> tarstream.Pipeline:
    return tarstream.TarStream(pattern, seed=3, shuffle_shards=True, **options).shuffle(16)


def _batches(pattern: str) -> tarstream.Pipeline:
    return _stream(pattern).batch(4)


def _keys(batch: dict[str, Any]) -> tuple[str, ...]:
    return tuple(batch["__key__"])


def _through_json(state: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(state))  # type: ignore[no-any-return]


# -- exact resume through tarstream.Loader ----------------------------------------------------

LOADER_CONFIGS = [(0, None, False)] + [
    (workers, context, persistent)
    for context in ("fork", "spawn")
    for workers in (1, 2, 3)
    for persistent in (False, True)
]


@pytest.mark.parametrize(
    ("workers", "context", "persistent"),
    [pytest.param(*c, marks=[pytest.mark.slow] if c[1] == "spawn" else []) for c in LOADER_CONFIGS],
)
def test_loader_resumes_exactly_at_any_step_and_the_next_epochs_follow(
    shards: tuple[str, list[str]], workers: int, context: str | None, persistent: bool
) -> None:
    pattern, keys = shards

    def loader() -> tarstream.Loader:
        return tarstream.Loader(
            _batches(pattern),
            num_workers=workers,
            multiprocessing_context=context,
            persistent_workers=persistent,
        )

    # the uninterrupted run: three epochs, in the fork reference where spawn is tested
    reference_loader = tarstream.Loader(
        _batches(pattern), num_workers=workers, multiprocessing_context="fork" if workers else None
    )
    reference = [[_keys(b) for b in reference_loader] for _ in range(3)]
    n = len(reference[0])
    assert sorted(k for b in reference[0] for k in b) == keys
    points = [0, 1, n // 2, n - 1, n]

    # one interrupted run saves at every checkpoint while workers prefetch ahead
    first = loader()
    states = {0: _through_json(first.state_dict())}
    for step, _ in enumerate(first, 1):
        if step in points:
            states[step] = _through_json(first.state_dict())
    assert len(json.dumps(states[n // 2])) < 4096
    for k in points:
        resumed = loader()
        resumed.load_state_dict(states[k])
        tail = [_keys(b) for b in resumed]
        assert reference[0][:k] + tail == reference[0], f"resumed at step {k}"
        assert [[_keys(b) for b in resumed] for _ in range(2)] == reference[1:], f"after {k}"


def test_state_counts_what_the_trainer_received_not_what_workers_prefetched(
    shards: tuple[str, list[str]],
) -> None:
    pattern, _ = shards
    loader = tarstream.Loader(_batches(pattern), num_workers=2, multiprocessing_context="fork")
    iterator = iter(loader)
    received = [_keys(next(iterator)) for _ in range(3)]
    state = loader.state_dict()  # workers have prefetched several batches by now
    delivered_by_worker = {p["worker"]: p["stages"] for p in state["parts"]}
    assert state["next"] == {"0": 1}  # worker 0, 1, 0 delivered; worker 1 is next
    assert all(delivered_by_worker.values())
    resumed = tarstream.Loader(_batches(pattern), num_workers=2, multiprocessing_context="fork")
    resumed.load_state_dict(state)
    rest = [_keys(b) for b in resumed]
    everything = received + rest
    assert len(set(everything)) == len(everything)
    assert sorted(k for b in everything for k in b) == sorted(
        k for b in tarstream.Loader(_batches(pattern)) for k in b["__key__"]
    )


def test_filters_and_maps_after_the_shuffle_keep_the_accounting_on_source_samples(
    shards: tuple[str, list[str]],
) -> None:
    pattern, keys = shards

    def make() -> tarstream.Pipeline:
        return (
            _stream(pattern)
            .filter(lambda s: int(s["__key__"][1:]) % 10 != 3)
            .map(lambda s: {**s, "tag": s["__key__"].upper()})
            .batch(5)
        )

    assert_resumable(make, epochs=3)
    assert sorted(k for b in make() for k in b["__key__"]) == [
        k for k in keys if int(k[1:]) % 10 != 3
    ]


# -- fast resume -----------------------------------------------------------------------------


def test_resuming_a_shuffle_fetches_only_the_buffered_samples(
    shards: tuple[str, list[str]],
) -> None:
    pattern, _ = shards
    seen: list[str] = []

    def note(sample: dict[str, Any]) -> dict[str, Any]:
        seen.append(sample["__key__"])
        return sample

    def make() -> tarstream.Pipeline:
        return tarstream.TarStream(pattern, seed=1).map(note).shuffle(16)

    first = make()
    iterator = iter(first)
    head = [next(iterator)["__key__"] for _ in range(70)]
    state = _through_json(first.state_dict())
    seen.clear()
    resumed = make()
    resumed.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)
        tail = [s["__key__"] for s in resumed]
    # the 17 items of the rest, at most 16 of them in the buffer: nothing consumed again
    assert sorted(seen) == sorted(tail) and len(tail) == 17
    assert sorted(head + tail) == sorted(s["__key__"] for s in make())


@pytest.mark.parametrize(
    ("size", "initial", "interleave"),
    [(1, None, 1), (5, 2, 1), (16, None, 1), (40, 1, 1), (200, 30, 1), (5, 2, 3), (16, None, 5)],
)
def test_a_shuffle_resumed_from_positions_continues_exactly_at_every_item(
    shards: tuple[str, list[str]], size: int, initial: int | None, interleave: int
) -> None:
    pattern, _ = shards

    def make() -> tarstream.Pipeline:
        stream = tarstream.TarStream(pattern, seed=8, interleave=interleave)
        return stream.shuffle(size, initial=initial)

    assert_resumable(make, at=range(88), epochs=2)


@pytest.mark.parametrize("interleave", [2, 3, 5, 9])
def test_an_interleaving_reader_mixes_shards_and_resumes_at_every_item(
    shards: tuple[str, list[str]], interleave: int
) -> None:
    pattern, keys = shards

    def make() -> tarstream.Pipeline:
        return tarstream.TarStream(pattern, seed=8, interleave=interleave)

    assert_resumable(make, at=range(88), epochs=2)
    order = [s["__key__"] for s in make()]
    assert sorted(order) == keys  # each sample once
    first = {int(k[1:]) // 20 for k in order[:12]}  # shards of 20 or fewer samples
    assert len(first) > 1  # several shards in the first dozen samples
    for shard in range(5):  # each shard's own samples in their order
        mine = [k for k in order if k in keys[sum(SIZES[:shard]) : sum(SIZES[: shard + 1])]]
        assert mine == sorted(mine)


def test_a_shuffle_over_a_stage_with_its_own_iterator_resumes_from_positions() -> None:
    # the shuffle pulls through the source's iterator, which it must take again after
    # the reset that skips the items a resume fetched
    def make() -> tarstream.Pipeline:
        return tarstream.Pipeline(Positions(60), Shuffle(8), seed=3)

    full = assert_resumable(make, at=range(61))
    assert sorted(full) == list(range(60))


def test_without_sidecars_a_shuffle_resumes_by_rereading_and_says_so(
    shards: tuple[str, list[str]],
) -> None:
    pattern, _ = shards

    def make() -> tarstream.Pipeline:
        return _stream(pattern, sidecars="ignore").batch(4)

    first = make()
    iterator = iter(first)
    head = [_keys(next(iterator)) for _ in range(10)]
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    with pytest.warns(ResumeWarning, match="re-reading the 40 items"):
        tail = [_keys(b) for b in resumed]
    assert head + tail == [_keys(b) for b in make()]


# -- elastic resume ----------------------------------------------------------------------------


def _dropping(pattern: str, **options: Any) -> tarstream.Pipeline:
    """Shuffled samples with a filter that drops about 10% of them."""
    return _stream(pattern, **options).filter(lambda s: int(s["__key__"][1:]) % 10 != 7)


def _kept(keys: list[str]) -> list[str]:
    return [k for k in keys if int(k[1:]) % 10 != 7]


@settings(max_examples=40, deadline=None)
@given(
    old=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    new=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    steps=st.lists(st.integers(0, 30), min_size=16, max_size=16),
    twice=st.booleans(),
    interleave=st.sampled_from([1, 2, None, 5]),
)
def test_elastic_resume_in_simulated_worlds_delivers_the_rest_once(
    shards: tuple[str, list[str]],
    old: tuple[int, int],
    new: tuple[int, int],
    steps: list[int],
    twice: bool,
    interleave: int | None,
) -> None:
    # interleave None: the default (4 segments at once, the shards being shuffled)
    pattern, keys = shards

    def make(pattern: str) -> tarstream.Pipeline:
        return _dropping(pattern, interleave=interleave)

    delivered: list[str] = []

    def run_layout(
        layout: tuple[int, int], state: dict[str, Any] | None, limit: bool
    ) -> dict[str, Any]:
        states = []
        for rank in range(layout[0]):
            for worker in range(layout[1]):
                pipeline = make(pattern).in_world(World(rank, layout[0], worker, layout[1]))
                if state is not None:
                    pipeline.load_state_dict(state)
                iterator = iter(pipeline)
                for _ in range(steps[rank * 4 + worker] if limit else 10**9):
                    try:
                        delivered.append(next(iterator)["__key__"])
                    except StopIteration:
                        break
                states.append(_through_json(pipeline.state_dict()))
        return tarstream.merge_states(states)

    state = run_layout(old, None, limit=True)
    if twice:
        state = run_layout(new, state, limit=True)
    run_layout(new, state, limit=False)
    assert sorted(delivered) == _kept(keys)


@pytest.mark.parametrize(("world_size", "workers"), [(3, 1), (1, 0), (2, 2), (1, 3)])
def test_loader_saved_by_two_ranks_of_three_workers_resumes_in_another_layout(
    shards: tuple[str, list[str]], world_size: int, workers: int
) -> None:
    pattern, keys = shards
    delivered: list[str] = []
    states = []
    for rank, steps in enumerate([9, 4]):
        loader = tarstream.Loader(
            _dropping(pattern, rank=rank, world_size=2).batch(3),
            num_workers=3,
            multiprocessing_context="fork",
        )
        iterator = iter(loader)
        for _ in range(steps):
            delivered += next(iterator)["__key__"]
        states.append(_through_json(loader.state_dict()))
        del iterator
    state = tarstream.merge_states(states)
    for rank in range(world_size):
        loader = tarstream.Loader(
            _dropping(pattern, rank=rank, world_size=world_size).batch(3),
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        loader.load_state_dict(state)
        delivered += [k for b in loader for k in b["__key__"]]
        # the next epoch is a whole one again, split over the new layout
        if rank == 0 and world_size == 1:
            assert sorted(k for b in loader for k in b["__key__"]) == _kept(keys)
    assert sorted(delivered) == _kept(keys)


def test_a_state_is_rejected_with_a_clear_error_when_it_cannot_be_resumed(
    shards: tuple[str, list[str]], tmp_path: Path
) -> None:
    pattern, _ = shards
    stream = _batches(pattern)
    iterator = iter(stream)
    next(iterator)
    state = _through_json(stream.state_dict())
    with pytest.raises(ResumeError, match="unknown state version 7"):
        _batches(pattern).load_state_dict({**state, "version": 7})
    write_dataset(tmp_path, [{"__key__": f"o{i}", "cls": i} for i in range(9)], manifest=None)
    other = tarstream.TarStream(str(tmp_path / "train-000000.tar"), seed=3, shuffle_shards=True)
    with pytest.raises(ResumeError, match="another dataset"):
        other.shuffle(16).batch(4).load_state_dict(state)
    with pytest.raises(ResumeError, match="seed 3, not 4"):
        tarstream.TarStream(pattern, seed=4, shuffle_shards=True).shuffle(16).batch(
            4
        ).load_state_dict(state)
    with pytest.raises(ResumeError, match="pipeline of"):
        _stream(pattern).load_state_dict(state)

    # one rank's part cannot be resumed in another layout
    ranked = _batches(pattern).in_world(World(1, 2, 0, 1))
    iterator = iter(ranked)
    next(iterator)
    part = ranked.state_dict()
    moved = _batches(pattern).in_world(World(0, 3, 0, 1))
    moved.load_state_dict(part)
    with pytest.raises(ResumeError, match="needs every rank's part"):
        next(iter(moved))

    loader = tarstream.Loader(_stream(pattern, rank=1, world_size=2).batch(4), num_workers=1)
    iterator = iter(loader)
    next(iterator)
    elsewhere = tarstream.Loader(_stream(pattern, rank=1, world_size=3).batch(4))
    elsewhere.load_state_dict(loader.state_dict())
    with pytest.raises(ResumeError, match="needs every rank's part"):
        iter(elsewhere)

    # a filter before the shuffle: its positions are not the reader's
    early = tarstream.TarStream(pattern, seed=3).filter(lambda s: True).shuffle(16)
    iterator = iter(early)
    next(iterator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumeWarning)
        moved = tarstream.TarStream(pattern, seed=3).filter(lambda s: True).shuffle(16)
        moved = moved.in_world(World(0, 2, 0, 1))
        moved.load_state_dict(early.state_dict())
        with pytest.raises(ResumeError, match="elastic resume through a shuffle"):
            next(iter(moved))

    # without sample counts, positions cannot be mapped to samples in another layout
    blind = _stream(pattern, sidecars="ignore").in_world(World(0, 1, 0, 1))
    iterator = iter(blind)
    next(iterator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumeWarning)
        moved = _stream(pattern, sidecars="ignore").in_world(World(0, 2, 0, 1))
        moved.load_state_dict(blind.state_dict())
        with pytest.raises(ResumeError, match="sample count"):
            next(iter(moved))


# -- torchdata's StatefulDataLoader ------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_a_pipeline_exactly(
    shards: tuple[str, list[str]], workers: int
) -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    pattern, _ = shards
    options: dict[str, Any] = {"batch_size": None, "num_workers": workers}
    if workers:
        options["multiprocessing_context"] = "fork"

    def epochs(loader: Any, dataset: tarstream.Pipeline, first: int, count: int) -> list[Any]:
        out = []
        for epoch in range(first, first + count):
            dataset.set_epoch(epoch)
            out.append([_keys(b) for b in loader])
        return out

    dataset = _batches(pattern)
    reference = epochs(StatefulDataLoader(dataset, **options), dataset, 0, 3)
    n = len(reference[0])
    for k in (1, n // 2, n - 1):
        dataset = _batches(pattern)
        loader = StatefulDataLoader(dataset, **options)
        iterator = iter(loader)
        head = [_keys(next(iterator)) for _ in range(k)]
        state = loader.state_dict()
        del iterator
        dataset = _batches(pattern)
        resumed = StatefulDataLoader(dataset, **options)
        resumed.load_state_dict(state)
        assert head + [_keys(b) for b in resumed] == reference[0], f"resumed at {k}"
        assert epochs(resumed, dataset, 1, 2) == reference[1:]


# -- DDP: stop mid-epoch, restart the process group, resume ------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_resume_rank(rank: int, world_size: int, ports: list[int], pattern: str, out: str) -> None:
    def loader() -> tarstream.Loader:
        stream = _stream(pattern, even="drop").batch(4)
        return tarstream.Loader(stream, num_workers=2, multiprocessing_context="fork")

    def connect(port: int) -> None:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group(
            "gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=30)
        )

    def step() -> None:
        total = torch.ones(1)
        dist.all_reduce(total)  # hangs (and times out) if ranks ran different step counts
        assert int(total.item()) == world_size

    connect(ports[0])
    before: list[str] = []
    first = loader()
    iterator = iter(first)
    for _ in range(5):
        before += next(iterator)["__key__"]
        step()
    state = _through_json(first.state_dict(all_ranks=True))
    del iterator
    dist.destroy_process_group()

    connect(ports[1])  # a restarted job: new process group, new loader
    try:
        resumed = loader()
        resumed.load_state_dict(state)
        after: list[str] = []
        steps = 0
        for batch in resumed:
            after += batch["__key__"]
            step()
            steps += 1
        gathered: list[object] = [None] * world_size
        dist.all_gather_object(gathered, (5 + steps, before, after))
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_stop_mid_epoch_and_resume_after_a_restart_with_equal_steps(
    shards: tuple[str, list[str]], tmp_path: Path
) -> None:
    pattern, keys = shards
    out = tmp_path / "gathered.json"
    tmp.start_processes(
        _ddp_resume_rank,
        args=(2, [_free_port(), _free_port()], pattern, str(out)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    gathered = json.loads(out.read_text())
    steps = [s for s, _, _ in gathered]
    delivered = [k for _, before, after in gathered for k in before + after]
    assert len(set(steps)) == 1, f"ranks ran different numbers of steps: {steps}"
    assert len(delivered) == len(set(delivered)) == len(keys) - len(keys) % 2  # drop the odd one


def test_set_epoch_after_loading_a_state_runs_that_epoch_or_starts_another_afresh(
    shards: tuple[str, list[str]],
) -> None:
    pattern, _ = shards
    loader = tarstream.Loader(_batches(pattern))
    loader.set_epoch(4)
    iterator = iter(loader)
    head = [_keys(next(iterator)) for _ in range(5)]
    state = _through_json(loader.state_dict())
    whole = [_keys(b) for b in tarstream.Loader(_batches(pattern))]

    resumed = tarstream.Loader(_batches(pattern))
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # the usual loop after a restart: the saved epoch goes on
    assert head + [_keys(b) for b in resumed] == _epoch(pattern, 4)
    assert [_keys(b) for b in resumed] == _epoch(pattern, 5)  # and the next one follows

    moved_on = tarstream.Loader(_batches(pattern))
    moved_on.load_state_dict(state)
    with pytest.warns(UserWarning, match="epoch 5 starts from its beginning"):
        moved_on.set_epoch(5)
    assert [_keys(b) for b in moved_on] == _epoch(pattern, 5)
    assert whole == _epoch(pattern, 0)


def _epoch(pattern: str, epoch: int) -> list[tuple[str, ...]]:
    pipeline = _batches(pattern)
    pipeline.set_epoch(epoch)
    return [_keys(b) for b in pipeline]


@pytest.mark.parametrize(("size", "initial"), [(1000, None), (300, 7)])
def test_a_shuffle_resumed_deep_in_a_long_epoch_continues_exactly(
    size: int, initial: int | None
) -> None:
    # many steps with a full buffer: the resume reads the draws backwards, jumping the
    # generator, and must land where the uninterrupted run is, its queued draws included
    def make() -> tarstream.Pipeline:
        return tarstream.Pipeline(Positions(120_000), Shuffle(size, initial=initial), seed=5)

    full = assert_resumable(make, at=[size + 3, 4_095, 4_096, 77_777, 119_800, 120_000])
    assert sorted(full) == list(range(120_000))
