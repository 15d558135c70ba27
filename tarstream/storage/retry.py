"""Which remote failures are worth another try, and how long to wait between tries."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from dataclasses import dataclass

__all__ = ["Retry", "is_transient"]


@dataclass(frozen=True)
class Retry:
    """How transient failures are retried: ``attempts`` tries in all per request, waiting
    ``backoff * 2**(try - 1)`` seconds (at most ``max_backoff``) between them, each wait
    scaled by a random factor in ``1 - jitter .. 1``.

    ``timeout``: seconds a connection may take to open, or stay silent while a response
    is read, before the try fails (as a transient failure; given to the HTTP and S3
    backends, unless their own options set one). ``deadline``: seconds one request may
    take in all, tries and waits included; no try starts past it.
    """

    attempts: int = 6
    backoff: float = 0.2
    max_backoff: float = 10.0
    jitter: float = 0.5
    timeout: float = 60.0
    deadline: float = 600.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {self.backoff}, {self.max_backoff}")
        if self.timeout <= 0 or self.deadline <= 0:
            raise ValueError(
                f"timeout and deadline must be > 0, got {self.timeout}, {self.deadline}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in 0..1, got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return float(base * (1 - self.jitter * rng.random()))


_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EBUSY,  # s3fs: SlowDown, ServiceUnavailable
        errno.EIO,  # s3fs: a server error without a specific mapping (500 InternalError)
        errno.EAGAIN,
    }
)
_TRANSIENT_NAMES = frozenset(
    {
        "ClientPayloadError",
        "ClientConnectionError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "IncompleteRead",
        "ResponseStreamingError",
        "ProtocolError",
        "FSTimeoutError",
    }
)
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)


def is_transient(exc: BaseException) -> bool:
    """Return True for a failure that a later try may not meet (network, 5xx, throttling)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    if type(exc).__name__ == "FileExpired":
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, asyncio.TimeoutError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status == 429
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        http = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in _TRANSIENT_CODES or (isinstance(http, int) and http >= 500)
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS
