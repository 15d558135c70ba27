"""CRC-32 of sample bytes: the checksum sidecars record and readers verify.

The same CRC-32 as ``zlib.crc32`` (the polynomial of zip, gzip and PNG), computed by
zlib-ng through ``zlib-ng`` where that is installed (the ``fast`` extra: about twelve times
the speed of the standard library's on a 3 KB sample on this project's machines, which is
most of the cost of verifying a sample), else by ``zlib``. Both give the same values
(tested); which one runs changes no byte written.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

__all__ = ["ACCELERATED", "crc32", "crc32_combine"]

#: ``crc32(data, value=0) -> int``: the running CRC-32 of ``data`` (any bytes-like object).
crc32: Callable[..., int] = zlib.crc32
#: ``crc32_combine(crc1, crc2, len2) -> int``: the CRC-32 of ``A + B`` from ``crc1`` of ``A``,
#: ``crc2`` of ``B`` and ``B``'s length (zlib's); None where only the standard library's
#: ``zlib`` is installed, which lacks it.
crc32_combine: Callable[[int, int, int], int] | None = None
#: Whether ``crc32`` is zlib-ng's.
ACCELERATED = False
try:
    from zlib_ng.zlib_ng import crc32 as _fast_crc32
    from zlib_ng.zlib_ng import crc32_combine as _fast_combine
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:
    crc32, crc32_combine, ACCELERATED = _fast_crc32, _fast_combine, True
