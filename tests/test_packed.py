"""Packed small fields (FORMAT.md, "Packed fields"): read the same as plain members on every
path, smaller on disk, checked as strictly, and readable by webdataset."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tarstream
from tarstream.codecs.encode import _plain_json
from tarstream.errors import DecodeError, ShardFormatError, SidecarError
from tarstream.format.packed import BLOCK_FIELD, FAST_UNPACK, PACKED_FIELD
from tarstream.format.samples import build_sidecar
from tarstream.format.sidecar import ShardIndex

from .conftest import files_under, sidecar_of, write_dataset

LARGE = bytes(range(256)) * 40  # a 10 KiB field: large, a member of its own


def _samples(n: int = 60) -> list[dict[str, Any]]:
    """Samples of every kind of value: typed text, class and JSON; JSON given as text; a
    dict with int keys (not typed: JSON makes its keys strings); small and large bytes; a
    float; and now and then a large field, so blocks are cut and mixed samples written."""
    out = []
    for i in range(n):
        s: dict[str, Any] = {
            "__key__": f"d/{i:04d}",
            "txt": "ключ " * (i % 9) + f"text {i}",
            "cls": i % 5 - 2,
            "json": {"i": i, "tags": ["a", i], "score": i / 3, "none": None, "ok": i % 2 == 0},
        }
        if i % 4 == 1:
            s["meta.json"] = b'{"given": "as bytes"}'
        if i % 6 == 2:
            s["ids.json"] = {1: "int keys"}  # stored as bytes: JSON turns keys into strings
        if i % 5 == 3:
            s["mask.bin"] = bytes([i]) * 100
            s["score.txt"] = 0.5 + i
        if i % 10 == 7:
            s["big.bin"] = LARGE
        out.append(s)
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same samples written plain, with blocks, and with every small field packed."""
    root = tmp_path_factory.mktemp("packed")
    out = {}
    for pack in ("none", "small", "all"):
        write_dataset(root / pack, _samples(), max_samples=25, pack=pack)
        out[pack] = root / pack
    return out


def _manifest(directory: Path) -> str:
    return str(directory / "_train.manifest.json")


def _no_url(sample: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sample.items() if k != "__url__"}


@pytest.mark.parametrize("pack", ["small", "all"])
@pytest.mark.parametrize("sidecars", ["auto", "ignore"])
def test_packed_samples_read_as_the_plain_ones_raw_and_decoded(
    layouts: dict[str, Path], pack: str, sidecars: str
) -> None:
    plain = _manifest(layouts["none"])
    pattern = str(layouts[pack] / "train-{000000..000002}.tar")
    source = _manifest(layouts[pack]) if sidecars == "auto" else pattern
    packed = tarstream.TarStream(source, sidecars=sidecars)  # type: ignore[arg-type]
    assert [_no_url(s) for s in packed] == [_no_url(s) for s in tarstream.TarStream(plain)]
    decoded = [_no_url(s) for s in tarstream.TarStream(plain).decode()]
    assert [_no_url(s) for s in packed.decode()] == decoded
    assert [_no_url(s) for s in packed.shuffle(7).decode()] != decoded  # shuffled, same items
    assert sorted(map(str, (_no_url(s) for s in packed.shuffle(7).decode()))) == sorted(
        map(str, decoded)
    )
    assert decoded[0]["txt"] == "text 0" and decoded[3]["cls"] == 1


def test_decoded_packed_values_are_typed_without_a_round_trip_through_bytes(
    layouts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tarstream.codecs import decoders

    calls: list[str] = []

    class Counting:
        def decode(self, text: str) -> Any:
            calls.append(text)
            return {}

    monkeypatch.setattr(decoders, "_JSON", Counting())
    monkeypatch.setattr(decoders, "_fast_loads", None)  # every parse through _JSON
    stream = tarstream.TarStream(_manifest(layouts["small"])).shuffle(5).decode()
    samples = list(stream)
    blocks = [s for s in samples if "big.bin" not in s]  # the others are plain members
    assert all(s["json"]["tags"] == ["a", int(s["__key__"][2:])] for s in blocks)
    assert all(isinstance(s["cls"], int) for s in samples)
    as_bytes = [  # JSON given as bytes, JSON with int keys, JSON of samples written plain
        f for s in _samples() for f in s if f.endswith("json") and (f != "json" or "big.bin" in s)
    ]
    assert len(calls) == len(as_bytes)


def test_custom_decoders_get_the_plain_bytes_of_packed_fields(layouts: dict[str, Path]) -> None:
    stream = tarstream.TarStream(_manifest(layouts["small"]))
    got = next(iter(stream.decode(decoders={"txt": lambda b: ("custom", b)})))
    assert got["txt"] == ("custom", b"text 0") and got["cls"] == -2
    got = next(iter(stream.decode(only="cls")))
    assert got["cls"] == -2 and got["txt"] == b"text 0"  # not decoded: the stored bytes
    got = next(iter(stream.map(lambda s: s).decode()))  # a map between: bytes, then decoded
    assert got["json"]["i"] == 0


def test_packing_makes_small_samples_several_times_smaller(layouts: dict[str, Path]) -> None:
    def size(directory: Path) -> int:
        return sum(len(b) for b in files_under(directory).values())

    assert size(layouts["small"]) * 2 < size(layouts["none"])
    assert size(layouts["all"]) < size(layouts["small"])
    with tarfile.open(layouts["small"] / "train-000000.tar") as tar:
        names = tar.getnames()
    blocks = [n for n in names if n.endswith(BLOCK_FIELD)]
    assert len(blocks) >= 2 and len(names) < 25  # cut where a sample has a large field
    assert "d/0007.big.bin" in names and "d/0007.txt" in names  # "small": a mixed sample is plain
    with tarfile.open(layouts["all"] / "train-000000.tar") as tar:
        assert f"d/0007.{PACKED_FIELD}" in tar.getnames() and "d/0007.txt" not in tar.getnames()


@pytest.mark.parametrize("pack", ["small", "all"])
def test_the_same_samples_give_the_same_bytes_and_indexing_gives_the_same_sidecar(
    layouts: dict[str, Path], tmp_path: Path, pack: str
) -> None:
    write_dataset(tmp_path, _samples(), max_samples=25, pack=pack)
    assert files_under(tmp_path) == files_under(layouts[pack])
    for shard in sorted(tmp_path.glob("*.tar")):
        with open(shard, "rb") as f:
            rebuilt = build_sidecar(f, str(shard), name=shard.name)
        assert rebuilt.to_bytes() == sidecar_of(shard).read_bytes()
        index = ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url=str(shard))
        assert index.packed and "txt" in index.sample_fields


def test_random_access_selection_and_splits_work_on_packed_shards(
    layouts: dict[str, Path],
) -> None:
    plain = tarstream.ShardDataset(_manifest(layouts["none"]), decode=True)
    for pack in ("small", "all"):
        ds = tarstream.ShardDataset(_manifest(layouts[pack]), decode=True)
        assert [_no_url(ds[i]) for i in (59, 0, 7, 33)] == [
            _no_url(plain[i]) for i in (59, 0, 7, 33)
        ]
        assert ds.index("d/0042") == 42
        picked = tarstream.ShardDataset(_manifest(layouts[pack]), fields="cls json")
        assert (
            sorted(picked[3]) == ["__key__", "__url__", "cls", "json"] and picked[3]["cls"] == b"1"
        )
        stream = tarstream.TarStream(_manifest(layouts[pack])).select_columns("txt")
        assert [sorted(s) for s in stream][5] == ["__key__", "__url__", "txt"]
        halves = tarstream.TarStream(_manifest(layouts[pack])).split(2)
        keys = [s["__key__"] for half in halves for s in half]
        assert sorted(keys) == [f"d/{i:04d}" for i in range(60)]


def test_webdataset_reads_a_packed_shard_and_one_map_unpacks_it(layouts: dict[str, Path]) -> None:
    wds = pytest.importorskip("webdataset")
    shard = str(layouts["small"] / "train-000000.tar")
    seen = list(wds.WebDataset(shard, shardshuffle=False).decode())
    first = seen[0][BLOCK_FIELD]  # a block: a list of samples, each with its key
    assert isinstance(first, list) and first[0]["__key__"] == "d/0000"
    assert first[0]["txt"] == "text 0" and first[0]["json"]["tags"] == ["a", 0]

    def unpack(samples: Any) -> Any:  # FORMAT.md's recipe for webdataset users
        for s in samples:
            if BLOCK_FIELD in s:
                yield from s[BLOCK_FIELD]
            else:
                yield {
                    **{k: v for k, v in s.items() if k != PACKED_FIELD},
                    **s.get(PACKED_FIELD, {}),
                }

    keys = [s["__key__"] for s in unpack(seen)]
    assert keys == [f"d/{i:04d}" for i in range(25)]


def _corrupt(shard: Path, offset: int, data: bytes) -> None:
    raw = bytearray(shard.read_bytes())
    raw[offset : offset + len(data)] = data
    shard.write_bytes(bytes(raw))


def test_a_damaged_block_is_an_error_naming_its_shard_sample_and_offset(
    layouts: dict[str, Path], tmp_path: Path
) -> None:
    write_dataset(tmp_path, _samples(5), pack="small")
    shard = tmp_path / "train-000000.tar"
    index = ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url="x")
    at = int(index.member_offset[3]) + 5
    _corrupt(shard, at, b"Z")
    with pytest.raises(ShardFormatError, match="checksum") as caught:
        list(tarstream.TarStream(_manifest(tmp_path)))
    assert caught.value.member == f"d/0003.{BLOCK_FIELD}" and caught.value.offset == int(
        index.offsets[3]
    )
    assert "train-000000.tar" in str(caught.value)
    got = [
        s["__key__"] for s in tarstream.TarStream(_manifest(tmp_path), verify=False, errors="skip")
    ]
    assert len(got) <= 5  # never a wrong sample: the damaged one fails to unpack or is skipped


@pytest.mark.parametrize("sidecars", ["auto", "ignore"])
def test_a_map_with_an_integer_key_inside_a_packed_value_is_refused_on_both_paths(
    tmp_path: Path, sidecars: str
) -> None:
    samples = [{"__key__": k, "json": {"x": {"k": i}}} for i, k in enumerate("abc")]
    write_dataset(tmp_path, samples, pack="small")
    shard = tmp_path / "train-000000.tar"
    raw = shard.read_bytes()
    assert raw.count(b"\xa1k\x01") == 1
    shard.write_bytes(raw.replace(b"\xa1k\x01", b"\xcc\x05\x01"))  # b: {"k": 1} -> {5: 1}
    stream = tarstream.TarStream(str(shard), sidecars=sidecars, verify=False)  # type: ignore[arg-type]
    with pytest.raises(ShardFormatError, match="msgpack") as caught:
        list(stream.decode())
    # the sample (through the sidecar), or the block, named by its first sample (scanning)
    assert caught.value.member == f"{'b' if sidecars == 'auto' else 'a'}.{BLOCK_FIELD}"


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(max_size=8)
)
_KEYS = st.text(max_size=4) | st.integers(-5, 5) | st.binary(max_size=2)


def _values(depth: int) -> st.SearchStrategy[Any]:
    return st.recursive(
        _SCALARS | st.builds(msgpack.ExtType, st.integers(0, 5), st.binary(max_size=3)),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
        max_leaves=depth,
    )


@pytest.mark.skipif(FAST_UNPACK is None, reason="msgspec (the fast extra) is not installed")
@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_KEYS, _values(12), max_size=4), st.binary(max_size=3))
def test_the_fast_unpacker_gives_what_msgpack_gives_or_refuses(
    values: dict[Any, Any], tail: bytes
) -> None:
    """The sidecar path unpacks elements with msgspec where it can (``FAST_UNPACK``) and
    with msgpack where msgspec refuses: it never gives what msgpack would not give (bytes,
    ext types, non-string keys at any depth, deep values, extra bytes go to msgpack)."""
    assert FAST_UNPACK is not None
    for data in (msgpack.packb(values, use_bin_type=True), tail + b"\x81\xa1k" + tail):
        try:
            fast = FAST_UNPACK(data)
        except Exception:
            continue  # msgpack decides
        slow = msgpack.unpackb(data, raw=False)
        assert repr(fast) == repr(slow)  # the same values, of the same types (NaN too)


def test_a_sidecar_naming_another_key_than_the_element_is_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, _samples(4), pack="small")
    shard = tmp_path / "train-000000.tar"
    doc = msgpack.unpackb(sidecar_of(shard).read_bytes())
    doc["keys"][2] = "d/9999"
    del doc["sample_crc32"]  # an old-style sidecar without checksums: the key still guards
    sidecar_of(shard).write_bytes(msgpack.packb(doc))
    stream = tarstream.TarStream(str(shard))
    with pytest.raises(ShardFormatError, match="d/9999") as caught:
        list(stream)
    assert caught.value.member == f"d/9999.{BLOCK_FIELD}"


def test_a_packed_value_of_the_wrong_kind_is_an_error_not_a_value(tmp_path: Path) -> None:
    members = {"k.txt": b"fine", f"k.{PACKED_FIELD}": msgpack.packb({"cls": "three"})}
    shard = tmp_path / "t.tar"
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DecodeError, match="packed member holds a str"):
        list(tarstream.TarStream(str(shard)).decode())
    with pytest.raises(ShardFormatError, match="'cls'"):  # raw: no bytes for a str
        list(tarstream.TarStream(str(shard)))
    with pytest.raises(ShardFormatError, match="'cls'"):  # nor for a decoder of bytes
        list(tarstream.TarStream(str(shard)).decode(decoders={"cls": None}))


def test_reserved_field_names_and_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pack"):
        tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"), pack="blocks")  # type: ignore[arg-type]
    with tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"), pack="small") as w:
        with pytest.raises(tarstream.InvalidKeyError, match="reserved"):
            w.write({"__key__": "a", BLOCK_FIELD: b"x"})
        with pytest.raises(tarstream.EncodeError, match="b1"):
            w.write({"__key__": "b1", "txt": "\ud800"})
        w.write({"__key__": "c", "txt": "ok"})
    assert [s["txt"] for s in tarstream.TarStream(str(tmp_path / "t-000000.tar")).decode()] == [
        "ok"
    ]


def test_limits_count_the_samples_and_bytes_of_blocks(tmp_path: Path) -> None:
    samples = [{"__key__": f"{i:05d}", "txt": "y" * 900} for i in range(300)]
    write_dataset(tmp_path, samples, max_bytes=100_000, pack="small")
    sizes = [p.stat().st_size for p in sorted(tmp_path.glob("*.tar"))]
    assert len(sizes) >= 3 and max(sizes) <= 100_000
    write_dataset(tmp_path / "n", samples, max_samples=64, pack="small")
    counts = [
        len(list(tarstream.TarStream(str(p)))) for p in sorted((tmp_path / "n").glob("*.tar"))
    ]
    assert counts == [64, 64, 64, 64, 44]


def test_a_packed_write_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    samples = _samples()
    write_dataset(tmp_path / "whole", samples, max_samples=25, pack="small")
    with (
        pytest.raises(RuntimeError),
        tarstream.ShardWriter(
            str(tmp_path / "cut" / "train-%06d.tar"), max_samples=25, pack="small"
        ) as w,
    ):
        for s in samples[:40]:
            w.write(s)
        raise RuntimeError("stopped")
    with tarstream.ShardWriter(
        str(tmp_path / "cut" / "train-%06d.tar"), max_samples=25, pack="small", resume=True
    ) as w:
        for s in samples[w.resumed :]:
            w.write(s)
    assert files_under(tmp_path / "cut") == files_under(tmp_path / "whole")


def test_a_numpy_field_is_stored_as_bytes_and_lowercase_names_work(tmp_path: Path) -> None:
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    write_dataset(tmp_path, [{"__key__": "a", "x.npy": array, "Seg.TXT": "hi"}], pack="small")
    (got,) = tarstream.TarStream(_manifest(tmp_path)).decode()
    assert np.array_equal(got["x.npy"], array) and got["seg.txt"] == "hi"
    (kept,) = tarstream.TarStream(_manifest(tmp_path), lowercase_fields=False).decode()
    assert kept["Seg.TXT"] == "hi"


def test_a_version_2_sidecar_is_refused_by_its_checks_where_it_is_impossible(
    layouts: dict[str, Path],
) -> None:
    shard = layouts["small"] / "train-000001.tar"
    doc = msgpack.unpackb(sidecar_of(shard).read_bytes())
    offsets = np.frombuffer(doc["offsets"], dtype="<u4").copy()
    offsets[1], offsets[2] = offsets[2], offsets[1]
    doc["offsets"] = offsets.tobytes()
    with pytest.raises(SidecarError, match="does not describe a valid shard"):
        ShardIndex.from_bytes(msgpack.packb(doc), url="x")
    doc["width"] = 3
    with pytest.raises(SidecarError, match="width"):
        ShardIndex.from_bytes(msgpack.packb(doc), url="x")


def _plain_json_as_specified(value: Any, depth: int = 0) -> bool:
    """``_plain_json`` as written first (its definition, one call per value)."""
    of = type(value)
    if of in (str, float, bool, type(None)):
        return True
    if of is int:
        return -(2**63) <= value <= 2**64 - 1
    if depth > 64:
        return False
    if of is dict:
        return all(type(k) is str for k in value) and all(
            _plain_json_as_specified(v, depth + 1) for v in value.values()
        )
    if of is list or of is tuple:
        return all(_plain_json_as_specified(v, depth + 1) for v in value)
    return False


@settings(max_examples=400, deadline=None)
@given(_values(16) | st.lists(_values(8), max_size=4).map(tuple))
def test_which_json_values_are_stored_typed_is_as_specified(value: Any) -> None:
    """The writer stores a JSON value typed only where msgpack gives back what JSON would
    (string keys at every depth, integers of 64 bits): the quick check decides as the
    definition does, for values of every kind and depth."""
    nested: Any = value
    for _ in range(70):
        nested = [nested]
    for v in (value, {"k": value}, nested, [2**64, value], {"a": -(2**63) - 1}):
        assert _plain_json(v, 0) == _plain_json_as_specified(v)
