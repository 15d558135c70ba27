"""The reader's samples in interleaved order: a group of segments open at once, the next
sample taken from the one the order (``tarstream.plan.interleave``) names.

Each segment of a group is read front to back by its own shard reader, so interleaving
``k`` holds ``k`` open shards and their read buffers (``k * read_size`` bytes, plus each
remote shard's read-ahead blocks), never samples. The reader's state stays (segment,
offset): the group's first segment and the items taken from the group; and, once a
lenient reader's shard failed in the group, which segments did (a resumed group does not
open them again: their places in the order give nothing, as they did).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Literal, Protocol, cast

from ..errors import ArgumentError, ShardError
from ..format.samples import Sample
from ..plan.interleave import Interleaved
from ..plan.segments import Plan
from ..world import Context, derive_seed
from .counting import GroupEnd, no_count, taken_in_order

__all__ = ["interleaved", "order_of"]


class ReadShards(Protocol):
    """What this module uses of ``tarstream.read.read_shards.ReadShards``."""

    errors: Literal["strict", "skip"]
    _plan: Plan
    _segment: int
    _offset: int
    _live: Callable[[], int]
    failed_in_group: list[int]

    def segment_samples(self, number: int, offset: int) -> Iterator[Sample]: ...
    def check_count(self, number: int, taken: int) -> None: ...
    def count_failure(self, e: ShardError, segment_number: int, taken: int) -> None: ...


def order_of(plan: Plan, k: int, context: Context) -> Interleaved | None:
    """The order of ``plan`` read ``k`` segments at once in ``context`` (None: one at a
    time)."""
    if k == 1:
        return None
    if plan.bounds is None:
        raise ArgumentError(
            f"interleave={k} needs sample counts: give a manifest, or build sidecars with "
            "`tarstream index`"
        )
    world = context.world
    return Interleaved(plan, k, derive_seed(context.seed, context.epoch, world.rank, world.worker))


def interleaved(reader: ReadShards, order: Interleaved) -> Iterator[Sample]:
    """Every sample of ``reader``'s plan from its (segment, offset) on, in ``order``."""
    plan = reader._plan
    while reader._segment < len(plan):
        first = reader._segment
        yield from _group(reader, order, first)
        reader._segment = order.group_end(first)
        reader._offset = 0
        reader.failed_in_group = []


def _group(reader: ReadShards, order: Interleaved, first: int) -> Iterator[Sample]:
    labels = order.labels(first)
    taken = order.offsets(first, reader._offset).tolist()
    sources = _open(reader, order, first, taken)
    try:
        rest = labels[reader._offset :].tolist()
        if None not in sources:
            rest = yield from _in_c(
                reader, order, cast(list[Iterator[Sample]], sources), rest, taken, first
            )
        for label in rest:
            source = sources[label]
            if source is not None:
                try:
                    sample = next(source)
                except (ShardError, StopIteration) as e:
                    _failed(reader, first + label, taken[label], e)
                    sources[label] = None
                else:
                    taken[label] += 1
                    reader._offset += 1
                    yield sample
                    continue
            reader._offset += 1  # a failed segment's place in the order: nothing to give
        for i, source in enumerate(sources):
            if source is not None:
                for _ in source:  # its end: the end-of-archive marker where it ends the shard
                    taken[i] += 1
                reader.check_count(first + i, taken[i])
    finally:
        for source in sources:
            if source is not None:
                source.close()  # type: ignore[attr-defined]


def _in_c(
    reader: ReadShards,
    order: Interleaved,
    sources: list[Iterator[Sample]],
    rest: list[int],
    taken: list[int],
    first: int,
) -> Generator[Sample, None, list[int]]:
    """``_group``'s loop while no source has failed, run in C (``taken_in_order``): the
    samples of ``rest`` (labels) until the end, or until a source fails or ends early
    (then dealt with as ``_group`` does). Returns the labels left after that one."""
    samples, live = taken_in_order(sources, rest)
    reader._live, base = live, reader._offset
    failure: ShardError | StopIteration | None = None
    try:
        yield from samples
        failure = StopIteration()  # a source ended early: ``map`` ends quietly
    except GroupEnd:
        pass
    except ShardError as e:
        failure = e
    except GeneratorExit:  # closed after a sample
        reader._offset = base + live()
        raise
    except BaseException:  # from a source, which took a label
        reader._offset = base + live() - 1
        raise
    finally:
        reader._live = no_count
    done = live() - 1  # samples given: the label taken last gave none
    reader._offset = base + done
    taken[:] = order.offsets(first, reader._offset).tolist()  # rest[:done] counted, in C
    if failure is None:
        return []
    label = rest[done]
    _failed(reader, first + label, taken[label], failure)
    sources[label] = cast(Iterator[Sample], None)
    reader._offset += 1  # a failed segment's place in the order
    return rest[done + 1 :]


def _open(
    reader: ReadShards, order: Interleaved, first: int, taken: list[int]
) -> list[Iterator[Sample] | None]:
    """A reader of each segment of the group from where it was (None: nothing left, or
    its shard would not open, or failed before, in a lenient reader)."""
    sources: list[Iterator[Sample] | None] = []
    for i, offset in enumerate(taken):
        source = None
        if offset < _size(order, first + i) and first + i not in reader.failed_in_group:
            try:
                source = reader.segment_samples(first + i, offset)
            except ShardError as e:
                _failed(reader, first + i, offset, e)
        sources.append(source)
    return sources


def _size(order: Interleaved, segment: int) -> int:
    return int(order.bounds[segment + 1] - order.bounds[segment])


def _failed(reader: ReadShards, segment: int, taken: int, error: Exception) -> None:
    """A segment's shard ended early or failed: raise, or (lenient) count it and go on."""
    if isinstance(error, StopIteration):
        reader.check_count(segment, taken)  # raises: fewer samples than counted
        return
    if reader.errors == "strict" or not isinstance(error, ShardError):
        raise error
    reader.count_failure(error, segment, taken)
    reader.failed_in_group.append(segment)
