"""The exactly-once audit: what each rank delivered to the trainer, logged as runs of
sample numbers, and a check over the logs of a whole training run.

``Loader(audit=FOLDER)`` appends JSON lines to ``FOLDER/rank-RANK.jsonl``:

- ``start``: an epoch (or its resume) begins on a rank; a fresh start carries ``planned``,
  the runs of dataset-wide sample numbers (the shards' samples end to end) the rank's
  workers are to deliver; a resume names the checkpoint it continues (``resumed_from``).
- ``delivered``: the runs the trainer received since the last record, for items
  ``steps[0]..steps[1]`` of the rank's epoch; written every ``audit_every`` items, at each
  ``state_dict()`` and at the end of the epoch. Worked out from the workers' positions
  (``tarstream.run.elastic.delivered_runs``), never from keys: a record is a few runs.
- ``lost``: runs a lenient reader (``errors="skip"``) lost to a failed shard, as the
  loader's stats report them: positions count them as taken, the check does not.
- ``checkpoint``: ``state_dict()`` was called after ``step`` items; its ``id`` (epoch and
  step, the same on every rank of a run that saves at one step) travels in the state.

``check_logs`` reads every rank's log: records a rank wrote after a checkpoint that a later
run resumed from (work lost when the run stopped) are dropped, then each epoch's delivered
runs are counted against its planned ones. ``tarstream audit FOLDER`` prints the result and
exits 1 when a sample was missed, repeated, delivered without being planned, or lost.
"""

from __future__ import annotations

import base64
import json
import os
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..plan.segments import Plan, spans_of_positions, subtract_spans, union_spans
from ..read.read_shards import ReadShards
from ..stage import State, upstream
from ..world import Context, World
from .elastic import delivered_runs, rest_of_epoch
from .pipeline import Pipeline

__all__ = ["AuditLog", "check_logs", "decode_runs", "encode_runs", "read_logs"]

Runs = list[list[int]]


class AuditLog:
    """One rank's audit log (see the module docstring)."""

    STATE_KEY = "audit"

    def __init__(self, folder: str | os.PathLike[str], pipeline: Pipeline, every: int) -> None:
        if every < 1:
            raise ValueError(f"audit_every must be >= 1, got {every}")
        self.folder, self.pipeline, self.every = Path(folder), pipeline, every
        self.folder.mkdir(parents=True, exist_ok=True)
        self._context: tuple[int, World, Any] | None = None
        self._written: dict[int, np.ndarray] = {}  # worker: spans already logged
        self._step = self._logged_step = self._lost = 0

    # -- the loader's calls ------------------------------------------------------------
    def start(self, epoch: int, world: World, base: State | None, resumed: State | None) -> None:
        """An epoch starts (``resumed``: the state it continues, None: fresh)."""
        rest = rest_of_epoch(self.pipeline.connect, self.pipeline.seed, epoch, base)
        self._context = (epoch, world, rest)
        mark = resumed.get(self.STATE_KEY) if resumed is not None else None
        self._step = self._logged_step = int(mark["step"]) if mark else 0
        self._written = {}
        self._lost = 0
        parts = _own_parts(resumed, world) if resumed and _exact(resumed, world) else {}
        for worker, state in parts.items():  # an exact resume: what each had delivered
            self._written[worker] = self._numbers(worker, state)
        record: dict[str, Any] = {"kind": "start", "resumed_from": mark["id"] if mark else None}
        if resumed is None:
            copies = [self._numbers(w, None, planned=True) for w in range(world.num_workers)]
            record["planned"] = _runs(np.concatenate(copies))
        self._write(record)

    def delivered(self, parts: dict[int, State | None], stats: dict[str, Any]) -> None:
        """The trainer took one more item (``parts``: each worker's state now; ``stats``:
        the loader's)."""
        self._step += 1
        if self._step - self._logged_step >= self.every:
            self.flush(parts, stats)

    def flush(self, parts: dict[int, State | None], stats: dict[str, Any]) -> None:
        """Log what was delivered since the last record (and what a lenient reader lost:
        its positions count those samples as taken)."""
        if self._context is None:
            return
        read = stats.get("read")
        lost = getattr(read, "lost", [])[self._lost :]
        if lost:
            self._write({"kind": "lost", "runs": union_spans(np.asarray(lost)).tolist()})
            self._lost += len(lost)
        if self._step == self._logged_step:
            return
        new = []
        for worker, state in parts.items():
            now = self._numbers(worker, state)
            before = self._written.get(worker, np.zeros((0, 2), np.int64))
            new.append(subtract_spans(now, before))
            self._written[worker] = now
        runs = encode_runs(union_spans(*new)) if new else []
        self._write({"kind": "delivered", "steps": [self._logged_step, self._step], "runs": runs})
        self._logged_step = self._step

    def checkpoint(
        self, parts: dict[int, State | None], stats: dict[str, Any], state: State
    ) -> None:
        """``state_dict()``: log up to here and mark ``state`` with the checkpoint."""
        if self._context is None:
            return
        self.flush(parts, stats)
        mark = {"id": f"{self._context[0]}:{self._step}", "step": self._step}
        self._write({"kind": "checkpoint", "id": mark["id"], "step": self._step})
        state[self.STATE_KEY] = mark

    # -- helpers -----------------------------------------------------------------------
    def _numbers(self, worker: int, state: State | None, planned: bool = False) -> np.ndarray:
        """Spans of sample numbers worker ``worker`` delivered at ``state`` (``planned``:
        its whole plan)."""
        assert self._context is not None
        epoch, world, rest = self._context
        copy = World(world.rank, world.world_size, worker, world.num_workers)
        chain = self.pipeline.connect(Context(self.pipeline.seed, epoch, copy, rest))
        plan = delivered_runs(chain, None if planned else state)  # raises without counts
        reader = upstream(chain, ReadShards)
        assert reader is not None
        if planned:  # the whole plan, not what was delivered of it
            plan = reader.current_plan()
        return _spans(plan, reader.shard_list().sample_starts())

    def _write(self, record: dict[str, Any]) -> None:
        assert self._context is not None
        epoch, world, _ = self._context
        full = {"t": time.time(), "epoch": epoch, "rank": world.rank, **record}
        with open(self.folder / f"rank-{world.rank}.jsonl", "a") as log:
            log.write(json.dumps(full, separators=(",", ":")) + "\n")


def _exact(state: State, world: World) -> bool:
    return (state["world_size"], state["num_workers"]) == (world.world_size, world.num_workers)


def _own_parts(state: State, world: World) -> dict[int, State | None]:
    return {p["worker"]: p["stages"] for p in state["parts"] if p["rank"] == world.rank}


def _spans(plan: Plan, starts: np.ndarray) -> np.ndarray:
    lo = starts[plan.shard] + plan.start
    return union_spans(np.stack([lo, lo + plan.stop - plan.start], axis=1))


def _runs(*spans: np.ndarray) -> Runs:
    rows: Runs = union_spans(*spans).tolist() if spans else []
    return rows


_GAP = 4096  # runs closer than this share one bitmap in a record


def encode_runs(spans: np.ndarray) -> list[list[Any]]:
    """Spans of sample numbers as a record holds them: ``[first, end]`` for a lone run,
    ``[first, end, bits]`` for runs close together (a zlib-packed bitmap in base64), so a
    shuffled order's scattered samples cost about a bit each, not a pair of numbers.

    >>> decode_runs(encode_runs(np.array([[0, 3], [5, 6], [9000, 9001]]))).tolist()
    [[0, 3], [5, 6], [9000, 9001]]
    """
    if not len(spans):
        return []
    cut = np.flatnonzero(spans[1:, 0] - spans[:-1, 1] > _GAP) + 1
    out: list[list[Any]] = []
    for chunk in np.split(spans, cut):
        lo, hi = int(chunk[0, 0]), int(chunk[-1, 1])
        if len(chunk) == 1:
            out.append([lo, hi])
            continue
        edges = np.zeros(hi - lo + 1, np.int8)
        np.add.at(edges, chunk[:, 0] - lo, 1)
        np.add.at(edges, chunk[:, 1] - lo, -1)
        bits = np.packbits(np.cumsum(edges[:-1]) > 0)
        out.append([lo, hi, base64.b64encode(zlib.compress(bits.tobytes())).decode()])
    return out


def decode_runs(rows: list[list[Any]]) -> np.ndarray:
    """The spans ``encode_runs`` wrote."""
    parts = [np.zeros((0, 2), np.int64)]
    for row in rows:
        lo, hi = int(row[0]), int(row[1])
        if len(row) == 2:
            parts.append(np.array([[lo, hi]], np.int64))
            continue
        packed = np.frombuffer(zlib.decompress(base64.b64decode(row[2])), np.uint8)
        bits = np.unpackbits(packed)[: hi - lo]
        parts.append(spans_of_positions(lo + np.flatnonzero(bits)))
    return union_spans(*parts)


# -- the check ---------------------------------------------------------------------------------


def read_logs(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Every record of the logs ``paths`` (files, or folders of ``rank-*.jsonl``), each
    tagged with its file."""
    records = []
    for path in map(Path, paths):
        files = sorted(path.glob("rank-*.jsonl")) if path.is_dir() else [path]
        for file in files:
            for line in file.read_text().splitlines():
                if line.strip():
                    records.append({**json.loads(line), "file": str(file)})
    return records


def check_logs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per epoch: samples planned, delivered, and the runs missed, repeated or delivered
    without being planned, and lost by a lenient reader (``ok`` when there are none)."""
    kept = _drop_lost_work(records)
    planned: dict[int, dict[str, np.ndarray]] = {}  # epoch: rank's file: its last plan
    delivered: dict[int, list[np.ndarray]] = {}
    lost: dict[int, list[np.ndarray]] = {}
    for r in kept:
        epoch = int(r["epoch"])
        if r["kind"] == "start" and r.get("planned") is not None:
            # an epoch started again from nothing plans the same again: counted once
            runs = np.asarray(r["planned"], np.int64).reshape(-1, 2)
            planned.setdefault(epoch, {})[r["file"]] = runs
        elif r["kind"] == "delivered":
            delivered.setdefault(epoch, []).append(decode_runs(r["runs"]))
        elif r["kind"] == "lost":
            lost.setdefault(epoch, []).append(np.asarray(r["runs"], np.int64).reshape(-1, 2))
    out = {}
    for e in sorted(set(planned) | set(delivered)):
        # positions count what a lenient reader lost as taken: it never reached the trainer
        dropped = union_spans(np.zeros((0, 2), np.int64), *lost.get(e, []))
        given = [subtract_spans(runs, dropped) for runs in delivered.get(e, [])]
        figures = _compare(list(planned.get(e, {}).values()), given)
        missed = np.asarray(figures["missed"], np.int64).reshape(-1, 2)
        missed = subtract_spans(missed, dropped)
        figures["missed_samples"] = int((missed[:, 1] - missed[:, 0]).sum())
        figures["lost_samples"] = int((dropped[:, 1] - dropped[:, 0]).sum())
        figures["missed"] = missed.tolist()[:1000]  # the first runs of each
        figures["lost"] = dropped.tolist()[:1000]
        figures["ok"] = figures["ok"] and not len(dropped)
        out[str(e)] = figures
    return {"ok": all(e["ok"] for e in out.values()), "epochs": out}


def _drop_lost_work(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without those a stopped run wrote after the checkpoint a later run resumed
    from. In a rank's file that resumes, what it wrote between the checkpoint and its own
    resume; in the file of a rank the new layout does not have, what it wrote after the
    checkpoint until the first resume from it."""
    files: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, r in enumerate(records):
        files.setdefault(r["file"], []).append((i, r))
    resumes = [r for r in records if r["kind"] == "start" and r.get("resumed_from")]
    dropped: set[int] = set()
    for mark in {r["resumed_from"] for r in resumes}:
        for mine in files.values():
            checkpoints = [r["t"] for _, r in mine if r["kind"] == "checkpoint" and r["id"] == mark]
            for since in checkpoints:
                own = [r["t"] for _, r in mine if r in resumes and r["resumed_from"] == mark]
                later = [t for t in own if t > since] or [
                    r["t"] for r in resumes if r["resumed_from"] == mark and r["t"] > since
                ]
                until = min(later, default=since)
                dropped |= {
                    i for i, r in mine if r["kind"] == "delivered" and since < r["t"] < until
                }
    return [r for i, r in enumerate(records) if i not in dropped]


def _compare(planned: list[np.ndarray], delivered: list[np.ndarray]) -> dict[str, Any]:
    """Count each sample's deliveries against its planned count, on runs."""
    events = []
    for rows, weight in ((planned, 1), (delivered, -1)):
        for block in rows:
            if len(block):
                events.append((block[:, 0], block[:, 1], weight))
    if not events:
        return {
            "ok": True,
            "planned": 0,
            "delivered": 0,
            "missed": [],
            "repeated_samples": 0,
            "repeated": [],
        }
    points = np.unique(np.concatenate([np.concatenate([lo, hi]) for lo, hi, _ in events]))
    balance = np.zeros(len(points), np.int64)  # planned - delivered, from each point on
    given = np.zeros(len(points), np.int64)  # delivered, from each point on
    for lo, hi, weight in events:
        for edges, sign in ((lo, 1), (hi, -1)):
            where = np.searchsorted(points, edges)
            np.add.at(balance, where, sign * weight)
            if weight < 0:
                np.add.at(given, where, sign)
    balance, given = np.cumsum(balance)[:-1], np.cumsum(given)[:-1]
    lengths = np.diff(points)
    missed = union_spans(np.stack([points[:-1], points[1:]], 1)[balance > 0])
    repeated = union_spans(np.stack([points[:-1], points[1:]], 1)[balance < 0])
    return {
        "ok": not len(missed) and not len(repeated),
        "planned": int((lengths * (balance + given)).sum()),
        "delivered": int((lengths * given).sum()),
        "missed": missed.tolist(),
        "repeated_samples": int((repeated[:, 1] - repeated[:, 0]).sum()),
        "repeated": repeated.tolist()[:1000],
    }
