"""Progress of a long run (a write, an index, a verify): what a writer reports, and a bar
on a terminal, silent when piped."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["Progress", "WriteProgress"]


@dataclass(frozen=True)
class WriteProgress:
    """How far a write is: samples and bytes written, shards complete, seconds since the
    writer was made (``samples_per_s`` follows)."""

    samples: int
    shards: int
    bytes: int
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """Progress on ``stream`` if it is a terminal, silent otherwise: a tqdm bar (count,
    rate and, with a known ``shards`` total, ETA) where tqdm is installed (the ``progress``
    extra), else one rewritten line of counts.

    With ``shards`` the bar counts shards out of that total, else samples (out of
    ``samples``, where the source knows how many it holds: then with an ETA too).
    """

    def __init__(
        self, stream: TextIO, *, shards: int | None = None, samples: int | None = None
    ) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.total = shards
        self.last = 0.0
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:
                return
            unit = " shards" if shards is not None else " samples"
            total = shards if shards is not None else samples
            self._bar = tqdm(total=total, unit=unit, file=stream, dynamic_ncols=True)

    def update(self, samples: int, shards: int, force: bool = False, extra: str = "") -> None:
        """Show the counts; ``extra``: more to show after them (bytes, failures)."""
        if self._bar is not None:
            counted, other = (shards, f"{samples:,} samples") if self.total else (samples, "")
            self._bar.update(counted - self._bar.n)
            shown = ", ".join(filter(None, [other or f"{shards:,} shards", extra]))
            self._bar.set_postfix_str(shown, refresh=force)
            return
        now = time.monotonic()
        if self.enabled and (force or now - self.last > 0.2):
            self.last = now
            of = f" of {self.total:,}" if self.total is not None else ""
            more = f", {extra}" if extra else ""
            self.stream.write(f"\r{samples:,} samples, {shards:,}{of} shards{more}")
            self.stream.flush()

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self.stream.write("\n")
