"""Loader with worker processes (fork and spawn) and a real multi-rank DDP run."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

import tarstream

from .conftest import make_samples, write_dataset


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """5 shards, 87 samples of uneven shard sizes."""
    directory = tmp_path_factory.mktemp("loader")
    keys = []
    start = 0
    for shard, size in enumerate([20, 7, 25, 11, 24]):
        samples = [{"__key__": f"k{start + i:04d}", "cls": start + i} for i in range(size)]
        keys += [str(s["__key__"]) for s in samples]
        write_dataset(directory, samples, start_index=shard, manifest=None)
        start += size
    return str(directory / "train-{000000..000004}.tar"), keys


def _epoch_keys(loader: tarstream.Loader) -> list[str]:
    return [key for batch in loader for key in batch["__key__"]]


CONFIGS = [(0, None, False)] + [
    (workers, context, persistent)
    for workers in (1, 3)
    for context in ("fork", "spawn")
    for persistent in (False, True)
]


@pytest.mark.parametrize(("workers", "context", "persistent"), CONFIGS)
def test_loader_delivers_each_sample_once_per_epoch_in_a_new_order_that_reruns_the_same(
    shards: tuple[str, list[str]], workers: int, context: str | None, persistent: bool
) -> None:
    pattern, keys = shards
    stream = tarstream.TarStream(pattern, seed=7, shuffle_shards=True).shuffle(16).batch(6)
    loader = tarstream.Loader(
        stream, num_workers=workers, multiprocessing_context=context, persistent_workers=persistent
    )
    assert len(loader) == len(list(loader))  # epoch 0, also counts batches per worker
    loader.set_epoch(0)
    first = _epoch_keys(loader)
    second = _epoch_keys(loader)  # the next iter() is epoch 1
    loader.set_epoch(0)
    again = _epoch_keys(loader)
    assert sorted(first) == sorted(second) == sorted(keys)
    assert first != second
    assert again == first


def test_a_plain_torch_dataloader_iterates_a_pipeline(shards: tuple[str, list[str]]) -> None:
    pattern, keys = shards
    stream = tarstream.TarStream(pattern).decode().to_tuple("cls").batch(10)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    labels = [int(v) for (batch,) in loader for v in batch]
    assert sorted(labels) == list(range(len(keys)))
    assert all(isinstance(batch, torch.Tensor) for (batch,) in loader)


def test_numpy_batches_arrive_as_tensors(shards: tuple[str, list[str]]) -> None:
    pattern, _ = shards
    stream = tarstream.TarStream(pattern).decode().to_tuple("cls").batch(10)
    (batch,) = next(iter(tarstream.Loader(stream, num_workers=1)))
    assert isinstance(batch, torch.Tensor) and batch.shape == (10,)


def test_loader_options_are_checked(shards: tuple[str, list[str]]) -> None:
    pattern, _ = shards
    with pytest.raises(ValueError, match="need num_workers > 0"):
        tarstream.Loader(tarstream.TarStream(pattern), persistent_workers=True)
    with pytest.raises(TypeError, match="needs a tarstream Pipeline"):
        tarstream.Loader([1, 2, 3])  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_rank(rank: int, world_size: int, port: int, pattern: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=30))
    try:
        stream = tarstream.TarStream(pattern, seed=1, shuffle_shards=True, even="drop").batch(4)
        loader = tarstream.Loader(stream, num_workers=2, multiprocessing_context="fork")
        keys: list[str] = []
        steps = 0
        for batch in loader:
            keys += batch["__key__"]
            total = torch.ones(1)
            dist.all_reduce(total)  # hangs (and times out) if ranks ran different step counts
            assert int(total.item()) == world_size
            steps += 1
        gathered: list[object] = [None] * world_size
        dist.all_gather_object(gathered, (steps, keys))
        if rank == 0:
            Path(out).write_text(repr(gathered))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_three_ranks_with_two_workers_each_run_equal_steps_and_read_everything_once(
    shards: tuple[str, list[str]], tmp_path: Path
) -> None:
    pattern, keys = shards  # 87 samples in 5 shards: shards not divisible by 3 ranks x 2 workers
    out = tmp_path / "gathered.txt"
    tmp.start_processes(
        _ddp_rank,
        args=(3, _free_port(), pattern, str(out)),
        nprocs=3,
        join=True,
        start_method="spawn",
    )
    gathered = eval(out.read_text())
    steps = [s for s, _ in gathered]
    delivered = [k for _, ks in gathered for k in ks]
    assert len(set(steps)) == 1, f"ranks ran different numbers of steps: {steps}"
    assert sorted(delivered) == sorted(keys)  # even="drop" keeps all 87 = 3 x 29


def _tensor_of_class(sample: dict[str, object]) -> torch.Tensor:
    """An image-sized tensor: a batch of 4 (108 KiB) goes through the workers' shared blocks
    (smaller values travel inside the message)."""
    return torch.full((3, 96, 96), int(sample["cls"]), dtype=torch.uint8)  # type: ignore[call-overload]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_batches_from_workers_arrive_intact_while_the_trainer_holds_them(
    shards: tuple[str, list[str]], context: str
) -> None:
    pattern, keys = shards
    stream = tarstream.TarStream(pattern).map(_tensor_of_class).batch(4)
    # where each batch lies in its worker, beside the batch
    located = stream.map(_located)
    loader = tarstream.Loader(located, num_workers=2, multiprocessing_context=context)
    held = list(loader)  # every batch held: no block may be reused
    values = sorted(int(v) for _, batch in held for v in batch[:, 0, 0, 0])
    assert values == list(range(len(keys)))
    for _, batch in held:
        first = int(batch[0, 0, 0, 0])
        expected = torch.arange(first, first + len(batch), dtype=torch.uint8)
        assert torch.equal(batch, expected[:, None, None, None].expand_as(batch))
    assert len({tuple(place) for place, _ in held}) == len(held)  # no memory used twice
    assert not next(iter(stream)).is_shared()  # in one process, plain memory


def _located(batch: torch.Tensor) -> tuple[tuple[int, int], torch.Tensor]:
    """The batch, and its worker and the inode of the memory it lies in (addresses alone
    repeat when a block is unmapped and another mapped in its place)."""
    address = batch.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, _, _, _, inode = line.split()[:5]
            start, end = (int(a, 16) for a in span.split("-"))
            if start <= address < end:
                return (os.getpid(), int(inode)), batch
    raise AssertionError(f"no mapping holds {address:#x}")


def test_a_batch_the_trainer_moves_to_shared_memory_keeps_its_values(
    shards: tuple[str, list[str]],
) -> None:
    pattern, keys = shards
    stream = tarstream.TarStream(pattern).map(_tensor_of_class).batch(4)
    loader = tarstream.Loader(stream, num_workers=1)
    moved = [batch.share_memory_() for batch in loader]  # as sending it to a process does
    values = sorted(int(v) for batch in moved for v in batch[:, 0, 0, 0])
    assert values == list(range(len(keys)))
    assert all(bool((batch == batch[:, :1, :1, :1]).all()) for batch in moved)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_an_error_in_a_worker_reaches_the_trainer_as_the_same_type_with_its_attributes(
    tmp_path: Path, context: str
) -> None:
    write_dataset(tmp_path, make_samples(20), max_samples=10)
    shard = tmp_path / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[1024 * 3 + 700] ^= 1  # a data byte of the shard's second sample
    shard.write_bytes(bytes(data))
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json"))
    loader = tarstream.Loader(stream, num_workers=2, multiprocessing_context=context)
    with pytest.raises(tarstream.ShardFormatError, match="does not match the checksum") as caught:
        list(loader)
    assert caught.value.shard == str(shard)
    assert caught.value.member == "s/00011.cls" and caught.value.offset == 3 * 1024


def test_a_truncated_shard_in_a_worker_keeps_shard_member_and_offset(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(20), max_samples=10)
    shard = tmp_path / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:4000])  # inside sample s/00011
    stream = tarstream.TarStream(str(tmp_path / "train-{000000..000001}.tar"), sidecars="ignore")
    loader = tarstream.Loader(stream, num_workers=2, multiprocessing_context="fork")
    with pytest.raises(tarstream.TruncatedShardError) as caught:
        list(loader)
    assert caught.value.shard == str(shard) and caught.value.offset == 4000
    assert caught.value.member is not None


def test_the_loader_sums_what_the_workers_stages_counted(tmp_path: Path) -> None:
    samples = make_samples(40)
    samples[5]["json"] = {"bad": True}
    write_dataset(tmp_path, samples, max_samples=10)
    data = bytearray((tmp_path / "train-000002.tar").read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # a shard cut short by zeros
    (tmp_path / "train-000002.tar").write_bytes(bytes(data))

    def broken_json(raw: bytes) -> object:
        if b"bad" in raw:
            raise ValueError("bad json")
        return raw

    stream = (
        tarstream.TarStream(str(tmp_path / "train-{000000..000003}.tar"), errors="skip")
        .decode(decoders={"json": broken_json}, errors="skip")
        .to_tuple("cls")
    )
    loader = tarstream.Loader(stream, num_workers=2, persistent_workers=True)
    for _ in range(2):  # persistent workers: each epoch's counts, not the sum of both
        got = sum(1 for _ in loader)
        read, decode = loader.stats["read"], loader.stats["decode"]
        assert read.shards_failed == 1 and read.samples_lost + read.samples == 40
        assert decode.skipped == 1 and decode.errors == {"json": 1}
        assert got == decode.samples == read.samples - 1


def test_the_loaders_stats_grow_during_the_epoch_and_end_exact(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(400), max_samples=100)
    # Samples are counted per read (of read_size bytes): small reads, counts that move.
    pattern = str(tmp_path / "train-{000000..000003}.tar")
    stream = tarstream.TarStream(pattern, read_size=4096).batch(10)
    loader = tarstream.Loader(stream, num_workers=2, stats_every=0)
    seen = [loader.stats["read"].samples for _ in loader]
    assert any(0 < n < 400 for n in seen) and seen == sorted(seen)  # reported while it ran
    assert loader.stats["read"].samples == 400 and loader.stats["read"].shards == 4
    with pytest.raises(ValueError, match="stats_every must be >= 0"):
        tarstream.Loader(stream, stats_every=-1)
