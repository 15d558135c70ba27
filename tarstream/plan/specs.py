"""Shard specs: what a user names (brace patterns, lists, manifests) as a list of shards,
each with where its sidecar is, and loading that sidecar."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, overload

from ..errors import ArgumentError, ManifestError, RedactedCause, SidecarError, redact_url
from ..format.braces import expand
from ..format.manifest import MANIFEST_SUFFIX, Manifest
from ..format.sidecar import ShardIndex, legacy_sidecar_url, sidecar_url
from ..storage.files import read_bytes
from ..storage.urls import is_pipe, join_url

if TYPE_CHECKING:
    from ..storage.config import Storage

__all__ = [
    "SIDECAR_MODES",
    "ShardSpec",
    "ShardSpecs",
    "SidecarMode",
    "Source",
    "check_sidecar_mode",
    "load_sidecar",
    "resolve_shards",
]

Source = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
#: Whether sidecars are used where present ("auto"), insisted on, or ignored.
SidecarMode = Literal["auto", "require", "ignore"]
SIDECAR_MODES = ("auto", "require", "ignore")


def check_sidecar_mode(sidecars: str) -> None:
    """Raise ValueError unless ``sidecars`` is one of ``SIDECAR_MODES``."""
    if sidecars not in SIDECAR_MODES:
        raise ValueError(f"sidecars must be one of {SIDECAR_MODES}, got {sidecars!r}")


@dataclass(frozen=True)
class ShardSpec:
    """One shard to read: its URL, where its sidecar is ("": none), its count and size if
    known, the storage that reaches remote URLs (None: defaults), and where an older
    version put its sidecar ("": nowhere to look; a file there that is not a tarstream
    sidecar, such as Megatron-Energon's index of the same name, is not one)."""

    url: str
    sidecar: str
    count: int | None = None
    size: int | None = None
    storage: Storage | None = None
    legacy_sidecar: str = ""


def _is_manifest(name: str) -> bool:
    return name.endswith((MANIFEST_SUFFIX, ".json"))


class ShardSpecs(Sequence[ShardSpec]):
    """The shards a source names, in order. A manifest's shards are held as its names,
    counts and sizes, and each ``ShardSpec`` is made when asked for, so a manifest of
    100,000 shards costs lists, not 100,000 objects."""

    def __init__(self) -> None:
        self._parts: list[Sequence[ShardSpec]] = []
        self._ends: list[int] = []

    def add(self, part: Sequence[ShardSpec]) -> None:
        if len(part):
            self._parts.append(part)
            self._ends.append(len(self) + len(part))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> ShardSpec: ...
    @overload
    def __getitem__(self, index: slice) -> list[ShardSpec]: ...
    def __getitem__(self, index: int | slice) -> ShardSpec | list[ShardSpec]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        part = bisect.bisect_right(self._ends, index)
        if not 0 <= index < len(self):
            raise IndexError("shard index out of range")
        return self._parts[part][index - (self._ends[part - 1] if part else 0)]

    def __iter__(self) -> Iterator[ShardSpec]:
        for part in self._parts:
            yield from part

    def counts(self) -> list[int | None]:
        """Each shard's sample count where a manifest gives it, else None."""
        out: list[int | None] = []
        for part in self._parts:
            out += part.samples if isinstance(part, _ManifestSpecs) else [s.count for s in part]
        return out

    def sizes(self) -> list[int | None]:
        """Each shard's size in bytes where a manifest gives it, else None."""
        out: list[int | None] = []
        for part in self._parts:
            out += part.sizes if isinstance(part, _ManifestSpecs) else [s.size for s in part]
        return out

    def names(self) -> list[str]:
        """Each shard's file name (the last part of its URL)."""
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, _ManifestSpecs):
                out += [name.rsplit("/", 1)[-1] for name in part.names]
            else:
                out += [spec.url.rstrip("/").rsplit("/", 1)[-1] for spec in part]
        return out


class _ManifestSpecs(Sequence[ShardSpec]):
    """A manifest's shards, each ``ShardSpec`` made when asked for."""

    def __init__(self, url: str, manifest: Manifest, storage: Storage | None) -> None:
        self.head = join_url(url, "")  # the manifest's folder, with its separator
        self.names, self.samples = manifest.shards, manifest.samples
        self.sizes, self.storage = manifest.sizes, storage
        self.folder, self.suffix = manifest.sidecar_dir, manifest.sidecar_suffix

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> ShardSpec:  # type: ignore[override]
        shard = self.head + self.names[index]  # names are checked: relative, inside
        sidecar = sidecar_url(shard, self.folder, self.suffix)
        return ShardSpec(shard, sidecar, self.samples[index], self.sizes[index], self.storage)


def resolve_shards(
    source: Source, *, allow_pipe: bool = False, storage: Storage | None = None
) -> ShardSpecs:
    """Return the shards named by ``source``, in order.

    ``source`` is a brace pattern (``d/train-{000000..000019}.tar``), a manifest path or
    URL (``*.json``), or a list of those. Manifests contribute their shards, relative to the
    manifest, with sample counts and sizes. ``pipe:COMMAND`` names a shard that is the
    output of COMMAND (run as an argument list, without a shell; no sidecar); it needs
    ``allow_pipe=True`` and is never taken from a manifest. Remote URLs (any fsspec URL,
    brace patterns included) are reached through ``storage``.

    Raises:
        ValueError: ``source`` names no shard, more than ``MAX_NAMES`` in one pattern
            (counted before expanding), or a ``pipe:`` without ``allow_pipe``.
        ManifestError: a manifest cannot be read or is invalid (a ``pipe:`` in it is).
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    out = ShardSpecs()
    specs: list[ShardSpec] = []
    for item in items:
        text = os.fspath(item)
        if not isinstance(text, str):
            raise ArgumentError(
                f"shard sources must be str or path-like, got {type(item).__name__}"
            )
        for name in expand(text, what="source"):
            if is_pipe(name):
                if not allow_pipe:
                    raise ValueError(
                        f"{name!r} runs a command: pass allow_pipe=True to read pipe: shards"
                    )
                specs.append(ShardSpec(url=name, sidecar=""))
            elif _is_manifest(name):
                out.add(specs)
                out.add(_manifest_shards(name, storage))
                specs = []
            else:
                specs.append(
                    ShardSpec(
                        name,
                        sidecar_url(name),
                        storage=storage,
                        legacy_sidecar=legacy_sidecar_url(name),
                    )
                )
    out.add(specs)
    if not len(out):
        raise ValueError(f"source {source!r} names no shard")
    return out


def _manifest_shards(url: str, storage: Storage | None) -> _ManifestSpecs:
    text: bytes | None = None
    try:
        text = read_bytes(url, storage)
    except OSError as e:
        failure = RedactedCause.of(e)
    if text is None:  # raised here, outside the handler: the redacted cause only
        raise ManifestError(f"{redact_url(url)}: cannot read manifest ({failure})") from failure
    return _ManifestSpecs(url, Manifest.from_json(text, url=redact_url(url)), storage)


def load_sidecar(spec: ShardSpec) -> ShardIndex | None:
    """Return the sidecar of ``spec``, or None if it has none.

    Raises:
        SidecarError: the sidecar exists but is invalid, or disagrees with the manifest.
    """
    if not spec.sidecar:
        return None
    try:
        data = read_bytes(spec.sidecar, spec.storage, cached=True)
    except FileNotFoundError:
        return _legacy_sidecar(spec)
    index = ShardIndex.from_bytes(data, url=redact_url(spec.sidecar))
    return _agreeing(spec, index)


def _legacy_sidecar(spec: ShardSpec) -> ShardIndex | None:
    """The sidecar an older version wrote beside the shard, if one is there; a file there
    that is not a tarstream sidecar is someone else's (Megatron-Energon writes its own
    ``NAME.tar.idx``) and is left alone."""
    if not spec.legacy_sidecar:
        return None
    try:
        data = read_bytes(spec.legacy_sidecar, spec.storage, cached=True)
    except FileNotFoundError:
        return None
    if not ShardIndex.is_sidecar(data):
        return None
    return _agreeing(spec, ShardIndex.from_bytes(data, url=redact_url(spec.legacy_sidecar)))


def _agreeing(spec: ShardSpec, index: ShardIndex) -> ShardIndex:
    if spec.count is not None and spec.count != index.count:
        raise SidecarError(
            f"manifest says {spec.count} samples, sidecar says {index.count}", shard=spec.url
        )
    if spec.size is not None and spec.size != index.size:
        raise SidecarError(
            f"manifest says {spec.size} bytes, sidecar says {index.size}", shard=spec.url
        )
    return index
