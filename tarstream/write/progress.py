"""Progress of a write on a terminal: one line, rewritten; silent when not a terminal."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """A one-line progress display on ``stream`` if it is a terminal; silent otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.last = 0.0

    def update(self, samples: int, shards: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self.last > 0.2):
            self.last = now
            self.stream.write(f"\r{samples:,} samples, {shards:,} shards")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")
