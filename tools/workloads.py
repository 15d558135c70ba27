"""Seeded benchmark workloads of DESIGN §10, generated once and cached on disk.

- small: 200,000 samples of ``txt`` (0.1-1 KB), ``cls`` and ``json``, 20 shards.
- images: 20,000 JPEG 256x256 (~20 KB) with ``cls``, 20 shards.

Each workload is written twice: by tarstream's ShardWriter (shards + sidecars + manifest)
under ``tarstream/``, and by webdataset's ShardWriter (plain shards, no sidecars) under
``webdataset/``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SHARDS = 20
#: Written into a workload's DONE file; a workload written under another stamp (an older
#: shard or sidecar format) is written again.
STAMP = "3: sidecars in .tarstream/, manifest _NAME.manifest.json\n"
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
    "had",
    "not",
    "but",
    "also",
    "first",
    "one",
    "their",
    "its",
    "new",
    "after",
    "who",
    "they",
    "two",
    "been",
    "other",
    "into",
    "more",
    "some",
    "time",
    "over",
    "most",
    "when",
    "during",
    "there",
    "only",
    "many",
    "city",
    "school",
    "film",
    "state",
    "world",
]


def small_samples(n: int = 200_000, seed: int = 0) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    for i in range(n):
        length = int(rng.integers(100, 1000))
        words = rng.choice(len(_WORDS), size=length // 4)
        text = " ".join(_WORDS[w] for w in words)[:length]
        label = int(rng.integers(0, 1000))
        meta = {"id": i, "label": label, "score": round(float(rng.random()), 4)}
        yield {"__key__": f"{i:08d}", "txt": text, "cls": label, "json": meta}


def _jpeg(rng: np.random.Generator) -> bytes:
    from PIL import Image

    base = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((256, 256), Image.BICUBIC)
    pixels = np.asarray(image).astype(np.int16)
    pixels += rng.integers(-12, 13, size=pixels.shape, dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=80)
    return out.getvalue()


def image_samples(n: int = 20_000, seed: int = 0) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield {"__key__": f"{i:08d}", "jpg": _jpeg(rng), "cls": int(rng.integers(0, 1000))}


def _clip(rng: np.random.Generator, frames: int = 48, size: int = 256) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        base = rng.integers(0, 256, size=(size // 16, size // 16, 3), dtype=np.uint8)
        for t in range(frames):
            moved = np.roll(base, t, axis=1).repeat(16, axis=0).repeat(16, axis=1)
            noise = rng.integers(-8, 9, size=moved.shape, dtype=np.int16)
            pixels = np.clip(moved.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def video_samples(n: int = 40, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Clips of 48 frames, 256x256 at 24 fps (2 s), H.264 in mp4."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield {"__key__": f"{i:08d}", "mp4": _clip(rng), "cls": int(rng.integers(0, 10))}


def _encode_for_webdataset(sample: dict[str, Any]) -> dict[str, Any]:
    out = dict(sample)
    if "json" in out:
        out["json"] = json.dumps(out["json"], separators=(",", ":")).encode()
    return out


def _write(root: Path, name: str, samples: list[dict[str, Any]]) -> None:
    import webdataset as wds

    import tarstream

    per_shard = -(-len(samples) // SHARDS)
    ts_dir, wds_dir = root / name / "tarstream", root / name / "webdataset"
    for d in (ts_dir, wds_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    with tarstream.ShardWriter(str(ts_dir / f"{name}-%06d.tar"), max_samples=per_shard) as w:
        for s in samples:
            w.write(s)
    with wds.ShardWriter(str(wds_dir / f"{name}-%06d.tar"), maxcount=per_shard, verbose=0) as w:
        for s in samples:
            w.write(_encode_for_webdataset(s))


def ensure(root: Path, name: str) -> Path:
    """Generate workload ``name`` under ``root`` unless it is already there; return its dir."""
    done = root / name / "DONE"
    if not done.exists() or done.read_text() != STAMP:
        print(f"generating the {name} workload under {root / name} (once)", flush=True)
        generate = {"small": small_samples, "images": image_samples, "video": video_samples}[name]
        _write(root, name, list(generate()))
        done.write_text(STAMP)
    return root / name


def shard_pattern(workload_dir: Path, writer: str, count: int = SHARDS) -> str:
    name = workload_dir.name
    return str(workload_dir / writer / f"{name}-{{000000..{count - 1:06d}}}.tar")


def default_root() -> Path:
    return Path(
        os.environ.get("TARSTREAM_BENCH_DIR", Path(__file__).parent.parent / ".bench-cache")
    )
