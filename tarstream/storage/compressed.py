"""Gzip-compressed shards (``.tar.gz``, ``.tgz``), read as the tar stream they hold.

A compressed shard is decompressed as it is read, block by block; nothing is held whole.
Its sidecar describes the tar inside (offsets, size and checksums of the decompressed
bytes), so positions are found by decompressing up to them: a seek re-reads, and resuming
in the middle of such a shard costs the decompression of what comes before.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Any, BinaryIO, cast

from ..errors import ShardFormatError, TarstreamError
from .byteio import BytesReader

__all__ = ["GunzipInput", "is_gzip_name"]

GZIP_SUFFIXES = (".tar.gz", ".tgz")


def is_gzip_name(url: str) -> bool:
    """Whether ``url`` names a gzip-compressed shard (by its suffix, as tar tools do).

    >>> is_gzip_name("s3://b/train-000001.tar.gz"), is_gzip_name("x.tar")
    (True, False)
    """
    return url.split("?", 1)[0].lower().endswith(GZIP_SUFFIXES)


class GunzipInput(BytesReader):
    """The decompressed bytes of a gzip file ``raw``; a corrupt or cut stream is a
    ``ShardFormatError`` naming ``url`` and the decompressed offset reached."""

    def __init__(self, raw: BinaryIO, url: str) -> None:
        super().__init__()
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=cast(Any, raw), mode="rb")
        self.url = url
        self._position = 0

    def seekable(self) -> bool:
        return True  # forward by decompressing; back by starting again (where raw seeks)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        self._position = self._guard(lambda: self._gzip.seek(offset))
        return self._position

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._guard(lambda: self._gzip.read(size))
        self._position += len(data)
        return data

    def _guard(self, action: Any) -> Any:
        try:
            return action()
        except TarstreamError:
            raise
        except (OSError, EOFError, zlib.error) as e:
            error = ShardFormatError(
                f"gzip-compressed shard cannot be decompressed: {e}",
                shard=self.url,
                offset=self._position,
            )
        raise error from None

    def close(self) -> None:
        if not self.closed:
            self._gzip.close()
            self._raw.close()
        super().close()
