"""The memory batches are stacked into, reused once nothing refers to it any more.

A batch of 64 images of 256 x 256 is 12 MiB. The C allocator hands blocks that large back to
the system when they are freed, so a fresh one costs some 3,000 page faults as it is written:
as much time, on a small machine, as decoding several of its images. A ``BatchMemory``
keeps the last few blocks and stacks a new batch into one that no array or tensor refers to
any more; a batch the trainer still holds, or any view of it, is never written to.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["BatchMemory"]


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
        size = int(np.prod(shape)) * dtype.itemsize
        array: np.ndarray = self._block(size).view(dtype).reshape(shape)
        return array

    def tensor(self, shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
        """An uninitialized torch tensor: in a DataLoader worker, in shared memory, so the
        batch reaches the trainer without another copy (as torch's default collate does)."""
        import torch
        from torch.utils.data import get_worker_info

        if get_worker_info() is not None:
            size = int(np.prod(shape)) * dtype.itemsize
            storage = torch.UntypedStorage._new_shared(size, device=device)  # type: ignore[no-untyped-call]
            return torch.empty(0, dtype=dtype, device=device).set_(storage).view(shape)
        if torch.device(device).type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        size = int(np.prod(shape)) * dtype.itemsize
        return torch.from_numpy(self._block(size)).view(dtype).view(shape)

    def _block(self, size: int) -> np.ndarray:
        """``size`` bytes: a kept block nothing else refers to, or a new one."""
        for i in range(len(self._blocks)):
            if self._blocks[i].nbytes == size and _references(self._blocks, i) <= self._alone:
                block = self._blocks.pop(i)
                self._blocks.append(block)
                return block
        block = np.empty(size, np.uint8)
        self._blocks.append(block)
        del self._blocks[: len(self._blocks) - self.keep]
        return block
