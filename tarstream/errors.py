"""Exception types raised by tarstream.

Every error says what failed and where. Errors about a shard name the shard (with any
credentials in its URL redacted), the member and the byte offset, and they pickle, so an
error raised in a DataLoader worker reaches the trainer intact::

    TarstreamError
    ├── ShardError                  problem with one shard (attributes: shard, member, offset)
    │   ├── ShardFormatError        not a tar, corrupt header, zero block in the middle, ...
    │   │   ├── TruncatedShardError the shard ends early (inside a member or at a boundary)
    │   │   └── MemberTooLargeError a member is larger than the reader's size limit
    │   ├── SidecarError            the sidecar is unreadable or does not match its shard
    │   ├── DecodeError             a field cannot be decoded (member is KEY.FIELD)
    │   └── ShardChangedError       the object changed while it was read (ETag, size)
    ├── StorageError                (also an OSError) remote storage failed: a permanent
    │                               error, retries used up, credentials not available
    ├── ManifestError               unreadable or invalid dataset manifest
    ├── ArgumentError               (also a TypeError and a ValueError) an argument of the
    │                               wrong type or form
    ├── ResumeError                 (also a ValueError) a state that cannot be resumed here
    ├── ImageTooLargeError          (also a ValueError) an image header declares more pixels
    │                               than the limit; a DecodeError names it as its cause
    └── WriteError                  (also a ValueError) the writer was given bad input
        ├── InvalidKeyError         a key that cannot be a tar member name
        ├── DuplicateKeyError       a key written twice
        └── EncodeError             a field value that cannot be encoded by its extension

An error caused by a failure in a library below tarstream (fsspec, aiohttp, botocore) has
a ``RedactedCause`` as its ``__cause__``, never the original exception: its type's name and
its message with credentials replaced, since the original's message, arguments or
attributes may hold a URL with a password or a signed query.

Warnings, for what works but costs more or falls back::

    TarstreamWarning                (a UserWarning)
    ├── ResumeWarning               a resume re-reads data (shards without sidecars)
    ├── EpochWarning                an epoch is iterated again without set_epoch
    └── CacheWarning                the cache could not be used; the shard was streamed
"""

from __future__ import annotations

import re

__all__ = [
    "ArgumentError",
    "CacheWarning",
    "DecodeError",
    "DuplicateKeyError",
    "EncodeError",
    "EpochWarning",
    "ImageTooLargeError",
    "InvalidKeyError",
    "ManifestError",
    "MemberTooLargeError",
    "RedactedCause",
    "ResumeError",
    "ResumeWarning",
    "ShardChangedError",
    "ShardError",
    "ShardFormatError",
    "SidecarError",
    "StorageError",
    "TarstreamError",
    "TarstreamWarning",
    "TruncatedShardError",
    "WriteError",
    "redact_url",
]

# anywhere, not only at the start: chained URLs (``simplecache::s3://k:s@b/x``) and pipe:
# commands (``pipe:curl https://u:p@host/x``) carry URLs inside them
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_SECRET_QUERY = re.compile(
    r"([?&](?:x-amz-[a-z-]*|signature|sig|token|access_token|key|secret|password|credential)=)[^&]*",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """Return ``url`` with credentials in its user-info and query string replaced by ``***``.

    >>> redact_url("s3://AKIA:secret@bucket/train-000001.tar")
    's3://***@bucket/train-000001.tar'
    >>> redact_url("https://h/x.tar?X-Amz-Signature=abc&part=1")
    'https://h/x.tar?X-Amz-Signature=***&part=1'
    >>> redact_url("pipe:curl -s https://user:pw@host/a@b.tar")
    'pipe:curl -s https://***@host/a@b.tar'
    >>> redact_url("simplecache::s3://AKIA:secret@bucket/x.tar")
    'simplecache::s3://***@bucket/x.tar'
    """
    url = _USERINFO.sub(r"\1***@", url)
    return _SECRET_QUERY.sub(r"\1***", url)


class TarstreamError(Exception):
    """Base class of every error tarstream raises on purpose."""


class ShardError(TarstreamError):
    """A problem with one shard; ``shard``, ``member`` and ``offset`` say where."""

    def __init__(
        self,
        message: str,
        *,
        shard: str | None = None,
        member: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.shard = redact_url(shard) if shard is not None else None
        self.member = member
        self.offset = offset
        self.reason = message
        position = []
        if member is not None:
            position.append(f"member {member!r}")
        if offset is not None:
            position.append(f"at byte {offset}")
        parts = [p for p in (self.shard, " ".join(position)) if p]
        super().__init__(": ".join([*parts, message]))

    def __reduce__(self) -> tuple[object, ...]:
        # Exception pickling re-calls __init__ with self.args; ours takes keywords, so
        # rebuild from the parts instead of the formatted text.
        return (
            _rebuild_shard_error,
            (type(self), self.reason, self.shard, self.member, self.offset),
        )


def _rebuild_shard_error(
    cls: type[ShardError],
    reason: str,
    shard: str | None,
    member: str | None,
    offset: int | None,
) -> ShardError:
    return cls(reason, shard=shard, member=member, offset=offset)


class ShardFormatError(ShardError):
    """The shard is not a valid tar file, or a header in it is corrupt."""


class TruncatedShardError(ShardFormatError):
    """The shard ends before it should: inside a member, or before samples its sidecar lists."""


class MemberTooLargeError(ShardFormatError):
    """A member declares a size above the reader's ``max_member_size``."""


class SidecarError(ShardError):
    """A sidecar index cannot be read, or it does not match its shard."""


class DecodeError(ShardError):
    """A field of a sample cannot be decoded; ``member`` is ``KEY.FIELD``."""


class ShardChangedError(ShardError):
    """The shard's object changed while it was read; no bytes of two versions are mixed."""


class StorageError(TarstreamError, OSError):
    """Remote storage failed: a permanent error (403), retries used up, or credentials that
    this process was not given. The message names the URL with credentials redacted."""


class ManifestError(TarstreamError):
    """A dataset manifest cannot be read or is not valid."""


class ArgumentError(TarstreamError, TypeError, ValueError):
    """An argument of the wrong type or form (a function where field names belong, a
    string where a function does); both a TypeError and a ValueError, so either catches it."""


class ResumeError(TarstreamError, ValueError):
    """A saved state cannot be loaded: another dataset or seed, an unknown version, or a
    layout change that elastic resume cannot make (no sample counts, a stage without
    positions)."""


class ImageTooLargeError(TarstreamError, ValueError):
    """An image declares more pixels than the limit (checked from its header, before
    decoding)."""


class WriteError(TarstreamError, ValueError):
    """The writer was given input it cannot write."""


class InvalidKeyError(WriteError):
    """A sample key cannot be used as a tar member name."""


class DuplicateKeyError(WriteError):
    """A sample key was written twice to the same dataset."""


class EncodeError(WriteError):
    """A field value has a type the field's extension cannot encode."""


class TarstreamWarning(UserWarning):
    """Base class of the warnings tarstream gives."""


class ResumeWarning(TarstreamWarning):
    """Resuming costs more than it should: it re-reads data (shards without sidecars)."""


class EpochWarning(TarstreamWarning):
    """An epoch is iterated again without ``set_epoch``: it repeats the same order."""


class CacheWarning(TarstreamWarning):
    """The cache could not be used for a shard; it was streamed instead."""


class RedactedCause(Exception):
    """What a failure below tarstream said, with credentials redacted (see the module
    docstring); ``kind`` is the original exception's type name, ``status`` its HTTP status
    where it had one."""

    def __init__(self, message: str, kind: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @classmethod
    def of(cls, e: BaseException) -> RedactedCause:
        status = getattr(e, "status", None) or getattr(e, "status_code", None)
        kind = type(e).__name__
        text = redact_url(str(e))
        return cls(
            f"{kind}: {text}" if text else kind, kind, status if isinstance(status, int) else None
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.kind, self.status))
