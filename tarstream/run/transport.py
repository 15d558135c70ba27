"""The worker-to-trainer transport: batches in shared blocks that travel without a copy.

In the DataLoader workers of a ``Loader`` batches are stacked into shared memory blocks
(``SharedBatchMemory``, a ``BatchMemory`` whose blocks are memfd mappings): a batch travels
to the trainer as a file descriptor, is mapped there without a copy, once per block (later
batches over it only name it), and its block returns to the worker when the trainer has
dropped every tensor of it (a flag in the block's first byte, cleared by the trainer's
process). Fresh shared memory per batch, as torch's own collate uses, costs page faults in
every worker. Small arrays and tensors (a batch's labels) travel inside the message. A
batch's column of bytes (JPEGs left undecoded) is copied into a shared block the trainer
copies it out of, which saves the pickle's copy and the pipe's two.

This module owns the one piece of module-level mutable state in tarstream: the trainer's
process's mappings of the workers' blocks.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..stages.memory import BatchMemory

__all__ = ["SharedBatchMemory"]

#: Bytes before a shared block's data: its first byte is 1 while the trainer holds it.
_HEADER = 64


def _address(block: np.ndarray) -> int:
    return int(block.__array_interface__["data"][0])


class SharedBatchMemory(BatchMemory):
    """Batch memory in a Loader's DataLoader worker: shared blocks, returned by the trainer.

    ``ship(item)`` replaces the item's tensors and arrays that are whole blocks with handles
    that pickle as a file descriptor and arrive as tensors (or arrays) mapped over the same
    memory.
    Where ``os.memfd_create`` is missing, ``available()`` is false and batches go through
    torch's shared memory as usual.
    """

    def __init__(self, keep: int = 4) -> None:
        super().__init__(keep)
        self._maps: dict[int, tuple[int, mmap.mmap, int]] = {}  # address: fd, mapping, serial
        # The trainer keeps each block mapped, by (token, serial): its file descriptor
        # travels once (a connection to this worker each time), later batches name it.
        self._token = (os.getpid(), os.urandom(8).hex())
        self._serials = itertools.count()
        self._sent: set[int] = set()
        self._forgotten: list[int] = []  # serials the trainer may stop mapping
        self._byte_blocks: list[np.ndarray] = []  # for columns of bytes (``_ship_bytes``)

    @staticmethod
    def available() -> bool:
        return hasattr(os, "memfd_create")

    def torch_shares(self) -> bool:
        return False

    def block(self, size: int) -> np.ndarray | None:
        if size <= _BY_VALUE:  # plain memory, never reused: ship() sends it by value
            return np.empty(size, np.uint8)
        return super().block(size)

    def spare_block(self, size: int) -> np.ndarray | None:
        return None  # torch's shared memory instead, which ship() leaves to torch

    def new_block(self, size: int) -> np.ndarray:
        fd = os.memfd_create("tarstream-batch", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, _HEADER + size)
            mapping = mmap.mmap(fd, _HEADER + size)
        except BaseException:
            os.close(fd)
            raise
        weakref.finalize(mapping, os.close, fd)  # when the last array over it is gone
        block = np.frombuffer(mapping, np.uint8, size, _HEADER)
        self._maps[_address(block)] = (fd, mapping, next(self._serials))
        return block

    def block_free(self, block: np.ndarray) -> bool:
        return self._maps[_address(block)][1][0] == 0

    def forget_block(self, block: np.ndarray) -> None:
        _, _, serial = self._maps.pop(_address(block))
        if serial in self._sent:
            self._forgotten.append(serial)

    def _ticket(self, address: int) -> tuple[Any, ...]:
        """What names the block at ``address`` to the trainer (its file descriptor the
        first time), marked held by the trainer until it lets go."""
        fd, mapping, serial = self._maps[address]
        mapping[0] = 1
        first = serial not in self._sent
        self._sent.add(serial)
        forgotten, self._forgotten = self._forgotten, []
        return (*self._token, serial, len(mapping), fd if first else None, forgotten)

    def _ship_bytes(self, values: list[bytes]) -> _ShippedBytes | None:
        """A column of bytes (a batch's JPEGs left undecoded, say) copied into a shared
        block, to be copied out by the trainer (None: too small, or no block free): the
        pickle's copy and the pipe's two are saved, and the block is free again as soon as
        the trainer has its bytes."""
        lengths = [len(v) for v in values]
        total = sum(lengths)
        if not _BY_VALUE < total <= _MAX_BYTES_COLUMN:
            return None
        block = next(
            (b for b in self._byte_blocks if b.nbytes >= total and self.block_free(b)), None
        )
        if block is None:
            if len(self._byte_blocks) >= 4:
                return None
            block = self.new_block(1 << (total - 1).bit_length())
            self._byte_blocks.append(block)
        view, at = memoryview(block), 0  # type: ignore[arg-type]
        for value, n in zip(values, lengths, strict=True):
            view[at : at + n] = value
            at += n
        return _ShippedBytes(self._ticket(_address(block)), lengths)

    def _ship_list(self, values: list[Any], visit: Callable[[Any], Any]) -> Any:
        if values and all(type(v) is bytes for v in values):
            return self._ship_bytes(values) or values
        return [visit(v) for v in values]

    def ship(self, item: Any) -> Any:
        """``item`` with each tensor or array that is a whole block as a ``_Shipped``
        handle (a block found twice is left to pickle, which copies it); numpy arrays
        arrive as numpy arrays, tensors as tensors. A list of bytes (a column of a batch)
        travels in a shared block too (``_ship_bytes``)."""
        import torch

        shipped: set[int] = set()

        def handle(address: int, value: Any) -> _Shipped | None:
            if address not in self._maps or address in shipped:
                return None
            shipped.add(address)
            return _Shipped(self._ticket(address), value)

        def visit(value: Any) -> Any:
            if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
                return type(value)(*map(visit, value))
            if isinstance(value, tuple):
                return tuple(map(visit, value))
            if isinstance(value, list):
                return self._ship_list(value, visit)
            if isinstance(value, dict):
                return {k: visit(v) for k, v in value.items()}
            if isinstance(value, np.ndarray):  # pickled by value unless a whole block
                return handle(_address(value), value) or value
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                shipping = handle(value.untyped_storage().data_ptr(), value)
                if shipping is not None:
                    return shipping
                if not value.requires_grad and value.is_contiguous():
                    with contextlib.suppress(TypeError, RuntimeError):  # no numpy dtype
                        return _small(value.numpy(), value)
            return value

        return visit(item)


#: Arrays and tensors up to this size travel inside the pickled item (see ``_small``).
_BY_VALUE = 1 << 16
#: The largest column of bytes sent in a shared block (larger ones are pickled): a worker
#: keeps up to 4 such blocks, each a power of two, so at most 128 MiB for them.
_MAX_BYTES_COLUMN = 32 << 20


def _small(array: np.ndarray, value: Any) -> Any:
    """``value`` (``array``, or a tensor over it) as a ``_Small`` that pickles it by value,
    when it is a small C-contiguous array; else ``value``, for torch to pickle.

    Torch pickles a tensor into fresh shared memory and passes its file descriptor, which
    the trainer fetches over a new authenticated connection to the worker: about a
    millisecond of both processes' time for a batch's labels of a few hundred bytes.
    """
    if array.nbytes <= _BY_VALUE and array.flags.c_contiguous:
        return _Small(array)
    return value


class _Small:
    """A small array on its way to the trainer, where it arrives as a tensor."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return _tensor, (self.array,)


def _tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(array)


class _Shipped:
    """A batch tensor or array in a shared block, on its way to the trainer's process."""

    def __init__(self, block: tuple[Any, ...], tensor: Any) -> None:
        self.block, self.tensor = block, tensor

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        from multiprocessing.reduction import DupFd

        pid, token, serial, length, fd, forgotten = self.block
        block = (pid, token, serial, length, None if fd is None else DupFd(fd), forgotten)
        t = self.tensor
        if isinstance(t, np.ndarray):
            return _receive_array, (block, t.dtype, t.shape, t.strides)
        return _receive, (block, t.dtype, t.shape, t.stride(), t.storage_offset())


class _ShippedBytes:
    """A column of bytes in a shared block, on its way to the trainer's process."""

    def __init__(self, block: tuple[Any, ...], lengths: list[int]) -> None:
        self.block, self.lengths = block, lengths

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        from multiprocessing.reduction import DupFd

        pid, token, serial, length, fd, forgotten = self.block
        block = (pid, token, serial, length, None if fd is None else DupFd(fd), forgotten)
        return _receive_bytes, (block, self.lengths)


def _receive_bytes(block: tuple[Any, ...], lengths: list[int]) -> list[bytes]:
    """The bytes of a ``_ShippedBytes`` column, copied out of the block, which its worker
    may then reuse."""
    mapping = _mapping(block)
    values, at = [], _HEADER
    for n in lengths:
        values.append(mapping[at : at + n])
        at += n
    _release(mapping)
    return values


#: The workers' blocks mapped in the trainer's process, by (worker pid, token, serial).
_mapped: dict[tuple[int, str, int], mmap.mmap] = {}
_mapped_lock = threading.Lock()


def _mapping(block: tuple[Any, ...]) -> mmap.mmap:
    """The trainer's mapping of a ``_Shipped`` block: made from its file descriptor the
    first time, kept while its worker keeps the block."""
    pid, token, serial, length, fd_handle, forgotten = block
    with _mapped_lock:
        for old in forgotten:
            _mapped.pop((pid, token, old), None)
        if fd_handle is not None:
            fd = fd_handle.detach()
            try:
                _mapped[pid, token, serial] = mmap.mmap(fd, length)
            finally:
                os.close(fd)  # the mapping stays
            _sweep(pid)
        mapping = _mapped.get((pid, token, serial))
    if mapping is None:
        raise RuntimeError(
            f"a batch names shared block {serial} of worker process {pid}, which this "
            "process was never sent"
        )
    return mapping


def _sweep(current: int) -> None:
    """Stop mapping the blocks of worker processes that have exited (a batch still held
    keeps its own memory)."""
    for pid in {key[0] for key in _mapped} - {current}:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # gone (or the pid is reused)
            for key in [key for key in _mapped if key[0] == pid]:
                del _mapped[key]


def _receive(block: tuple[Any, ...], dtype: Any, shape: Any, stride: Any, offset: int) -> Any:
    """The tensor of a ``_Shipped`` block, over the trainer's mapping of it; when the last
    tensor of this batch is gone, the block's flag is cleared so its worker can reuse it."""
    import torch

    mapping = _mapping(block)
    array = np.frombuffer(mapping, np.uint8, len(mapping) - _HEADER, _HEADER)
    weakref.finalize(array, _release, mapping)  # the batch's own array: its tensors hold it
    return torch.from_numpy(array).view(dtype).as_strided(shape, stride, offset)


def _receive_array(block: tuple[Any, ...], dtype: Any, shape: Any, strides: Any) -> Any:
    """The numpy array of a ``_Shipped`` block, as ``_receive`` makes its tensor."""
    mapping = _mapping(block)
    array = np.frombuffer(mapping, np.uint8, len(mapping) - _HEADER, _HEADER)
    weakref.finalize(array, _release, mapping)
    return np.ndarray(shape, dtype, buffer=array, strides=strides)


def _release(mapping: mmap.mmap) -> None:
    mapping[0] = 0
