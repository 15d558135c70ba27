"""``bench decode``: tarstream's decoders beside bare Pillow and bare PyAV on the same bytes.

- images workload (``--image-shards`` shards of 256x256 JPEGs): bare Pillow
  (``np.asarray(Image.open(b).convert("RGB"))``) against ``decode("torchrgb8")`` to uint8 CHW
  tensors in one process; and ``decode("torchrgb8", size=128)`` (reduced-size JPEG decode,
  then resized to a shorter side of 128) against the full decode.
- video workload (40 H.264 clips, 48 frames of 256x256 each): bare PyAV decoding every
  frame to an RGB array against ``decode()`` to ``Video`` frames; rates in frames/s.

All runs read the shards' bytes in the same way; runs alternate, one warm-up pass each is
not counted, medians over ``--reps``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import workloads


def bench_decode(args: argparse.Namespace) -> dict[str, Any]:
    import av
    import numpy as np
    from PIL import Image

    import tarstream

    images = workloads.ensure(args.root, "images")
    video = workloads.ensure(args.root, "video")
    image_pattern = workloads.shard_pattern(images, "tarstream", args.image_shards)
    video_pattern = workloads.shard_pattern(video, "tarstream")
    jpegs = [s["jpg"] for s in tarstream.TarStream(image_pattern)]
    clips = [s["mp4"] for s in tarstream.TarStream(video_pattern)]

    def bare_pillow() -> int:
        for data in jpegs:
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        return len(jpegs)

    def tarstream_images(**options: Any) -> Callable[[], int]:
        stream = tarstream.TarStream(image_pattern).decode("torchrgb8", only=["jpg"], **options)
        return lambda: sum(1 for _ in stream)

    def bare_pyav() -> int:
        frames = 0
        for data in clips:
            with av.open(io.BytesIO(data), format="mp4") as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    frame.to_ndarray(format="rgb24")
                    frames += 1
        return frames

    video_stream = tarstream.TarStream(video_pattern).decode(only=["mp4"])

    def tarstream_video() -> int:
        return sum(len(s["mp4"].frames) for s in video_stream)

    runs: dict[str, Callable[[], int]] = {
        "bare_pillow": bare_pillow,
        "tarstream_images": tarstream_images(),
        "tarstream_images_size_128": tarstream_images(size=128),
        "bare_pyav_frames": bare_pyav,
        "tarstream_video_frames": tarstream_video,
    }
    for run in runs.values():  # warm-up
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name, run in runs.items():
            start = time.perf_counter()
            n = run()
            rates[name].append(n / (time.perf_counter() - start))
    result = {
        name: {"median": round(statistics.median(r)), "runs": [round(x) for x in r]}
        for name, r in rates.items()
    }
    med = {name: r["median"] for name, r in result.items()}
    return {
        "images": f"{len(jpegs)} JPEGs 256x256 -> uint8 CHW tensors (images/s)",
        "video": f"{len(clips)} H.264 clips of 48 frames 256x256 (frames/s)",
        "warmup_runs_excluded": 1,
        **result,
        "ratios": {
            "images_vs_bare_pillow": round(med["tarstream_images"] / med["bare_pillow"], 3),
            "size_128_vs_full_decode": round(
                med["tarstream_images_size_128"] / med["tarstream_images"], 2
            ),
            "video_vs_bare_pyav": round(med["tarstream_video_frames"] / med["bare_pyav_frames"], 3),
        },
    }
