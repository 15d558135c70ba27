"""Decode: turn field bytes into values, selectively, safely, strict or lenient.

Each field is decoded by its extension (the table in ``tarstream.codecs.extensions``):
text, JSON, class ids, msgpack, ``.npy``/``.npz`` (never with pickle), ``.pth``
(``torch.load`` with ``weights_only=True``), images through Pillow, video and audio through
PyAV; pickles stay bytes unless named in ``unsafe``; ``EXT.gz`` is gunzipped (at most
``max_size`` bytes) before the decoder of ``EXT``; anything else stays bytes.

Which decoder a field gets, first match wins: a key of ``decoders`` equal to the field's
name (``"seg.png"``); a key that is a glob pattern matching it (``"*.png"``), in the order
given; webdataset-style handlers, in the order given; the built-in decoder of its extension
(the part after the last dot). A decoder is a function of the bytes, or None to leave the
field as bytes. A handler is a function of (``"." + field name``, bytes) that returns the
value, or None to pass the field on (webdataset's ``decode(fn)`` and ``handle_extension``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, cast

from ..codecs.decoders import (
    DEFAULT_MAX_SIZE,
    RECORD_DECODERS,
    Decoder,
    builtin_decoder,
    decode_column,
    decode_error,
    gunzip,
)
from ..codecs.encode import TYPED_KINDS
from ..codecs.extensions import PICKLE_EXTENSIONS, extension, kind_of
from ..codecs.images import DEFAULT_MAX_PIXELS, ImageForm, Size
from ..codecs.media import AudioOptions, VideoOptions
from ..errors import ArgumentError, DecodeError
from ..format.columns import ColumnRun, put_columns
from ..format.samples import Sample
from ..read.read_shards import ReadShards
from ..stage import Stage, State, Transform, check_errors
from ..world import Context
from .columns import same_key_columns
from .decode_stats import DecodeStats
from .deferred import PendingImage
from .handlers import Handled, Handler
from .typed import Checks, Kinds, Plan, all_held, checks_of, held_test, wrong_kind

__all__ = ["Decode", "DecodeStats"]

_KEEP, _DROP, _DECODE, _IMAGE = 0, 1, 2, 3
#: The built-in decoders that make from a plain member's bytes what a packed one holds.
_TYPED_DECODERS = frozenset(RECORD_DECODERS[kind] for kind in TYPED_KINDS if kind)


class Decode(Transform[Sample]):
    """Decode the fields of each sample; see the module docstring for the decoders.

    Args:
        handlers: as webdataset's ``decode(...)`` takes them: a string is the image form,
            a function a handler (see the module docstring), tried in the order given.
        image: the image form (``tarstream.codecs.images``), default "rgb8".
        layout: "HWC" or "CHW" for numpy images.
        size: decode images to this size (an int: the shorter side; a pair: width, height),
            JPEGs at reduced scale first.
        max_pixels: refuse images larger than this (from the header, before decoding).
        video, audio: how videos and audio are decoded.
        only: decode only these fields (names or glob patterns; a string: separated by
            spaces); the others stay bytes, or are dropped with ``drop_others=True``.
        decoders: custom decoders by field name or glob pattern (None: leave as bytes).
        unsafe: extensions whose decoders run code, allowed here (``("pkl",)``).
        max_size: the most bytes a ``.gz`` field may expand to (default 256 MiB; it is
            decompressed in one bounded call, never past this).
        errors: "strict" raises ``DecodeError``; "skip" drops a sample that fails and
            counts it in ``stats``, up to ``max_errors`` per epoch (then it raises).

    State: the source's; decoding keeps nothing between samples.
    """

    #: Whether the reader right before applies this stage's decoding (set by ``connect``),
    #: and by field set, the kinds a block read whole is checked for (``run``).
    _fused = False
    _kinds: dict[tuple[str, ...], Checks | None]

    def __init__(
        self,
        *handlers: str | Handler,
        image: str | None = None,
        layout: str = "HWC",
        size: Size = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        video: VideoOptions | None = None,
        audio: AudioOptions | None = None,
        only: Iterable[str] | None = None,
        drop_others: bool = False,
        decoders: Mapping[str, Decoder | None] | None = None,
        unsafe: Iterable[str] = (),
        max_size: int = DEFAULT_MAX_SIZE,
        errors: Literal["strict", "skip"] = "strict",
        max_errors: int | None = None,
    ) -> None:
        super().__init__()
        forms = [h for h in handlers if isinstance(h, str)] + ([image] if image else [])
        if len(forms) > 1:
            raise ArgumentError(f"one image form, got {forms}")
        self.handlers = tuple(h for h in handlers if not isinstance(h, str))
        for handler in self.handlers:
            if not callable(handler):
                raise ArgumentError(
                    f"decode takes an image form (a string) or handler functions, got {handler!r}"
                )
        self.form = ImageForm(forms[0] if forms else "rgb8", layout, size, max_pixels)
        check_errors(errors, max_errors)
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        unsafe = frozenset(unsafe)
        if unsafe - PICKLE_EXTENSIONS:
            raise ValueError(
                f"unsafe takes extensions of {sorted(PICKLE_EXTENSIONS)}, got {sorted(unsafe)}"
            )
        if drop_others and only is None:
            raise ValueError("drop_others=True needs only=[fields to keep]")
        for name, decoder in (decoders or {}).items():
            if decoder is not None and not callable(decoder):
                raise ArgumentError(f"decoder for {name!r} must be a function or None")
        self.video, self.audio = video or VideoOptions(), audio or AudioOptions()
        if isinstance(only, str):  # "jpg cls", as webdataset takes it: not letters
            only = only.split()
        if only is not None and not all(isinstance(name, str) for name in only):
            raise ArgumentError(f"only takes field names or patterns as strings, got {only!r}")
        self.only = None if only is None else tuple(only)
        self.drop_others, self.decoders = drop_others, dict(decoders or {})
        self.unsafe, self.max_size = unsafe, max_size
        self.errors, self.max_errors = errors, max_errors
        self.preserves_count, self.stats = errors == "strict", DecodeStats()
        self._defer = False
        self._plans: dict[str, tuple[int, Decoder | None]] = {}
        #: By a sample's field names (in order): the fields to drop or decode, with how.
        self._steps: dict[tuple[str, ...], Plan] = {}
        self._typed = False  # typed values of packed members come (connect): check kinds

    @property
    def image(self) -> str:
        """The image form (``tarstream.codecs.images``)."""
        return self.form.spec

    @property
    def layout(self) -> str:
        return self.form.layout

    # -- choosing a decoder -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_plans"], state["_steps"], state["_kinds"] = {}, {}, {}  # rebuilt on first use
        return state

    def decoder_for(self, name: str) -> Decoder | None:
        """The decoder field ``name`` gets (None: it stays bytes); see the module docstring."""
        return self._plan(name)[1]

    def _plan(self, name: str) -> tuple[int, Decoder | None]:
        """(what to do with field ``name``: _KEEP, _DROP, _DECODE or _IMAGE (the built-in
        image decoder); its decoder), memoized."""
        plan = self._plans.get(name)
        if plan is None and name.startswith("__"):  # metadata (__key__, __url__)
            plan = self._plans[name] = (_KEEP, None)
        if plan is None:
            wanted = self.only is None or any(
                name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in self.only
            )
            decoder = self._choose(name) if wanted else None
            if not wanted:
                plan = (_DROP if self.drop_others else _KEEP, None)
            elif decoder is None:
                plan = (_KEEP, None)
            else:
                image = getattr(decoder, "__func__", None) is ImageForm.decode
                plan = (_IMAGE if image else _DECODE, decoder)
            self._plans[name] = plan
        return plan

    def _choose(self, name: str) -> Decoder | None:
        if name in self.decoders:
            return self.decoders[name]
        for pattern, decoder in self.decoders.items():
            if fnmatch.fnmatchcase(name, pattern):
                return decoder
        if self.handlers:
            return Handled(self.handlers, name, self._builtin(name))
        return self._builtin(name)

    def _builtin(self, name: str) -> Decoder | None:
        if name.lower().endswith(".gz"):
            inner = self._choose(name[:-3])
            return lambda data: gunzip(data, self.max_size, inner)
        return builtin_decoder(
            extension(name),
            image=self.form.decode,
            video=self.video,
            audio=self.audio,
            unsafe=self.unsafe,
        )

    def connect(self, source: Stage[Any] | None, context: Context) -> Decode:
        clone = cast(Decode, super().connect(source, context))
        reader, right_after = source, True
        while reader is not None and reader.forwards_items:
            reader, right_after = reader.source, False
        clone._plans, clone._steps, clone._kinds, clone._fused = {}, {}, {}, False
        if isinstance(reader, ReadShards):  # packed values arrive as the decoders make them
            reader.typed = clone.takes_typed
            clone._typed = True
            # Right after a strict reader (a lenient one takes a DecodeError for a failed shard)
            strict = self.errors == reader.errors == "strict"
            if right_after and strict and reader.reads_samples:  # the reader decodes: ``run``
                reader.decoding = clone
                clone._fused = True
        return clone

    def takes_typed(self, name: str) -> bool:
        """Whether field ``name`` may arrive as a packed member holds it (a str, int or
        JSON value, ``tarstream.read.packed``): its decoder is the built-in one that makes
        that value from the bytes, or the field is dropped."""
        action, decoder = self._plan(name)
        return action == _DROP or (action == _DECODE and decoder in _TYPED_DECODERS)

    def defer_images(self) -> bool:
        """Leave built-in image decoding to the ``Batch`` this stage feeds (the interface
        in ``tarstream.stages.deferred``): images become ``PendingImage`` values, which the
        batch decodes straight into its memory, saving a copy of every image. Only for
        uint8 forms that batch in the layout they are decoded in, and strict errors (a
        failure then surfaces from the batch as the same ``DecodeError``). True if it defers."""
        self._defer = self.form.packs_in_place() and self.errors == "strict"
        return self._defer

    # -- decoding ---------------------------------------------------------------------------
    def apply(self, item: Sample) -> Sample:
        plan = self._steps.get(tuple(item))
        if plan is None:
            plan = self._steps_for(tuple(item))
        steps, held = plan
        if held is not None and held(item):  # typed packed values, each of its kind
            self.stats.samples += 1
            return item
        out = item  # copied before the first change
        name = ""
        try:
            for name, action, decoder, kinds in steps:
                value: Any = item[name]
                if not isinstance(value, bytes) and action != _DROP:
                    if kinds is not None and type(value) not in kinds:
                        raise wrong_kind(value, kinds)
                    continue  # kept as it is (a value a packed member holds, say)
                if out is item:
                    out = dict(item)
                if action == _DROP:
                    del out[name]
                elif action == _IMAGE and self._defer:
                    out[name] = PendingImage(value, self.form, item, name)
                else:
                    out[name] = decoder(value)  # type: ignore[misc]
        except Exception as e:
            raise decode_error(item, name, e) from e
        self.stats.samples += 1
        return out

    def run(self, samples: Sequence[Sample]) -> Iterable[Sample]:
        """A run of samples decoded (the fused reader's ``Decoding``): a block read whole
        checked a field at a time, in C, where it needs only kind checks; a read's plain
        samples decoded a field at a time (``decoded_columns``); else a sample at a time."""
        names = getattr(samples, "names", None)
        checks = self._checks(names) if names is not None else None
        if checks is not None and all_held(checks, samples, getattr(samples, "kinds", None)):
            self.stats.samples += len(samples)
            return samples
        if type(samples) is ColumnRun:  # a read's plain samples, a field at a time
            columns = self.decoded_columns(samples, dict(samples.columns), samples.kinds)
            return map(self.apply, samples) if columns is None else samples.samples(columns)
        columns = self.decoded_columns(samples) if type(samples) is list else None
        if columns is None:
            return map(self.apply, samples)
        put_columns(samples, columns, [n for n, *_ in self._plan_of(tuple(columns))[0]])
        return samples  # plain samples, the fields decoded put back

    def decoded_columns(
        self,
        items: Sequence[Sample],
        columns: dict[str, list[Any]] | None = None,
        kinds: Kinds = None,
    ) -> dict[str, list[Any]] | None:
        """The columns of ``items`` (``same_key_columns``) decoded a field at a time, as
        ``apply`` decodes each sample, where it can: one field set, each field to decode
        typed values of its kind (left as they are) or bytes for a built-in decoder of text,
        a class or JSON (``decodes_together``) that takes them all without an error; counted
        as decoded. Else None: the samples are decoded one at a time, a failure named at its
        sample (for ``run``, and for the ``Batch`` this stage feeds, ``decodes_lists``).
        ``columns``: ``items``' taken already (a ``ColumnRun``'s, rows'), with the ``kinds``
        of their values where known (each field's types: not looked at again)."""
        if columns is None:
            if not items or not self.decodes_together(items[0]):
                return None  # the first is decoded otherwise (images, say): so are the others
            columns = same_key_columns(items)
        if columns is None:
            return None
        for name, action, decoder, allowed in self._plan_of(tuple(columns))[0]:
            types = kinds[name] if kinds and name in kinds else set(map(type, columns[name]))
            if allowed is not None and types.issubset(allowed):
                continue  # typed values (a packed member's), each of its kind
            if types != {bytes} or action != _DECODE or decoder not in _TYPED_DECODERS:
                return None
            try:
                columns[name] = decode_column(decoder, columns[name])
            except Exception:  # decoded one sample at a time, the culprit is named
                return None
        self.stats.samples += len(items)
        return columns

    def decodes_lists(self) -> bool:
        """Whether ``decoded_columns`` may stand for ``apply`` over a batch: strict, unfused."""
        return self.errors == "strict" and not self._fused

    def decodes_together(self, item: Sample) -> bool:
        """Whether samples like ``item`` may be decoded a field at a time: a dict that
        ``apply`` leaves as it is (``held_test``), or whose fields to decode all have a
        built-in decoder of text, a class or JSON (no drop, no image)."""
        if type(item) is not dict:
            return False
        steps, held = self._plan_of(tuple(item))
        if held is not None and held(item):
            return True
        return all(a == _DECODE and d in _TYPED_DECODERS for _, a, d, _ in steps)

    def _plan_of(self, names: tuple[str, ...]) -> Plan:
        """The plan for samples of field set ``names`` (``_steps_for``), memoized."""
        return self._steps.get(names) or self._steps_for(names)

    def _checks(self, names: tuple[str, ...]) -> Checks | None:
        """What ``all_held`` checks for samples of field set ``names``, memoized."""
        if names not in self._kinds:
            if len(self._kinds) > 1000:  # ever new field sets: keep a few
                self._kinds.clear()
            self._kinds[names] = checks_of(self._plan_of(names))
        return self._kinds[names]

    def own_iterator(self) -> Iterator[Sample] | None:
        if self._fused:  # the reader before it decodes
            return self.require_source().own_iterator()
        return super().own_iterator()

    def _steps_for(self, names: tuple[str, ...]) -> Plan:
        """The fields of samples with ``names`` to drop or decode (the others are kept),
        and for a field that may arrive typed from a packed member (``takes_typed``), the
        types it may arrive as; and the test of a sample they leave as it is (``held_test``)."""
        if len(self._steps) > 1000:  # samples of ever new field sets: keep a few
            self._steps.clear()
        steps = []
        for name in names:
            action, decoder = self._plan(name)
            if action != _KEEP:
                typed = self._typed and decoder in _TYPED_DECODERS
                kinds = TYPED_KINDS[kind_of(name)] if typed else None
                steps.append((name, action, decoder, kinds))
        plan: Plan = (steps, held_test(steps))
        self._steps[names] = plan
        return plan

    def reset(self, state: State | None = None) -> None:
        super().reset(state)
        self._errors_this_epoch = 0

    def maps_each_item(self) -> bool:
        return self.errors == "strict"  # else a sample that fails is skipped

    def next(self) -> Sample:
        source = self.require_source()
        if self._fused:  # the reader before it decodes
            return cast(Sample, source.next())
        while True:
            item = source.next()
            try:
                return self.apply(item)
            except DecodeError as e:
                if self.errors == "strict":
                    raise
                self._count_error(e)

    def _count_error(self, e: DecodeError) -> None:
        """Count a skipped sample; raise once more than ``max_errors`` failed this epoch."""
        self.stats.skipped += 1
        self.stats.errors[str(e.member).rsplit(".", 1)[-1]] += 1
        self._errors_this_epoch += 1
        if self.max_errors is not None and self._errors_this_epoch > self.max_errors:
            raise DecodeError(
                f"more than max_errors={self.max_errors} samples failed to decode "
                f"this epoch; the last: {e.reason}",
                shard=e.shard,
                member=e.member,
            ) from e

    def __repr__(self) -> str:
        return f"Decode({self.image!r}, layout={self.layout!r}, errors={self.errors!r})"
