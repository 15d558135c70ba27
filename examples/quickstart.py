"""Quickstart: write shards from a small generated sample, then stream them back.

    python3 tools/dev.py quickstart            # sets up .venv on first use, then runs this

1. Writes 200 samples (a 64x64 JPEG, a caption and a class id each) into 4 shards with
   sidecars and a manifest under ./quickstart-out/.
2. Reads them back through TarStream and checks every sample and its bytes.
3. Streams a shuffled, decoded, batched pipeline through a DataLoader with 2 workers and
   checks that every sample arrives exactly once.
4. Stops a 2-worker DataLoader mid-epoch, saves its state as JSON, resumes in a new one,
   and checks that the two halves are exactly the uninterrupted epoch.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import tarstream

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart-out")
SAMPLES = 200


def make_sample(i: int, rng: np.random.Generator) -> dict[str, object]:
    colour = rng.integers(0, 256, size=3, dtype=np.uint8)
    pixels = np.broadcast_to(colour, (64, 64, 3)).copy()
    pixels[16:48, 16:48] = 255 - colour
    return {
        "__key__": f"sample{i:05d}",
        "jpg": pixels,  # encoded as JPEG by the field's extension
        "txt": f"a square of colour {tuple(int(c) for c in colour)}",
        "cls": i % 10,
        "json": {"index": i, "split": "train"},
    }


def main() -> None:
    rng = np.random.default_rng(0)
    written = [make_sample(i, rng) for i in range(SAMPLES)]

    start = time.perf_counter()
    with tarstream.ShardWriter(str(OUT / "train-%06d.tar"), max_samples=50) as writer:
        for sample in written:
            writer.write(sample)
    manifest = writer.manifest()
    print(
        f"wrote {manifest.total_samples} samples into {len(manifest.shards)} shards "
        f"({manifest.total_bytes / 1e6:.1f} MB) in {time.perf_counter() - start:.2f}s: "
        f"{OUT / 'train-{000000..000003}.tar'} + sidecars + {writer.manifest_path}"
    )

    tar_stream = tarstream.TarStream  # first use imports the pipeline (and torch): not timed
    start = time.perf_counter()
    stream = tar_stream(str(OUT / "_train.manifest.json"), sidecars="require")
    seen: dict[str, dict[str, object]] = {}
    for sample in stream:
        key = str(sample["__key__"])
        assert key not in seen, f"{key} delivered twice"
        seen[key] = sample
    elapsed = time.perf_counter() - start
    assert len(seen) == SAMPLES, f"expected {SAMPLES} samples, got {len(seen)}"
    first = seen["sample00000"]
    image = Image.open(io.BytesIO(first["jpg"]))  # type: ignore[arg-type]
    assert first["txt"] == str(written[0]["txt"]).encode() and first["cls"] == b"0"
    print(
        f"read {len(seen)} samples back, each exactly once, in {elapsed * 1000:.1f} ms; "
        f"sample00000: {image.format} {image.size[0]}x{image.size[1]}, "
        f"txt={first['txt']!r}, cls={first['cls']!r}"
    )

    pipeline = (
        tarstream.TarStream(str(OUT / "_train.manifest.json"), seed=7, shuffle_shards=True)
        .shuffle(64)
        .decode("torchrgb8")
        .to_tuple("jpg", "cls", "__key__")
        .batch(16)
    )
    loader = tarstream.Loader(pipeline, num_workers=2)
    keys = [key for images, labels, batch_keys in loader for key in batch_keys]
    images, labels, _ = next(iter(loader))
    assert sorted(keys) == sorted(seen), "the DataLoader lost or repeated samples"
    print(
        f"DataLoader with 2 workers: {len(loader)} batches, {len(keys)} samples, each once; "
        f"a batch: images {tuple(images.shape)} {images.dtype}, labels {tuple(labels.shape)}"
    )

    def epoch_loader() -> tarstream.Loader:
        stream = tarstream.TarStream(str(OUT / "_train.manifest.json"), seed=7, shuffle_shards=True)
        return tarstream.Loader(stream.shuffle(64).batch(8), num_workers=2)

    full = [batch["__key__"] for batch in epoch_loader()]
    first = epoch_loader()
    iterator = iter(first)
    head = [next(iterator)["__key__"] for _ in range(9)]
    saved = json.dumps(first.state_dict())  # what a checkpoint would store
    del iterator  # the job stops; its workers had prefetched batches the trainer never saw
    resumed = epoch_loader()
    resumed.load_state_dict(json.loads(saved))
    tail = [batch["__key__"] for batch in resumed]
    assert head + tail == full, "resume did not continue the epoch exactly"
    print(
        f"resume: stopped after {len(head)} batches, saved {len(saved)} bytes of state, "
        f"a new 2-worker loader delivered the other {len(tail)}: exactly the uninterrupted "
        "epoch"
    )
    print("quickstart OK")


if __name__ == "__main__":
    main()
