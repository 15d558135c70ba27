"""Where a sidecar says samples and members lie, checked: what no shard could hold (FORMAT.md,
"Sidecar index"). Offsets on 512-byte blocks (a block's elements apart), samples in order inside
the shard, each member's header and data inside its sample, none overlapping another."""

from __future__ import annotations

import numpy as np

__all__ = ["layout_problem"]

_BLOCK = 512


def layout_problem(
    size: int,
    offsets: np.ndarray,
    starts: np.ndarray,
    moff: np.ndarray,
    msize: np.ndarray,
    virtual: np.ndarray,
) -> str | None:
    """What is impossible about where a sidecar says samples and members lie, if anything:
    a shard of ``size`` bytes, each sample's ``offsets`` (and the end marker's), the first
    member of each (``starts``), each member's data offset and size, and whether each
    member is an element of a block (``virtual``: it has no header of its own and starts
    anywhere)."""
    count = len(starts) - 1
    offsets, starts = offsets.astype(np.int64), starts.astype(np.int64)
    moff, msize = moff.astype(np.int64), msize.astype(np.int64)
    if count and (int(starts[0]) != 0 or (np.diff(starts) < 1).any()):
        return "a sample without members"
    if virtual.all():  # blocks only: a sample is its element (the checks below, fewer)
        return _elements_problem(size, offsets, starts, moff, msize)
    if not virtual.any():  # no blocks: members with headers (the checks below, fewer)
        return _members_problem(size, offsets, starts, moff, msize)
    sample = np.repeat(np.arange(count), np.diff(starts))
    in_block = np.zeros(count, dtype=bool)
    in_block[sample[virtual]] = True
    if (offsets[:-1][~in_block] % _BLOCK).any() or offsets[-1] % _BLOCK:
        return "an offset that is not at a 512-byte block"
    if (moff[~virtual] % _BLOCK).any():
        return "an offset that is not at a 512-byte block"
    if (np.diff(starts)[in_block] != 1).any():
        return "a block element that shares its sample with other members"
    if (np.diff(offsets) < 1).any() or int(offsets[-1]) + 2 * _BLOCK > size:
        return "samples out of order, or past the shard's size"
    header = np.where(virtual, 0, _BLOCK)
    inside = (moff - header >= offsets[sample]) & (moff + msize <= offsets[sample + 1])
    if not inside.all():
        return f"member {int(np.argmin(inside))} lies outside its sample"
    ends = moff + (msize + _BLOCK - 1) // _BLOCK * _BLOCK
    same = sample[1:] == sample[:-1]
    if (same & (moff[1:] - _BLOCK < ends[:-1])).any():
        return "members overlapping each other or a header"
    return None


def _elements_problem(
    size: int, offsets: np.ndarray, starts: np.ndarray, moff: np.ndarray, msize: np.ndarray
) -> str | None:
    """``layout_problem`` of a shard of blocks only: each sample one element, which lies
    in its sample's bytes, in order, the end's offset at a 512-byte block."""
    if len(starts) != len(offsets) or (starts != np.arange(len(starts))).any():
        return "a block element that shares its sample with other members"
    if offsets[-1] % _BLOCK:
        return "an offset that is not at a 512-byte block"
    if (np.diff(offsets) < 1).any() or int(offsets[-1]) + 2 * _BLOCK > size:
        return "samples out of order, or past the shard's size"
    inside = (moff >= offsets[:-1]) & (moff + msize <= offsets[1:])
    if not inside.all():
        return f"member {int(np.argmin(inside))} lies outside its sample"
    return None


def _members_problem(
    size: int, offsets: np.ndarray, starts: np.ndarray, moff: np.ndarray, msize: np.ndarray
) -> str | None:
    """``layout_problem`` of a shard without blocks: every sample and member at a 512-byte
    block, in order, each member's header and data inside its sample, none overlapping."""
    if (offsets & (_BLOCK - 1)).any() or (moff & (_BLOCK - 1)).any():
        return "an offset that is not at a 512-byte block"
    if (offsets[1:] <= offsets[:-1]).any() or int(offsets[-1]) + 2 * _BLOCK > size:
        return "samples out of order, or past the shard's size"
    sample = np.repeat(np.arange(len(starts) - 1), starts[1:] - starts[:-1])
    inside = (moff - _BLOCK >= offsets[sample]) & (moff + msize <= offsets[1:][sample])
    if not inside.all():
        return f"member {int(np.argmin(inside))} lies outside its sample"
    ends = moff + ((msize + _BLOCK - 1) & -_BLOCK)
    if ((sample[1:] == sample[:-1]) & (moff[1:] - _BLOCK < ends[:-1])).any():
        return "members overlapping each other or a header"
    return None
