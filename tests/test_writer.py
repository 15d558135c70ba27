"""ShardWriter: determinism, atomic shards, key validation, encoding, rollover."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import re
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import tarstream
from tarstream.codecs.encode import encode_field
from tarstream.format.header import member_header
from tarstream.format.keys import validate_key
from tarstream.format.sidecar import ShardIndex, sidecar_url

from .conftest import files_under, make_samples, write_dataset


def test_two_writes_of_the_same_input_are_byte_identical(tmp_path: Path) -> None:
    samples = make_samples(40)
    write_dataset(tmp_path / "a", samples, max_samples=15)
    write_dataset(tmp_path / "b", samples, max_samples=15)
    a, b = files_under(tmp_path / "a"), files_under(tmp_path / "b")
    assert sorted(a) == [
        ".tarstream/train-000000.tar.idx",
        ".tarstream/train-000001.tar.idx",
        ".tarstream/train-000002.tar.idx",
        "_train.manifest.json",
        "train-000000.tar",
        "train-000001.tar",
        "train-000002.tar",
    ]
    assert a == b


def test_members_are_ustar_regular_files_with_fixed_metadata_in_sorted_field_order(
    tmp_path: Path,
) -> None:
    write_dataset(tmp_path, [{"__key__": "k", "txt": "t", "cls": 1, "a.json": [1]}])
    with tarfile.open(tmp_path / "train-000000.tar") as tf:
        infos = tf.getmembers()
    assert [i.name for i in infos] == ["k.a.json", "k.cls", "k.txt"]
    assert all(i.isreg() and i.mtime == 0 and i.uid == 0 and i.gid == 0 for i in infos)
    assert all(i.mode == 0o644 and not i.pax_headers for i in infos)
    raw = (tmp_path / "train-000000.tar").read_bytes()
    assert raw[257:263] == b"ustar\x00"
    assert len(raw) % 10240 == 0


def test_a_name_longer_than_100_bytes_gets_a_pax_header_and_round_trips(tmp_path: Path) -> None:
    key = "d" * 60 + "/" + "k" * 60
    write_dataset(tmp_path, [{"__key__": key, "txt": "long"}])
    with tarfile.open(tmp_path / "train-000000.tar") as tf:
        assert tf.getnames() == [key + ".txt"]
    [sample] = list(tarstream.TarStream(str(tmp_path / "train-000000.tar")))
    assert sample["__key__"] == key and sample["txt"] == b"long"


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@settings(max_examples=300, deadline=None)
@given(
    name=st.one_of(
        st.text(st.characters(max_codepoint=127, exclude_characters="\x00"), max_size=120),
        st.text(min_size=1, max_size=60),
        st.sampled_from(["k" * 96 + ".txt", "k" * 97 + ".txt", "a/b/0001.seg.png"]),
    ),
    size=st.one_of(
        st.integers(0, 1 << 20), st.sampled_from([0, 511, 512, 8**11 - 1, 8**11, 1 << 40])
    ),
)
def test_a_member_header_is_byte_for_byte_what_tarfile_writes(name: str, size: int) -> None:
    assert member_header(name, size) == _tarfile_header(name, size)


class _Key(str):
    """A key that is not exactly ``str``: validated by the rules alone, no quick match."""


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("ab-_./\\é\x01 "), min_size=0, max_size=12))
def test_the_quick_check_of_usual_keys_agrees_with_the_rules(key: str) -> None:
    def verdict(k: str) -> bool:
        try:
            validate_key(k)
        except tarstream.InvalidKeyError:
            return False
        return True

    assert verdict(key) == verdict(_Key(key))


@pytest.mark.parametrize("fsync", [False, True])
def test_a_crash_mid_write_leaves_no_file_under_a_final_shard_name(
    tmp_path: Path, fsync: bool
) -> None:
    script = f"""
import os, tarstream
w = tarstream.ShardWriter({str(tmp_path / "t-%06d.tar")!r}, max_samples=5, fsync={fsync})
for i in range(8):
    w.write({{"__key__": f"{{i:03d}}", "txt": "x" * 1000}})
os._exit(3)  # dies with shard 1 half written: no close, no cleanup
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == 3
    names = sorted(os.listdir(tmp_path))
    partial = r"\.t-00000[01]\.tar\.\d+-[0-9a-f]{8}\.partial"
    assert all(re.fullmatch(partial, n) for n in names if n.endswith(".partial"))
    if fsync and not (tmp_path / ".tarstream" / "t-000000.tar.idx").exists():
        # shard 0 was still being put in place by the writer's thread (renamed or not):
        # without its sidecar it is not complete, and the resumed write redoes it
        kept = 0
    else:  # without fsync shard 0 was put in place before write() returned
        assert len(names) == 3 and names[1:] == [".tarstream", "t-000000.tar"]
        assert os.listdir(tmp_path / ".tarstream") == ["t-000000.tar.idx"]
        shard = str(tmp_path / "t-000000.tar")
        assert len(list(tarstream.TarStream(shard, sidecars="require"))) == 5
        kept = 5
    # run again with resume: the complete shard is kept, the rest written, nothing left over
    samples = [{"__key__": f"{i:03d}", "txt": "x" * 1000} for i in range(8)]
    with tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"), max_samples=5, resume=True) as w:
        assert w.resumed == kept
        for sample in samples[w.resumed :]:
            w.write(sample)
    assert sorted(os.listdir(tmp_path)) == [
        ".tarstream",
        "_t.manifest.json",
        "t-000000.tar",
        "t-000001.tar",
    ]
    assert [s["__key__"] for s in tarstream.TarStream(str(tmp_path / "_t.manifest.json"))] == [
        f"{i:03d}" for i in range(8)
    ]


def test_a_disk_error_while_a_shard_is_put_in_place_stops_the_write_and_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync, shards = os.fsync, []

    def failing_fsync(fd: int) -> None:
        if os.fstat(fd).st_size >= 10240:  # a shard (a sidecar is smaller)
            shards.append(fd)
            if len(shards) == 2:
                raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with (
        pytest.raises(OSError, match="Input/output error"),
        tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"), max_samples=5) as w,
    ):
        for i in range(100):  # the error comes with a later write, or with close()
            w.write({"__key__": f"{i:03d}", "txt": "x" * 1000})
    assert i == 15  # shard 1 failed while shard 2 was written; the write ending that says so
    assert sorted(os.listdir(tmp_path)) == [".tarstream", "t-000000.tar"]
    assert os.listdir(tmp_path / ".tarstream") == ["t-000000.tar.idx"]
    shard = str(tmp_path / "t-000000.tar")
    assert len(list(tarstream.TarStream(shard, sidecars="require"))) == 5


def test_an_exception_in_the_with_block_removes_the_partial_shard_and_writes_no_manifest(
    tmp_path: Path,
) -> None:
    with (
        pytest.raises(RuntimeError),
        tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"), max_samples=2) as w,
    ):
        for i in range(3):
            w.write({"__key__": str(i), "txt": "x"})
        raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == [".tarstream", "t-000000.tar"]
    assert os.listdir(tmp_path / ".tarstream") == ["t-000000.tar.idx"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must not be empty"),
        ("/abs/k", "must be relative"),
        ("a/../k", "'..'"),
        ("a/./k", "'.'"),
        ("a//k", "empty"),
        ("a/k.v", "'.' in its last component"),
        ("a\x00k", "control character"),
        ("a\nk", "control character"),
        ("a\\k", "separator"),
        ("k" * 241, "above the limit 240"),
        (7, "must be a str"),
    ],
)
def test_invalid_keys_are_rejected_with_a_reason(tmp_path: Path, key: object, message: str) -> None:
    writer = tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"))
    with pytest.raises(tarstream.InvalidKeyError, match=message):
        writer.write({"__key__": key, "txt": "x"})


def test_dotted_directories_and_unicode_keys_are_valid(tmp_path: Path) -> None:
    write_dataset(tmp_path, [{"__key__": "v1.2/ünï/0001", "seg.png": b"p"}])
    [sample] = list(tarstream.TarStream(str(tmp_path / "train-000000.tar"), sidecars="ignore"))
    assert sample["__key__"] == "v1.2/ünï/0001" and sample["seg.png"] == b"p"


def test_a_repeated_key_is_an_error(tmp_path: Path) -> None:
    with tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"), max_samples=1) as w:
        w.write({"__key__": "a", "txt": "1"})
        w.write({"__key__": "b", "txt": "2"})
        with pytest.raises(tarstream.DuplicateKeyError, match="'a' was already written"):
            w.write({"__key__": "a", "txt": "3"})


@pytest.mark.parametrize("field", ["__meta__", "__key2__", "a/b", ".txt", "txt.", "a..b", ""])
def test_reserved_and_malformed_field_names_are_errors(tmp_path: Path, field: str) -> None:
    writer = tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"))
    with pytest.raises(tarstream.InvalidKeyError, match="field"):
        writer.write({"__key__": "k", field: b"x"})


def test_url_metadata_from_a_reader_is_ignored_so_read_samples_can_be_written_back(
    tmp_path: Path, dataset: tuple[Path, list[dict[str, object]]]
) -> None:
    directory, _ = dataset
    read = list(tarstream.TarStream(str(directory / "_train.manifest.json")))
    write_dataset(tmp_path / "copy", read, max_samples=10)
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar"):
        assert (tmp_path / "copy" / name).read_bytes() == (directory / name).read_bytes()


def test_missing_key_and_empty_samples_are_errors(tmp_path: Path) -> None:
    with tarstream.ShardWriter(str(tmp_path / "t-%06d.tar")) as w:
        with pytest.raises(tarstream.InvalidKeyError, match="no '__key__'"):
            w.write({"txt": "x"})
        with pytest.raises(tarstream.WriteError, match="no fields"):
            w.write({"__key__": "k"})


def test_values_are_encoded_by_the_field_extension() -> None:
    assert encode_field("k", "txt", "héllo") == "héllo".encode()
    assert encode_field("k", "cls", 7) == b"7"
    assert encode_field("k", "cls", np.int64(3)) == b"3"
    assert encode_field("k", "score", 0.5) == b"0.5"
    assert encode_field("k", "bin", bytearray(b"ab")) == b"ab"
    assert json.loads(encode_field("k", "json", {"a": [1, 2]})) == {"a": [1, 2]}
    assert json.loads(encode_field("k", "meta.json", [1, "x"])) == [1, "x"]
    import msgpack

    assert msgpack.unpackb(encode_field("k", "msgpack", {"a": 1})) == {"a": 1}
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    loaded = np.load(io.BytesIO(encode_field("k", "npy", array)), allow_pickle=False)
    assert loaded.dtype == np.float32 and (loaded == array).all()
    npz = np.load(io.BytesIO(encode_field("k", "npz", {"a": array})), allow_pickle=False)
    assert (npz["a"] == array).all()
    pixels = np.zeros((4, 5, 3), dtype=np.uint8)
    pixels[1, 2] = (255, 0, 0)
    png = Image.open(io.BytesIO(encode_field("k", "seg.png", pixels)))
    assert png.format == "PNG" and png.size == (5, 4) and png.getpixel((2, 1)) == (255, 0, 0)
    jpg = Image.open(io.BytesIO(encode_field("k", "jpg", Image.new("RGBA", (8, 8)))))
    assert jpg.format == "JPEG" and jpg.mode == "RGB"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("txt", object(), "cannot encode a value of type object"),
        ("txt", np.zeros(3), "needs extension npy"),
        ("npy", np.array([object()]), "object arrays"),
        ("txt", Image.new("L", (2, 2)), "needs an image extension"),
        ("json", {"a": object()}, "cannot encode dict"),
    ],
)
def test_values_that_cannot_be_encoded_name_the_sample_field_and_type(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(tarstream.EncodeError, match=message) as info:
        encode_field("k1", field, value)
    assert "sample 'k1'" in str(info.value) and f"field {field!r}" in str(info.value)


def test_rollover_at_max_samples(tmp_path: Path) -> None:
    writer = write_dataset(tmp_path, make_samples(23), max_samples=10)
    manifest = writer.manifest()
    assert manifest.samples == [10, 10, 3]
    assert [Path(s).name for s in writer.shards] == [
        "train-000000.tar",
        "train-000001.tar",
        "train-000002.tar",
    ]


def test_rollover_at_max_bytes_keeps_every_shard_within_the_limit(tmp_path: Path) -> None:
    samples = [{"__key__": f"{i:03d}", "bin": bytes(3000)} for i in range(20)]
    writer = write_dataset(tmp_path, samples, max_bytes=20480)
    sizes = [os.path.getsize(s) for s in writer.shards]
    assert all(size <= 20480 for size in sizes)
    # 512 header + 3072 data = 3584 bytes a sample: 5 fit with the end marker, a 6th would not
    assert writer.manifest().samples == [5, 5, 5, 5]


def test_a_sample_larger_than_max_bytes_gets_a_shard_of_its_own(tmp_path: Path) -> None:
    samples = [
        {"__key__": "a", "bin": b"1"},
        {"__key__": "b", "bin": bytes(50_000)},
        {"__key__": "c", "bin": b"3"},
    ]
    writer = write_dataset(tmp_path, samples, max_bytes=10240)
    assert writer.manifest().samples == [1, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": "t.tar"}, "exactly one integer placeholder"),
        ({"pattern": "t-%d-%d.tar"}, "exactly one integer placeholder"),
        ({"pattern": "s3://b/t-%06d.tar"}, "local paths only"),
        ({"max_samples": 0}, "max_samples must be >= 1, got 0"),
        ({"max_bytes": -1}, "max_bytes must be >= 1, got -1"),
        ({"start_index": -1}, "start_index must be >= 0, got -1"),
    ],
)
def test_bad_writer_options_are_rejected_at_construction(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    pattern = kwargs.pop("pattern", str(tmp_path / "t-%06d.tar"))
    with pytest.raises(ValueError, match=message):
        tarstream.ShardWriter(pattern, **kwargs)  # type: ignore[arg-type]


def test_write_after_close_is_an_error(tmp_path: Path) -> None:
    w = tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"))
    w.close()
    with pytest.raises(tarstream.WriteError, match="closed"):
        w.write({"__key__": "k", "txt": "x"})


def test_what_the_writer_encodes_decode_gives_back_and_webdataset_reads(tmp_path: Path) -> None:
    import numpy as np
    import torch
    import webdataset as wds

    sample = {
        "__key__": "k",
        "json.gz": {"x": [1, 2]},
        "txt.gz": "hello",
        "pth": torch.arange(4),
        "list.pth": [torch.ones(2), 3],
        "cls": True,
        "json": False,
        "npy": np.arange(3, dtype=np.int16),
        "png": np.full((2, 3, 1), 7, np.uint8),
    }
    write_dataset(tmp_path, [sample])
    [got] = list(tarstream.TarStream(str(tmp_path / "_train.manifest.json")).decode("l8"))
    assert got["json.gz"] == {"x": [1, 2]} and got["txt.gz"] == "hello"
    assert torch.equal(got["pth"], torch.arange(4)) and got["list.pth"][1] == 3
    assert got["cls"] == 1 and got["json"] is False
    assert (got["npy"] == np.arange(3)).all() and got["png"].shape == (2, 3)
    [theirs] = list(wds.WebDataset(str(tmp_path / "train-000000.tar"), shardshuffle=False).decode())
    assert theirs["json.gz"] == {"x": [1, 2]} and theirs["cls"] == 1


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("png", "FLOATS", "uint8 array of H x W"),
        ("cls", 3.5, "holds an integer"),
        ("json", object(), "cannot encode"),
    ],
)
def test_values_an_extension_cannot_hold_are_encode_errors(
    tmp_path: Path, field: str, value: object, said: str
) -> None:
    import numpy as np

    value = np.zeros((2, 3, 3)) if value == "FLOATS" else value
    writer = tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"))
    with pytest.raises(tarstream.EncodeError, match=said):
        writer.write({"__key__": "k", field: value})


def test_a_writer_reports_its_progress_after_each_shard(tmp_path: Path) -> None:
    events: list[tarstream.WriteProgress] = []
    with tarstream.ShardWriter(
        str(tmp_path / "p-%06d.tar"), max_samples=4, progress=events.append
    ) as w:
        for i in range(10):
            w.write({"__key__": f"{i:03d}", "txt": "x" * 100})
        assert w.progress.samples == 10 and w.progress.shards == 2
    assert [(e.samples, e.shards) for e in events] == [(4, 1), (8, 2), (10, 3), (10, 3)]
    sizes = sum(p.stat().st_size for p in tmp_path.glob("p-*.tar"))
    assert events[-1].bytes == sizes and events[-1].samples_per_s > 0


def _write_all(directory: Path, resume: bool = False) -> int:
    samples = [{"__key__": f"{i:04d}", "txt": "y" * (i * 37 % 500), "cls": i} for i in range(40)]
    with tarstream.ShardWriter(str(directory / "r-%06d.tar"), max_bytes=6000, resume=resume) as w:
        for sample in samples[w.resumed :]:
            w.write(sample)
    return w.resumed


def test_a_resumed_write_gives_the_bytes_of_one_that_never_stopped(tmp_path: Path) -> None:
    _write_all(tmp_path / "whole")
    reference = files_under(tmp_path / "whole")
    assert len([n for n in reference if n.endswith(".tar")]) > 4
    # a shard renamed but its sidecar never written, and no manifest: shard 2 is redone
    cut = tmp_path / "cut"
    _write_all(cut)
    (cut / ".tarstream" / "r-000002.tar.idx").unlink()
    (cut / "_r.manifest.json").unlink()
    (cut / ".r-000003.tar.123-deadbeef.partial").write_bytes(b"half")
    assert _write_all(cut, resume=True) == sum(
        tarstream.ShardIndex.from_bytes(
            (cut / ".tarstream" / f"r-{i:06d}.tar.idx").read_bytes(), url=""
        ).count
        for i in range(2)
    )
    assert files_under(cut) == reference
    # a complete write run again changes nothing
    assert _write_all(cut, resume=True) == 40 and files_under(cut) == reference


@pytest.mark.parametrize(
    ("name", "pack"), [("t-%06d.tar", "none"), ("t-%06d.tar", "small"), ("t-%06d.tar.gz", "small")]
)
def test_each_sample_s_recorded_crc_is_that_of_its_bytes(
    tmp_path: Path, name: str, pack: str
) -> None:
    # the sink's thread computes the CRCs of whole-member samples while the writer works
    # out those of block elements: in a shard of both, each must land on its own sample
    samples = [
        {"__key__": f"{i:03d}", "txt": f"s{i}", **({"bin": bytes([i]) * 9000} if i % 3 else {})}
        for i in range(40)
    ]
    with tarstream.ShardWriter(str(tmp_path / name), max_samples=15, pack=pack) as w:  # type: ignore[arg-type]
        for sample in samples:
            w.write(sample)
    assert len(w.shards) == 3
    for path in w.shards:
        index = ShardIndex.from_bytes(Path(sidecar_url(path)).read_bytes(), url=path)
        raw = Path(path).read_bytes()
        data = gzip.decompress(raw) if path.endswith(".gz") else raw
        assert index.checksums is not None and len(index.checksums) == index.count
        spans = itertools.pairwise(int(o) for o in index.offsets)
        assert index.checksums.tolist() == [zlib.crc32(data[a:b]) for a, b in spans]
