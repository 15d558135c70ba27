"""The dataset manifest (format v1; see FORMAT.md): one small JSON file naming every shard.

A reader given the manifest knows every shard's name, sample count and size with one
read, so it plans an epoch over many thousands of shards without opening any of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ..errors import ManifestError
from .braces import expand

__all__ = ["MANIFEST_SUFFIX", "Manifest", "compress_names"]

FORMAT_NAME = "tarstream.manifest"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"

_NUMBERED = re.compile(r"^(.*?)(\d+)(\D*)$")
#: Names safe at a glance: components of letters, digits, "_", "-" and ".", none starting
#: with "." (the rest are checked one rule at a time).
_PLAIN_NAME = re.compile(r"[\w-][\w.-]*(?:/[\w-][\w.-]*)*\Z", re.ASCII)


def compress_names(names: Sequence[str]) -> str | list[str]:
    """Return one brace pattern for consecutive zero-padded names, else the list itself.

    >>> compress_names(["t-000000.tar", "t-000001.tar", "t-000002.tar"])
    't-{000000..000002}.tar'
    >>> compress_names(["a.tar", "b.tar"])
    ['a.tar', 'b.tar']
    """
    if not names:
        return []
    first = _NUMBERED.match(names[0])
    if first is None or any(c in names[0] for c in "{},"):
        return list(names)
    prefix, digits, suffix = first.groups()
    start = int(digits)
    expected = [f"{prefix}{start + i:0{len(digits)}d}{suffix}" for i in range(len(names))]
    if expected != list(names) or len(str(start + len(names) - 1)) > len(digits):
        return list(names)
    if len(names) == 1:
        return names[0]
    return f"{prefix}{{{digits}..{start + len(names) - 1:0{len(digits)}d}}}{suffix}"


@dataclass(frozen=True)
class Manifest:
    """A dataset: shard names relative to the manifest, with per-shard counts and sizes."""

    shards: list[str]
    samples: list[int]
    sizes: list[int]
    fields: list[str]
    sidecar_suffix: str = ".idx"
    #: The folder beside the shards that holds their sidecars ("": beside the shards, as
    #: manifests written before the folder say by not naming one).
    sidecar_dir: str = ""
    writer: dict[str, Any] = field(default_factory=dict)

    @property
    def total_samples(self) -> int:
        return sum(self.samples)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)

    def to_json(self) -> str:
        """Serialize to the manifest's JSON text."""
        doc = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "shards": compress_names(self.shards),
            "samples": self.samples,
            "sizes": self.sizes,
            "total_samples": self.total_samples,
            "total_bytes": self.total_bytes,
            "fields": self.fields,
            "sidecar_suffix": self.sidecar_suffix,
            "sidecar_dir": self.sidecar_dir,
            "writer": self.writer,
        }
        return json.dumps(doc, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, url: str) -> Manifest:
        """Parse and check manifest JSON; ``url`` is named in errors."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise ManifestError(f"{url}: not valid JSON ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ManifestError(f"{url}: not a tarstream manifest (format field missing)")
        if doc.get("version") != FORMAT_VERSION:
            raise ManifestError(
                f"{url}: manifest version {doc.get('version')!r} is not supported "
                f"(this tarstream reads version {FORMAT_VERSION})"
            )
        try:
            raw = doc["shards"]
            patterns = [raw] if isinstance(raw, str) else list(raw)
            shards = _expand(patterns, len(doc["samples"]), url)
            manifest = cls(
                shards=shards,
                samples=[int(n) for n in doc["samples"]],
                sizes=[int(n) for n in doc["sizes"]],
                fields=[str(f) for f in doc.get("fields", [])],
                sidecar_suffix=str(doc.get("sidecar_suffix", ".idx")),
                sidecar_dir=str(doc.get("sidecar_dir", "")),
                writer=dict(doc.get("writer", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{url}: missing or bad entry ({e!r})") from e
        if not len(manifest.shards) == len(manifest.samples) == len(manifest.sizes):
            raise ManifestError(
                f"{url}: {len(manifest.shards)} shards but {len(manifest.samples)} sample "
                f"counts and {len(manifest.sizes)} sizes"
            )
        for name in manifest.shards:
            if not is_safe_name(name):
                raise ManifestError(
                    f"{url}: shard name {name!r} must be relative to the manifest, inside its "
                    "directory: no leading '/', '..' or empty component (also "
                    "percent-encoded), backslash, control character, URL scheme or pipe:"
                )
        suffix = manifest.sidecar_suffix
        if not suffix or "/" in unquote(suffix) or not is_safe_name("x" + suffix):
            raise ManifestError(
                f"{url}: sidecar_suffix {suffix!r} must be a plain suffix such as '.idx' "
                "(no '/', '..' or control character)"
            )
        folder = manifest.sidecar_dir
        if folder and ("/" in unquote(folder) or not is_safe_name(folder)):
            raise ManifestError(
                f"{url}: sidecar_dir {folder!r} must be one folder name such as '.tarstream' "
                "(no '/', '..' or control character)"
            )
        return manifest


def is_safe_name(name: str) -> bool:
    """Whether ``name`` stays inside the directory it is joined to, locally and in a URL.

    >>> is_safe_name("train-000001.tar"), is_safe_name("../x.tar"), is_safe_name("a/%2e%2e/b")
    (True, False, False)
    """
    return bool(_PLAIN_NAME.match(name)) or _safe_by_rules(name)


def _safe_by_rules(name: str) -> bool:
    """``is_safe_name`` one rule at a time (for names the glance does not settle)."""
    if not name or name.startswith(("/", "pipe:", "~")) or "://" in name or "\\" in name:
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    decoded = unquote(name)
    return not decoded.startswith("/") and all(
        part not in ("", "..") for part in decoded.split("/")
    )


def _expand(patterns: list[object], expected: int, url: str) -> list[str]:
    """The names of a manifest's shard patterns, never more than ``expected`` (the number
    of sample counts): a pattern naming more is refused before it is expanded."""
    names: list[str] = []
    for pattern in patterns:
        try:
            names += expand(str(pattern), limit=expected - len(names), what="shard pattern")
        except ValueError as e:
            raise ManifestError(f"{url}: {e}, beyond its {expected:,} sample counts") from None
    return names
