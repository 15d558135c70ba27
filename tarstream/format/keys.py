"""The member-name rule shared by the writer and the reader, and key validation.

A member ``KEY.FIELD``: the key is the member path up to the first dot of its last
component, the field is the rest (``a/b/0001.seg.png`` is key ``a/b/0001``, field
``seg.png``).
"""

from __future__ import annotations

import re

from ..errors import InvalidKeyError

__all__ = [
    "MAX_KEY_BYTES",
    "split_member_name",
    "unsafe_key",
    "validate_field",
    "validate_key",
]

#: Longest key accepted by the writer, in UTF-8 bytes. Member names longer than 100 bytes
#: need a PAX header; the bound keeps names well inside what every tar tool handles.
MAX_KEY_BYTES = 240
MAX_FIELD_BYTES = 64


def split_member_name(name: str) -> tuple[str, str] | None:
    """Split a member name into ``(key, field)``, or return None if it has no field.

    >>> split_member_name("a/b/0001.seg.png")
    ('a/b/0001', 'seg.png')
    >>> split_member_name("a.b/README") is None
    True
    """
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1 or dot == len(name) - 1:
        return None
    return name[:dot], name[dot + 1 :]


def unsafe_key(key: str) -> str | None:
    """Why a key read from a shard is unsafe to use (None: it is not): a key becomes a path
    when samples are written out, so it must stay relative and inside its directory.

    >>> unsafe_key("a/0001"), unsafe_key("../../evil"), unsafe_key("/etc/passwd")
    (None, "a '..' component", 'an absolute path')
    """
    if key.startswith("/"):
        return "an absolute path"
    if "\x00" in key:
        return "a NUL character"
    if key == ".." or key.startswith("../") or key.endswith("/..") or "/../" in key:
        return "a '..' component"
    return None


#: ASCII components of letters, digits, ``_`` and ``-``, joined by ``/``; dots before the last.
_PLAIN_KEY = re.compile(r"(?:[\w\-]+(?:\.[\w\-]+)*/)*[\w\-]+", re.ASCII)
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def validate_key(key: object) -> str:
    """Return ``key`` if it can be written as a sample key, else raise InvalidKeyError.

    A key is a relative ``/``-separated path: not empty, no empty, ``.`` or ``..``
    components, no leading ``/``, no ``.`` in its last component, no control characters,
    at most MAX_KEY_BYTES bytes of UTF-8.
    """
    if type(key) is str and len(key) <= MAX_KEY_BYTES and _PLAIN_KEY.fullmatch(key):
        return key  # the usual key, checked at once: what the rules below allow
    if not isinstance(key, str):
        raise InvalidKeyError(f"__key__ must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("__key__ must not be empty")
    if _has_control(key):
        raise InvalidKeyError(f"__key__ {key!r} contains a control character")
    if key.startswith("/"):
        raise InvalidKeyError(f"__key__ {key!r} must be relative, not start with '/'")
    if "\\" in key:
        raise InvalidKeyError(f"__key__ {key!r} must use '/' as separator, not '\\'")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidKeyError(f"__key__ {key!r} has an empty, '.' or '..' path component")
    if "." in parts[-1]:
        raise InvalidKeyError(
            f"__key__ {key!r} has a '.' in its last component; the reader would split it there"
        )
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InvalidKeyError(f"__key__ {key!r} is not valid Unicode") from e
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"__key__ is {size} bytes of UTF-8, above the limit {MAX_KEY_BYTES}")
    return key


def validate_field(key: str, field: object) -> str:
    """Return ``field`` if it can be written as a field name of sample ``key``."""
    if not isinstance(field, str):
        raise InvalidKeyError(f"sample {key!r}: field names must be str, got {field!r}")
    if field.startswith("__") and field.endswith("__"):
        raise InvalidKeyError(
            f"sample {key!r}: field {field!r} is reserved (names like __x__ are metadata)"
        )
    bad = (
        not field
        or "/" in field
        or field.startswith(".")
        or field.endswith(".")
        or ".." in field
        or _has_control(field)
    )
    if bad:
        raise InvalidKeyError(
            f"sample {key!r}: field {field!r} must be non-empty, without '/', control "
            "characters, or leading, trailing or doubled dots"
        )
    if len(field.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
        raise InvalidKeyError(f"sample {key!r}: field {field!r} is longer than {MAX_FIELD_BYTES}")
    return field
