#!/usr/bin/env python3
"""``bench quality``: shuffle quality at equal memory, tarstream beside MosaicML's py1e.

    python3 tools/dev.py bench quality [--seeds 8] [--json PATH]

Runs in ``.venv-peers`` (MosaicML streaming is there; its numpy pin keeps it out of
``.venv``) and calls ``streaming.base.shuffle.get_shuffle`` itself on the same shard sizes.
Two layouts: 20 shards of 2,500 samples, and 200 shards of 100 to 900 samples (seeded).
For each memory M (samples held or needed at once: tarstream's shuffle buffer; py1e's
block, the span each shard's samples are spread over, whose shards must all be at hand):

- ``tarstream``: the default order, ``TarStream(manifest, shuffle_shards=True).shuffle(M)``
  (4 shards read at once, ``interleave`` left at its default);
- ``buffer only``: the same with ``interleave=1``, tarstream's order before interleaving;
- ``py1e``: ``get_shuffle("py1e", sizes, num_canonical_nodes=1, seed, epoch, M)``;
- ``permutation``: a uniform random permutation (the ideal).

tarstream's orders come from ``tarstream.planned_order`` (references, no data). The figures
(``tarstream.plan.quality``) are means over ``--seeds`` seeds: same-shard successor rate
(lower is better), displacement error (the mean distance of the 10/50/90% quantiles of how
far samples move from what a uniform permutation gives; lower is better), and MosaicML's
entropies of neighbour distances between sample numbers and between shard numbers (higher
is better). Prints JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from streaming.base.shuffle import get_shuffle

from tarstream import TarStream, planned_order
from tarstream.format.manifest import Manifest
from tarstream.plan.quality import order_quality

_MEMORY = (1_000, 2_000, 10_000)


def _layouts() -> dict[str, list[int]]:
    rng = np.random.default_rng(0)
    return {"20 x 2,500": [2500] * 20, "200 x 100-900": rng.integers(100, 901, 200).tolist()}


def _manifest(folder: Path, name: str, sizes: list[int]) -> str:
    shards = [f"{name}-{i:06d}.tar" for i in range(len(sizes))]
    path = folder / f"{name}.manifest.json"
    path.write_text(Manifest(shards, sizes, [n * 600 for n in sizes], ["txt"]).to_json())
    return str(path)


def _figures(order: np.ndarray, starts: np.ndarray) -> dict[str, float]:
    q = order_quality(order, starts)
    error = np.mean([abs(q.displacement[k] - q.displacement_uniform[k]) for k in q.displacement])
    return {
        "same_shard_successor": q.same_shard_successor,
        "displacement_error": float(error),
        "sample_entropy": q.sample_entropy,
        "shard_entropy": q.shard_entropy,
    }


def _orders(manifest: str, sizes: list[int], memory: int) -> dict[str, Callable[[int], Any]]:
    shard_sizes = np.asarray(sizes, dtype=np.int64)

    def tarstream_order(seed: int, interleave: int | None) -> np.ndarray:
        stream = TarStream(manifest, seed=seed, shuffle_shards=True, interleave=interleave)
        return planned_order(stream.shuffle(memory))

    def py1e(seed: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "block size smaller than shard size": measured
            return get_shuffle("py1e", shard_sizes, 1, seed, 0, memory)

    return {
        "tarstream": lambda seed: tarstream_order(seed, None),
        "buffer only": lambda seed: tarstream_order(seed, 1),
        "py1e": py1e,
        "permutation": lambda seed: np.random.default_rng(seed).permutation(sum(sizes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for layout, sizes in _layouts().items():
            manifest = _manifest(Path(folder), f"q{len(sizes)}", sizes)
            starts = np.concatenate([[0], np.cumsum(sizes)])[:-1]
            for memory in _MEMORY:
                for system, make in _orders(manifest, sizes, memory).items():
                    runs = []
                    for seed in range(args.seeds):
                        order = np.asarray(make(seed))
                        assert sorted(order.tolist()) == list(range(sum(sizes)))  # each once
                        runs.append(_figures(order, starts))
                    mean = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
                    result.setdefault(layout, {}).setdefault(str(memory), {})[system] = mean
                    rows.append((layout, memory, system, mean))
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print(
        "\n| shards | memory | order | same-shard successor | displacement error "
        "| sample entropy | shard entropy |"
    )
    print("|---|---|---|---|---|---|---|")
    for layout, memory, system, m in rows:
        print(
            f"| {layout} | {memory:,} | {system} | {m['same_shard_successor']:.3f} | "
            f"{m['displacement_error']:.3f} | {m['sample_entropy']:.2f} | "
            f"{m['shard_entropy']:.2f} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
