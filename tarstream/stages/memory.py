"""The memory batches are stacked into, reused once nothing refers to it any more.

A batch of 64 images of 256 x 256 is 12 MiB. The C allocator hands blocks that large back to
the system when they are freed, so a fresh one costs some 3,000 page faults as it is written:
as much time, on a small machine, as decoding several of its images. A ``BatchMemory``
keeps the last few blocks and stacks a new batch into one that no array or tensor refers to
any more; a batch the trainer still holds, or any view of it, is never written to.

Where blocks come from is a subclass's choice, through the hooks below (``new_block``,
``spare_block``, ``block_free``, ``forget_block``, ``torch_shares``): in the DataLoader
workers of a ``Loader`` they are shared memory that travels to the trainer without a copy
(``tarstream.run.transport``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["BatchMemory", "torch_shared"]


def _references(blocks: list[Any], i: int) -> int:
    # One function counts both the probe and the blocks, so the interpreter's own
    # temporary references are the same in both counts.
    return sys.getrefcount(blocks[i])


class BatchMemory:
    """Blocks of memory for the batches of one ``Batch`` stage in one process.

    Args:
        keep: how many blocks to keep for reuse.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._blocks: list[np.ndarray] = []
        probe: list[Any] = [object()]
        self._alone = _references(probe, 0)  # the count of a block only this list holds

    def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialized numpy array of ``shape`` and ``dtype``."""
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            return np.empty(shape, dtype)
        block = self.block(int(np.prod(shape)) * dtype.itemsize)
        if block is None:
            return np.empty(shape, dtype)
        array: np.ndarray = block.view(dtype).reshape(shape)
        return array

    def tensor(self, shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
        """An uninitialized torch tensor: in a DataLoader worker, in shared memory, so the
        batch reaches the trainer without another copy (as torch's default collate does)."""
        import torch

        if self.torch_shares():
            return torch_shared(shape, dtype, device)
        if torch.device(device).type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        block = self.block(int(np.prod(shape)) * dtype.itemsize)
        if block is None:
            return torch_shared(shape, dtype, device)
        return torch.from_numpy(block).view(dtype).view(shape)

    def block(self, size: int) -> np.ndarray | None:
        """``size`` bytes: a kept block nothing refers to, else a new one (kept unless
        ``keep`` blocks of this size are kept already and all in use: then a spare one, or
        None where there is no spare)."""
        for i in range(len(self._blocks)):
            if (
                self._blocks[i].nbytes == size
                and _references(self._blocks, i) <= self._alone
                and self.block_free(self._blocks[i])
            ):
                block = self._blocks.pop(i)
                self._blocks.append(block)
                return block
        others = [i for i, kept in enumerate(self._blocks) if kept.nbytes != size]
        if len(self._blocks) >= self.keep and others:  # the batch shape changed
            self.forget_block(self._blocks.pop(others[0]))
        if len(self._blocks) >= self.keep:
            # the kept blocks stay kept, to be reused as soon as they are free again
            return self.spare_block(size)
        block = self.new_block(size)
        self._blocks.append(block)
        return block

    # -- where blocks come from: hooks a subclass may override ------------------------------
    def torch_shares(self) -> bool:
        """Whether tensors go to torch's shared memory (in a plain DataLoader's worker)."""
        from torch.utils.data import get_worker_info

        return get_worker_info() is not None

    def new_block(self, size: int) -> np.ndarray:
        """A new block of ``size`` bytes, to be kept."""
        return np.empty(size, np.uint8)

    def spare_block(self, size: int) -> np.ndarray | None:
        """A block used once, when every kept block is in use (None: let torch's shared
        memory serve)."""
        return np.empty(size, np.uint8)

    def block_free(self, block: np.ndarray) -> bool:
        """Whether no other process holds ``block``."""
        return True

    def forget_block(self, block: np.ndarray) -> None:
        """Stop keeping ``block`` (it lives on while anything refers to it)."""


def torch_shared(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """A new tensor in torch's shared memory (what torch's own collate stacks into)."""
    import torch

    size = int(np.prod(shape)) * dtype.itemsize
    storage = torch.UntypedStorage._new_shared(size, device=device)  # type: ignore[no-untyped-call]
    return torch.empty(0, dtype=dtype, device=device).set_(storage).view(shape)
