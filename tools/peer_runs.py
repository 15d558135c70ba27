"""What each library does in ``bench peers``: write a workload's samples in its own format,
and read them back as typed values (``txt`` str, ``cls`` int, ``json`` dict; ``jpg``
bytes). One function per (library, case); each returns how many samples went by and a
checksum of their values, which the driver compares with the samples written.

Runs in the peers' environment (``.venv-peers``), where all four libraries are installed.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import workloads

SMALL_FIELDS = ("txt", "cls", "json")
IMAGE_FIELDS = ("jpg", "cls")
#: Samples per shard (tarstream, webdataset), chunk (litdata) or shard (MDS, by size).
PER_SHARD = {"small": 2000, "images": 200}
BATCH = {"small": 256, "images": 64}
SHUFFLE_BUFFER = 1000


def samples(workload: str, n: int) -> list[dict[str, Any]]:
    make = workloads.small_samples if workload == "small" else workloads.image_samples
    return list(make(n))


def fields_of(workload: str) -> tuple[str, ...]:
    return SMALL_FIELDS if workload == "small" else IMAGE_FIELDS


# --- checksums of typed values, one sample or one batch (columns) at a time -------------


def sample_sum(s: dict[str, Any]) -> int:
    """The checksum of one sample: its class, its text's or image's length and, for the
    small workload, the id in its JSON; a wrong type fails here."""
    if "jpg" in s:
        return int(s["cls"]) + len(bytes(s["jpg"]))
    assert isinstance(s["txt"], str) and isinstance(s["json"], dict), (type(s["txt"]), s)
    return int(s["cls"]) + len(s["txt"]) + int(s["json"]["id"])


def batch_sum(columns: dict[str, Any]) -> tuple[int, int]:
    """(samples, checksum) of a batch of columns, however the library collated them: a
    column is a list, an array or tensor, or (JSON collated by torch) a dict of columns."""
    cls = _ints(columns["cls"])
    if "jpg" in columns:
        return len(cls), sum(cls) + sum(len(bytes(j)) for j in columns["jpg"])
    meta = columns["json"]
    ids = _ints(meta["id"] if isinstance(meta, dict) else [m["id"] for m in meta])
    assert all(isinstance(t, str) for t in columns["txt"])
    return len(cls), sum(cls) + sum(len(t) for t in columns["txt"]) + sum(ids)


def _ints(column: Any) -> list[int]:
    """A column of integers (a list, array or tensor) as Python ints, in one call where it
    is an array or tensor (an element at a time, a tensor costs a microsecond each)."""
    values = column.tolist() if hasattr(column, "tolist") else column
    return [int(v) for v in values]


#: When the first sample (or batch) arrived: perf_counter, samples so far, CPU seconds.
FIRST: dict[str, float] = {}


def _arrived(n: int) -> None:
    if not FIRST:
        FIRST.update(at=time.perf_counter(), n=n, cpu=time.process_time())


def fold(items: Iterable[dict[str, Any]]) -> tuple[int, int]:
    n = total = 0
    for s in items:
        n += 1
        total += sample_sum(s)
        _arrived(n)
    return n, total


def fold_batches(batches: Iterable[dict[str, Any]]) -> tuple[int, int]:
    n = total = 0
    for b in batches:
        k, t = batch_sum(b)
        n += k
        total += t
        _arrived(n)
    return n, total


# --- writers -----------------------------------------------------------------------------


def write_tarstream(workload: str, rows: list[dict[str, Any]], out: Path, **kw: Any) -> None:
    import tarstream

    pattern = str(out / f"{workload}-%06d.tar")
    with tarstream.ShardWriter(pattern, max_samples=PER_SHARD[workload], **kw) as w:
        for s in rows:
            w.write(s)


def write_tarstream_packed(workload: str, rows: list[dict[str, Any]], out: Path) -> None:
    """``ShardWriter(pack="small")``, as ``tarstream-write`` writes by default."""
    write_tarstream(workload, rows, out, pack="small")


def write_tarstream_parallel(workload: str, source: Path, out: Path, workers: int) -> None:
    """``tarstream-write SOURCE --workers N``: the source is a JSON-lines index (small) or
    a directory of files (images), as a user's would be."""
    from tarstream.write.parallel import write_parallel

    pattern = str(out / f"{workload}-%06d.tar")
    files = {} if workload == "small" else None  # the index holds values, no file paths
    per_shard = PER_SHARD[workload]
    write_parallel(str(source), pattern, workers=workers, max_samples=per_shard, files=files)


def write_webdataset(workload: str, rows: list[dict[str, Any]], out: Path) -> None:
    import webdataset as wds

    pattern = str(out / f"{workload}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=PER_SHARD[workload], verbose=0) as w:
        for s in rows:
            w.write(s)


def write_mds(workload: str, rows: list[dict[str, Any]], out: Path) -> None:
    from streaming import MDSWriter

    columns = (
        {"txt": "str", "cls": "int", "json": "json"}
        if workload == "small"
        else {"jpg": "bytes", "cls": "int"}
    )
    size = sum(len(s.get("txt", s.get("jpg", b""))) + 64 for s in rows) // len(rows)
    limit = size * PER_SHARD[workload]
    names = fields_of(workload)
    with MDSWriter(out=str(out), columns=columns, size_limit=limit) as w:
        for s in rows:
            w.write({f: s[f] for f in names})


def write_litdata(workload: str, rows: list[dict[str, Any]], out: Path) -> None:
    from litdata.streaming.writer import BinaryWriter

    names = fields_of(workload)
    w = BinaryWriter(str(out), chunk_size=PER_SHARD[workload])
    for i, s in enumerate(rows):
        w.add_item(i, {f: s[f] for f in names})
    w.done()
    w.merge()


def write_hf(workload: str, rows: list[dict[str, Any]], out: Path) -> None:
    """HF datasets: an Arrow table saved in shards of the others' size (what
    ``load_dataset(..., streaming=True)`` then streams)."""
    import datasets

    datasets.disable_progress_bars()
    names = fields_of(workload)
    table = datasets.Dataset.from_list([{f: s[f] for f in names} for s in rows])
    table.save_to_disk(str(out), num_shards=max(1, len(rows) // PER_SHARD[workload]))


def machine() -> dict[str, Any]:
    """What the figures are measured on: the CPU, its cores, the system and Python (the
    ratios to the peers move with the machine: a library making a system call per sample
    pays what the machine charges for one)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
    }


# --- readers -----------------------------------------------------------------------------


def _manifest(data: Path) -> str:
    return str(next(data.glob("_*.manifest.json")))


def _urls(data: Path) -> list[str]:
    return sorted(str(p) for p in data.glob("*.tar"))


#: JPEGs are delivered as bytes by every library (decoding them would time Pillow alone).
_KEEP_JPEG = {"jpg": None}


def tarstream_raw(data: Path, workload: str) -> Iterator[dict[str, Any]]:
    import tarstream

    stream = tarstream.TarStream(_manifest(data))
    return iter(stream.decode(decoders=_KEEP_JPEG))


def tarstream_batches(data: Path, workload: str, workers: int) -> Iterator[dict[str, Any]]:
    import tarstream

    stream = tarstream.TarStream(_manifest(data), seed=1, shuffle_shards=True)
    if workload == "small":
        stream = stream.shuffle(SHUFFLE_BUFFER)
    pipeline = stream.decode(decoders=_KEEP_JPEG).batch(BATCH[workload])
    if workers == 0:
        return iter(pipeline)
    return iter(tarstream.Loader(pipeline, num_workers=workers))


def webdataset_raw(data: Path, workload: str) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    return iter(wds.WebDataset(_urls(data), shardshuffle=False).decode())


def webdataset_batches(data: Path, workload: str, workers: int) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    names = fields_of(workload)
    dataset = wds.WebDataset(_urls(data), shardshuffle=100, seed=1)
    if workload == "small":
        dataset = dataset.shuffle(SHUFFLE_BUFFER)
    batched = dataset.decode().to_tuple(*names).batched(BATCH[workload])
    loader: Iterable[Any] = batched
    if workers:
        loader = wds.WebLoader(batched, batch_size=None, num_workers=workers)
    return (dict(zip(names, b, strict=True)) for b in loader)


def litdata_raw(data: Path, workload: str) -> Iterator[dict[str, Any]]:
    import litdata

    return iter(litdata.StreamingDataset(str(data)))


def litdata_batches(data: Path, workload: str, workers: int) -> Iterator[dict[str, Any]]:
    import litdata

    dataset = litdata.StreamingDataset(str(data), shuffle=workload == "small", seed=1)
    batch = BATCH[workload]
    kw: dict[str, Any] = {"collate_fn": _columns} if workload == "images" else {}
    return iter(litdata.StreamingDataLoader(dataset, batch_size=batch, num_workers=workers, **kw))


def mds_raw(data: Path, workload: str) -> Iterator[dict[str, Any]]:
    """MosaicML's fastest way in one process: ``ds[i]`` in order (its iterator delivered
    about 1,000 samples/s here, waiting on its shard-preparing thread)."""
    from streaming import StreamingDataset

    dataset = StreamingDataset(local=str(data), shuffle=False, batch_size=1)
    return (dataset[i] for i in range(len(dataset)))


def mds_batches(data: Path, workload: str, workers: int) -> Iterator[dict[str, Any]]:
    from streaming import StreamingDataset
    from torch.utils.data import DataLoader

    batch = BATCH[workload]
    dataset = StreamingDataset(
        local=str(data), shuffle=workload == "small", shuffle_seed=1, batch_size=batch
    )
    collate = _columns if workload == "images" else None
    return iter(DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate))


def _hf_stream(data: Path) -> Any:
    import datasets

    files = sorted(str(p) for p in data.glob("*.arrow"))
    return datasets.load_dataset("arrow", data_files=files, split="train", streaming=True)


def hf_raw(data: Path, workload: str) -> Iterator[dict[str, Any]]:
    """HF datasets streaming the saved Arrow shards, in order."""
    return iter(_hf_stream(data))


def hf_batches(data: Path, workload: str, workers: int) -> Iterator[dict[str, Any]]:
    from torch.utils.data import DataLoader

    stream = _hf_stream(data)
    if workload == "small":  # its shard shuffle and a buffer of the same size
        stream = stream.shuffle(seed=1, buffer_size=SHUFFLE_BUFFER)
    batch = BATCH[workload]
    collate = _columns if workload == "images" else None
    return iter(DataLoader(stream, batch_size=batch, num_workers=workers, collate_fn=collate))


def _columns(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Batch bytes as a list (torch's default collate makes no tensor of them either);
    litdata's memoryviews become bytes (they cannot leave a worker otherwise)."""
    return {
        k: [bytes(s[k]) if isinstance(s[k], memoryview) else s[k] for s in samples]
        for k in samples[0]
    }


READERS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "tarstream": (tarstream_raw, tarstream_batches),
    "tarstream_packed": (tarstream_raw, tarstream_batches),
    "litdata": (litdata_raw, litdata_batches),
    "mosaicml": (mds_raw, mds_batches),
    "webdataset": (webdataset_raw, webdataset_batches),
    "hf_datasets": (hf_raw, hf_batches),
}


#: What each library imports on first use; imported before the clock starts, so that a
#: measurement times the reading and writing, not the start of Python.
MODULES = {
    "tarstream": ["tarstream", "tarstream.run.pipeline", "tarstream.run.loader"],
    "litdata": ["litdata"],
    "mosaicml": ["streaming"],
    "webdataset": ["webdataset"],
    "hf": ["datasets"],
}


def import_first(system: str) -> None:
    import importlib

    import torch.utils.data  # noqa: F401 - every library here uses it

    for module in MODULES[system.split("_", 1)[0]]:
        importlib.import_module(module)


def clean_shared_memory() -> None:
    """MosaicML leaves shared memory of a process that ended; clear it between runs."""
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
