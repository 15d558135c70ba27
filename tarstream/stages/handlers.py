"""Webdataset-style decode handlers, as ``Decode`` takes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..codecs.decoders import Decoder

__all__ = ["Handled", "Handler"]

#: A webdataset-style handler: (".field", bytes) -> the value, or None to pass it on.
Handler = Callable[[str, bytes], Any]


class Handled:
    """A field's decoder that tries handlers first, then ``rest`` (None: bytes)."""

    def __init__(self, handlers: tuple[Handler, ...], name: str, rest: Decoder | None) -> None:
        self.handlers, self.key, self.rest = handlers, "." + name, rest

    def __call__(self, data: bytes) -> Any:
        for handler in self.handlers:
            value = handler(self.key, data)
            if value is not None:
                return value
        return data if self.rest is None else self.rest(data)
