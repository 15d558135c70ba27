"""The base of raw files whose reads make new bytes (remote blocks, gunzipped data, ranges)."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["BytesReader"]


class BytesReader(io.RawIOBase):
    """A readable raw file that implements ``read``; ``readinto`` copies what it returns."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)
