"""The epoch of a pipeline, in memory that DataLoader worker processes share.

``SharedEpoch`` holds the epoch and how many times it has been started. It lives in shared
memory made when the pipeline is made, so ``set_epoch`` in the trainer reaches workers that
already run (``persistent_workers=True``) and workers started anew, under fork and spawn,
with no extra call. Pickled other than to start a process (a copy sent elsewhere), it
becomes a private value.
"""

from __future__ import annotations

from multiprocessing.context import get_spawning_popen
from multiprocessing.sharedctypes import RawArray
from typing import Any

__all__ = ["SharedEpoch"]


class SharedEpoch:
    """An epoch and its start count, shared with the processes started after it was made."""

    def __init__(self, epoch: int = 0) -> None:
        self._cells: Any
        try:
            self._cells = RawArray("q", [epoch, 0])
        except OSError:  # no shared memory here: a private value (workers do not follow)
            self._cells = [epoch, 0]

    @property
    def value(self) -> int:
        return int(self._cells[0])

    def set(self, epoch: int) -> None:
        """Make ``epoch`` the next one, not yet started."""
        self._cells[0], self._cells[1] = epoch, 0

    def start(self) -> int:
        """Count a start of the epoch; return how many there have been (1: the first)."""
        self._cells[1] += 1
        return int(self._cells[1])

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is not None or isinstance(self._cells, list):
            return {"_cells": self._cells}  # shared memory travels to a process being started
        return {"_cells": [self._cells[0], self._cells[1]]}
