"""Batch memory: reused once nothing refers to it, never while anything does."""

from __future__ import annotations

import multiprocessing
import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tarstream
from tarstream.run.transport import SharedBatchMemory
from tarstream.stages.memory import BatchMemory

from .conftest import write_dataset


def _address(value: np.ndarray | torch.Tensor) -> int:
    if isinstance(value, torch.Tensor):
        return int(value.untyped_storage().data_ptr())
    return int(value.__array_interface__["data"][0])


def test_memory_is_reused_once_the_batch_is_dropped() -> None:
    memory = BatchMemory(keep=2)
    first = memory.array((4, 3), np.float32)
    address = _address(first)
    del first
    assert _address(memory.array((4, 3), np.float32)) == address
    tensor = memory.tensor((6, 2), torch.float32, "cpu")  # the same 48 bytes
    assert _address(tensor) == address


@pytest.mark.parametrize(
    "hold",
    [
        lambda batch: batch,
        lambda batch: batch[1:],
        lambda batch: batch.T,
        lambda batch: memoryview(batch),
        lambda batch: torch.from_numpy(batch)[2],
    ],
    ids=["the batch", "a slice", "a transpose", "a memoryview", "a tensor of a row"],
)
def test_an_array_still_referred_to_is_never_reused(hold: object) -> None:
    memory = BatchMemory(keep=2)
    batch = memory.array((4, 3), np.int64)
    batch[:] = 7
    held = hold(batch)  # type: ignore[operator]
    del batch
    for _ in range(5):
        memory.array((4, 3), np.int64)[:] = -1
    assert (np.asarray(held) == 7).all()


@pytest.mark.parametrize(
    "hold",
    [
        lambda batch: batch,
        lambda batch: batch[1],
        lambda batch: batch.permute(1, 0),
        lambda batch: batch.numpy(),
        lambda batch: torch.utils.dlpack.to_dlpack(batch),
    ],
    ids=["the batch", "a row", "a permuted view", "its numpy array", "a dlpack capsule"],
)
def test_a_tensor_still_referred_to_is_never_reused(hold: object) -> None:
    memory = BatchMemory(keep=2)
    batch = memory.tensor((4, 3), torch.float32, "cpu")
    batch.fill_(7)
    address = _address(batch)
    held = hold(batch)  # type: ignore[operator]
    del batch
    for _ in range(5):
        assert _address(memory.tensor((4, 3), torch.float32, "cpu").fill_(-1)) != address
    del held


def test_a_tensor_moved_to_shared_memory_frees_its_block() -> None:
    memory = BatchMemory(keep=2)
    batch = memory.tensor((4, 3), torch.float32, "cpu").fill_(7)
    address = _address(batch)
    batch.share_memory_()  # what sending it to another process does: it moves, with a copy
    assert _address(memory.tensor((4, 3), torch.float32, "cpu").fill_(-1)) == address
    assert (batch == 7).all()


def test_a_pipeline_never_overwrites_batches_the_trainer_holds(tmp_path: Path) -> None:
    samples = [{"__key__": f"{i:04d}", "npy": np.full((2, 3), i), "cls": i} for i in range(40)]
    write_dataset(tmp_path, samples, max_samples=16)
    stream = tarstream.TarStream(str(tmp_path / "_train.manifest.json"))
    pipeline = stream.decode().to_tuple("npy", "cls").batch(4)
    held = list(pipeline)
    assert [int(a[0, 0, 0]) for a, _ in held] == list(range(0, 40, 4))
    assert all(
        (a == np.arange(i, i + 4)[:, None, None]).all()
        for i, (a, _) in zip(range(0, 40, 4), held, strict=True)
    )
    addresses = {_address(a) for a, _ in pipeline}  # each batch dropped before the next
    assert len(addresses) <= 2


def _shipped(memory: SharedBatchMemory, tensor: torch.Tensor) -> bytes:
    """What a DataLoader worker sends for a batch."""
    (handle,) = memory.ship((tensor,))
    return bytes(ForkingPickler.dumps(handle))


def test_a_shared_block_returns_to_its_worker_once_the_trainer_drops_the_batch() -> None:
    memory = SharedBatchMemory(keep=2)
    values = torch.arange(4.0 * 8192).view(4, 8192)  # 128 KiB: a shared block
    batch = memory.tensor(values.shape, torch.float32, "cpu").copy_(values)
    address = _address(batch)
    message = _shipped(memory, batch)
    assert len(message) < 1024  # a handle, not the values
    del batch
    received = pickle.loads(message)  # in the trainer: mapped, not copied
    assert torch.equal(received, values)
    for _ in range(3):  # held by the trainer: never handed out again
        other = memory.tensor(values.shape, torch.float32, "cpu")
        assert _address(other) != address
        other.fill_(-1)
        del other
    assert torch.equal(received, values)
    view = received[1:]
    del received
    assert all(
        _address(memory.tensor(values.shape, torch.float32, "cpu")) != address for _ in range(3)
    )
    del view  # the last tensor over the mapping: the block is free again
    assert _address(memory.tensor(values.shape, torch.float32, "cpu")) == address


def test_a_column_of_bytes_travels_in_a_shared_block_freed_once_copied_out() -> None:
    memory = SharedBatchMemory()
    column = [bytes([i]) * (5000 + i) for i in range(40)]  # 200 KB of undecoded JPEGs, say
    batch = {"jpg": column, "__key__": [str(i) for i in range(40)], "small": [b"a", b"b"]}
    shipped = memory.ship(batch)
    message = bytes(ForkingPickler.dumps(shipped))
    assert len(message) < 4096  # the lengths and a handle, not the bytes
    assert shipped["small"] == [b"a", b"b"]  # a few bytes travel by value
    (block,) = memory._byte_blocks
    assert not memory.block_free(block)  # held until the trainer has copied them
    received = pickle.loads(message)  # in the trainer
    assert received["jpg"] == column and all(type(v) is bytes for v in received["jpg"])
    assert received["__key__"] == batch["__key__"]
    assert memory.block_free(block)  # copied out: the worker reuses it
    huge = [b"x" * (17 << 20), b"y" * (17 << 20)]  # past the limit: pickled as before
    assert memory.ship({"v": huge})["v"] is huge
    again = pickle.loads(bytes(ForkingPickler.dumps(memory.ship({"jpg": column[::-1]}))))
    assert again["jpg"] == column[::-1]
    assert len(memory._byte_blocks) == 1 and memory._byte_blocks[0] is block


def test_when_every_shared_block_is_held_batches_go_to_torch_shared_memory() -> None:
    memory = SharedBatchMemory(keep=1)
    first = memory.tensor((2, 8192), torch.int64, "cpu").fill_(1)
    held = pickle.loads(_shipped(memory, first))
    second = memory.tensor((2, 8192), torch.int64, "cpu").fill_(2)
    assert second.is_shared() and not first.is_shared()
    assert memory.ship((second,))[0] is second  # left to torch's own pickling
    assert (held == 1).all()


def test_small_arrays_and_tensors_travel_inside_the_message_as_they_were() -> None:
    memory = SharedBatchMemory(keep=2)
    labels = memory.array((64,), np.int64)  # a batch's labels: plain memory, not a block
    labels[:] = np.arange(64)
    ids = torch.arange(10, dtype=torch.int32)
    strided = torch.arange(20.0)[::2]
    large = torch.zeros(4, 8192)  # 128 KiB, not a block: torch's own pickling
    shipped = memory.ship({"labels": labels, "ids": ids, "strided": strided, "large": large})
    assert shipped["strided"] is strided and shipped["large"] is large
    message = ForkingPickler.dumps({k: shipped[k] for k in ("labels", "ids")})
    assert len(message) > labels.nbytes + ids.nbytes  # the values, not a file descriptor
    sent = pickle.loads(message)
    assert isinstance(sent["labels"], np.ndarray) and sent["labels"].tolist() == list(range(64))
    assert isinstance(sent["ids"], torch.Tensor) and sent["ids"].dtype == torch.int32
    assert sent["ids"].tolist() == list(range(10))
    labels[:] = -1  # a copy travelled
    assert sent["labels"].tolist() == list(range(64))


def test_an_array_in_a_shared_block_arrives_as_an_array_over_the_same_memory() -> None:
    memory = SharedBatchMemory(keep=2)
    batch = memory.array((4, 8192), np.float32)  # 128 KiB: a shared block
    batch[:] = np.arange(4 * 8192, dtype=np.float32).reshape(4, 8192)
    address = _address(batch)
    words = memory.array((2,), np.dtype("<U3"))
    words[:] = ["ab", "cde"]
    message = ForkingPickler.dumps(memory.ship({"x": batch.T, "w": words}))
    assert len(message) < 1024  # a handle, not the values
    del batch
    sent = pickle.loads(message)
    assert isinstance(sent["x"], np.ndarray) and sent["x"].dtype == np.float32
    assert sent["x"].shape == (8192, 4) and sent["x"][5, 1] == 8192 + 5  # strides kept
    assert sent["w"].tolist() == ["ab", "cde"]
    assert all(_address(memory.array((4, 8192), np.float32)) != address for _ in range(3))
    del sent  # the trainer let go: the block is free again
    assert _address(memory.array((4, 8192), np.float32)) == address


def test_the_trainer_maps_a_block_once_and_later_batches_over_it_name_it() -> None:
    memory = SharedBatchMemory(keep=1)
    shape = (4, 8192)
    first = memory.tensor(shape, torch.float32, "cpu").fill_(1)
    opening = _shipped(memory, first)
    del first
    received = pickle.loads(opening)
    trainer_address = received.data_ptr()
    del received  # the block returns to the worker
    for value in (2.0, 3.0):
        batch = memory.tensor(shape, torch.float32, "cpu").fill_(value)
        message = _shipped(memory, batch)
        del batch
        assert len(message) < len(opening)  # no file descriptor this time
        received = pickle.loads(message)
        assert received.data_ptr() == trainer_address and (received == value).all()
        del received


def test_a_block_the_trainer_was_never_sent_is_a_clear_error() -> None:
    memory = SharedBatchMemory(keep=1)
    batch = memory.tensor((4, 8192), torch.float32, "cpu")
    memory._sent.add(0)  # as if an earlier message had carried its file descriptor
    with pytest.raises(RuntimeError, match=r"shared block 0 of worker process .* never sent"):
        pickle.loads(_shipped(memory, batch))


def _worker(queue: Any, done: Any) -> None:
    memory = SharedBatchMemory()
    batch = memory.tensor((4, 8192), torch.float32, "cpu").fill_(7)
    queue.put(memory.ship((batch,)))
    done.wait()


def test_the_trainer_stops_mapping_the_blocks_of_a_worker_that_exited() -> None:
    from tarstream.run.transport import _mapped

    context = multiprocessing.get_context("fork")
    queue, done = context.Queue(), context.Event()
    worker = context.Process(target=_worker, args=(queue, done))
    worker.start()
    (held,) = queue.get(timeout=30)
    done.set()
    worker.join(timeout=30)
    assert worker.pid in {key[0] for key in _mapped}
    memory = SharedBatchMemory()  # a block sent from elsewhere: the map is swept
    pickle.loads(_shipped(memory, memory.tensor((4, 8192), torch.float32, "cpu")))
    assert worker.pid not in {key[0] for key in _mapped}
    assert (held == 7).all()  # a batch still held keeps its memory


def test_the_trainer_stops_mapping_a_block_its_worker_let_go() -> None:
    from tarstream.run.transport import _mapped

    memory = SharedBatchMemory(keep=1)
    before = set(_mapped)
    pickle.loads(_shipped(memory, memory.tensor((4, 8192), torch.float32, "cpu")))
    (first,) = set(_mapped) - before
    larger = memory.tensor((8, 8192), torch.float32, "cpu")  # the batch shape changed
    pickle.loads(_shipped(memory, larger))
    assert first not in _mapped and len(set(_mapped) - before) == 1
