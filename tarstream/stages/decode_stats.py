"""What a ``Decode`` stage did in this process: samples decoded and skipped, errors by
field (``Decode.stats``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DecodeStats"]


@dataclass
class DecodeStats:
    """What a Decode stage did in this process: samples decoded and skipped (lenient mode),
    and the skipped samples' errors by field."""

    samples: int = 0
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, other: DecodeStats) -> None:
        """Add ``other``'s counts to these (the stats of several workers, say)."""
        self.samples += other.samples
        self.skipped += other.skipped
        self.errors.update(other.errors)

    def since(self, earlier: DecodeStats) -> DecodeStats:
        """What was counted after ``earlier``, a copy of these stats taken before."""
        return DecodeStats(
            self.samples - earlier.samples,
            self.skipped - earlier.skipped,
            self.errors - earlier.errors,
        )
