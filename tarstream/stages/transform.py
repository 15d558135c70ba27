"""Per-sample stages: Map, Filter, Select, Rename, ToTuple."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ArgumentError
from ..format.samples import Sample
from ..stage import Stage, Transform

__all__ = ["Filter", "Map", "Rename", "Select", "ToTuple"]


class Map(Transform[Any]):
    """Apply ``fn`` to each item. State: the source's."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        super().__init__()
        if not callable(fn):
            raise ArgumentError(f"Map needs a callable, got {fn!r}")
        self.fn = fn

    def apply(self, item: Any) -> Any:
        return self.fn(item)

    def __repr__(self) -> str:
        return f"Map({getattr(self.fn, '__name__', self.fn)!r})"


class Filter(Stage[Any]):
    """Keep the items for which ``predicate`` is true. State: the source's."""

    def __init__(self, predicate: Callable[[Any], bool]) -> None:
        super().__init__()
        if not callable(predicate):
            raise ArgumentError(f"Filter needs a callable, got {predicate!r}")
        self.predicate = predicate

    def next(self) -> Any:
        source = self.require_source()
        while True:
            item = source.next()
            if self.predicate(item):
                return item

    def __repr__(self) -> str:
        return f"Filter({getattr(self.predicate, '__name__', self.predicate)!r})"


def _field_specs(stage: str, fields: tuple[object, ...]) -> list[str]:
    """The field specs of ``fields``: strings, each possibly several separated by spaces."""
    specs: list[str] = []
    for spec in fields:
        if not isinstance(spec, str):
            raise ArgumentError(f"{stage} takes field names as strings ('jpg;png'), got {spec!r}")
        specs += spec.split()
    if not specs:
        raise ValueError(f"{stage} needs at least one field")
    return specs


def _alternatives(spec: str) -> list[str]:
    names = [n for n in spec.split(";") if n]
    if not names:
        raise ValueError(f"field spec must name at least one field, got {spec!r}")
    return names


def _first_present(sample: Sample, names: list[str], spec: str) -> Any:
    for name in names:
        if name in sample:
            return sample[name]
    raise KeyError(
        f"sample {sample.get('__key__')!r} from {sample.get('__url__')!r} has no field {spec!r} "
        f"(fields: {sorted(k for k in sample if not k.startswith('__'))})"
    )


class Select(Transform[Sample]):
    """Keep only the named fields (``"jpg;png"``: whichever is present) and the metadata.

    ``__key__`` and ``__url__`` are kept. Fields may also be given in one string separated
    by spaces, as webdataset writes them: ``Select("jpg;png cls")``. (webdataset's
    ``select(predicate)`` keeps samples: that is ``filter`` here.)
    """

    passes_values = True

    def __init__(self, *fields: str) -> None:
        super().__init__()
        if len(fields) == 1 and callable(fields[0]):
            raise ArgumentError(
                "select() keeps fields by name; to keep samples for which a function is "
                "true (webdataset's select(predicate)) use filter(predicate)"
            )
        self.fields = [(spec, _alternatives(spec)) for spec in _field_specs("Select", fields)]

    def apply(self, item: Sample) -> Sample:
        out: Sample = {k: item[k] for k in ("__key__", "__url__") if k in item}
        for spec, names in self.fields:
            for name in names:
                if name in item:
                    out[name] = item[name]
                    break
            else:
                _first_present(item, names, spec)
        return out


class Rename(Transform[Sample]):
    """Rename fields: ``Rename(image="jpg;png", label="cls")`` (new name = old name(s)).

    ``keep=False`` (as in webdataset): the sample has only the renamed fields, besides
    ``__key__`` and ``__url__``.
    """

    passes_values = True

    def __init__(self, *, keep: bool = True, **mapping: str) -> None:
        super().__init__()
        if not isinstance(keep, bool):
            raise ArgumentError(f"Rename's keep must be True or False, got {keep!r}")
        if not mapping:
            raise ValueError("Rename needs at least one new=old pair")
        for new, old in mapping.items():
            if not isinstance(old, str):
                raise ArgumentError(
                    f"Rename({new}=...) takes the old field name(s) as a string "
                    f"('jpg;png'), got {old!r}"
                )
        self.keep = keep
        self.mapping = {new: _alternatives(old) for new, old in mapping.items()}

    def apply(self, item: Sample) -> Sample:
        if not self.keep:
            only: Sample = {k: item[k] for k in ("__key__", "__url__") if k in item}
            for new, names in self.mapping.items():
                only[new] = _first_present(item, names, ";".join(names))
            return only
        out = dict(item)
        for new, names in self.mapping.items():
            for name in names:
                if name in out:
                    out[new] = out.pop(name)
                    break
            else:
                _first_present(item, names, ";".join(names))
        return out


class ToTuple(Transform[tuple[Any, ...]]):
    """Turn each sample into a tuple of fields: ``ToTuple("jpg;png", "cls")``, or in one
    string separated by spaces, as webdataset writes it: ``ToTuple("jpg;png cls")``."""

    passes_values = True

    def __init__(self, *fields: str) -> None:
        super().__init__()
        self.fields = [(spec, _alternatives(spec)) for spec in _field_specs("ToTuple", fields)]
        # Every field a single name (the common case): looked up directly, per sample.
        single = all(len(names) == 1 for _, names in self.fields)
        self._names = [names[0] for _, names in self.fields] if single else []

    def apply(self, item: Sample) -> tuple[Any, ...]:
        if self._names:
            try:
                return tuple([item[name] for name in self._names])
            except (KeyError, TypeError):
                pass  # the error names the field below
        return tuple(_first_present(item, names, spec) for spec, names in self.fields)
