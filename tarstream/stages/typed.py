"""Which samples a ``Decode`` leaves as they are: those whose values to decode all arrived
typed (from packed members, ``tarstream.read.packed``), each of its kind; tested a sample
at a time, or a field at a time over many samples of one field set, in C."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import cast

from ..codecs.decoders import Decoder
from ..format.samples import Sample

__all__ = ["Checks", "Kinds", "Plan", "Step", "all_held", "checks_of", "held_test", "wrong_kind"]

#: A field to drop or decode: (name, what to do, decoder, the types it may arrive as).
Step = tuple[str, int, Decoder | None, tuple[type, ...] | None]
#: The steps for a field set, and a test of a sample that they would leave as it is (all
#: its values to decode arrived typed, of their kinds), or None where they never do.
Plan = tuple[list[Step], Callable[[Sample], bool] | None]
#: The fields of a field set to check, each with the types it may hold.
Checks = list[tuple[str, frozenset[type]]]
#: Where known, the types each field's values have (samples unpacked by
#: ``tarstream.format.rows.Unpacker``, which checked them).
Kinds = Mapping[str, frozenset[type]] | None


def held_test(steps: list[Step]) -> Callable[[Sample], bool] | None:
    """The test of a sample ``steps`` leave as it is: each value of a field to decode is of
    its kind (a typed packed value); written out for up to three fields (a call each)."""
    if not steps:
        return lambda item: True
    if any(kinds is None for _, _, _, kinds in steps):
        return None  # a drop, or a decoder that makes something else than a typed value
    pairs = [(name, cast(tuple[type, ...], kinds)) for name, _, _, kinds in steps]
    if len(pairs) == 1:
        ((a, ka),) = pairs
        return lambda item: type(item[a]) in ka
    if len(pairs) == 2:
        (a, ka), (b, kb) = pairs
        return lambda item: type(item[a]) in ka and type(item[b]) in kb
    if len(pairs) == 3:
        (a, ka), (b, kb), (c, kc) = pairs
        return lambda item: type(item[a]) in ka and type(item[b]) in kb and type(item[c]) in kc
    return lambda item: all(type(item[name]) in kinds for name, kinds in pairs)


def checks_of(plan: Plan) -> Checks | None:
    """What ``all_held`` checks for samples of ``plan``'s field set (None: they are never
    left as they are)."""
    steps, held = plan
    return None if held is None else [(n, frozenset(k or ())) for n, _, _, k in steps]


def all_held(checks: Checks, samples: Sequence[Sample], kinds: Kinds = None) -> bool:
    """Whether ``held_test`` holds for every one of ``samples`` (of ``checks``' field set),
    a field at a time in C. ``kinds``: the types each field's values are known to have
    (a block unpacked by ``tarstream.format.rows.Unpacker``): a field whose known types
    are all allowed is not looked at again."""
    return all(
        (kinds is not None and name in kinds and kinds[name] <= allowed)
        or allowed.issuperset(map(type, map(itemgetter(name), samples)))
        for name, allowed in checks
    )


def wrong_kind(value: object, kinds: tuple[type, ...]) -> TypeError:
    expected = " or ".join(k.__name__ for k in kinds)
    return TypeError(f"a packed member holds a {type(value).__name__}, not a {expected}")
