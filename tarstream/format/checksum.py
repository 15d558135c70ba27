"""CRC-32 of sample bytes: the checksum sidecars record and readers verify.

The same CRC-32 as ``zlib.crc32`` (the polynomial of zip, gzip and PNG), computed by ISA-L
through ``isal`` where that is installed (the ``fast`` extra: about three times the speed
on this project's machines, which is most of the cost of verifying an image), else by
``zlib``. Both give the same values (tested); which one runs changes no byte written.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

__all__ = ["ACCELERATED", "crc32"]

#: ``crc32(data, value=0) -> int``: the running CRC-32 of ``data`` (any bytes-like object).
crc32: Callable[..., int] = zlib.crc32
#: Whether ``crc32`` is ISA-L's.
ACCELERATED = False
try:
    from isal.isal_zlib import crc32 as _isal_crc32
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:
    crc32, ACCELERATED = _isal_crc32, True
