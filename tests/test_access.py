"""Random access: ShardDataset by number and key, field selection, DataLoader samplers."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tarstream
from tarstream.read import access

from .conftest import PACKS, files_under, make_samples, sidecar_of, write_dataset
from .remote_helpers import moto_server, ranged_http_server, s3_credentials, upload

torch = pytest.importorskip("torch")


def _uneven(directory: Path, pack: str = "none") -> str:
    """5 shards of 9, 9, 9, 9 and 4 samples, with keys in several scripts and a long one."""
    samples = make_samples(40)
    samples[3]["__key__"] = "s/ключ-κλειδί-鍵"
    samples[17]["__key__"] = "s/" + "long-" * 25  # over the 100-byte ustar name field
    write_dataset(directory, samples, max_samples=9, pack=pack)
    return str(directory / "_train.manifest.json")


@pytest.fixture(scope="module", **PACKS)
def manifest(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    return _uneven(tmp_path_factory.mktemp("access"), request.param)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_every_sample_by_number_equals_the_unshuffled_stream(manifest: str) -> None:
    stream = list(tarstream.TarStream(manifest))
    ds = tarstream.ShardDataset(manifest)
    assert len(ds) == len(stream) == 40
    for i in [*range(40), *range(39, -1, -3)]:  # forwards, then backwards across shards
        assert _same(ds[i], stream[i]), i
    assert _same(ds[-1], stream[-1])
    assert [s["__key__"] for s in ds[5:12]] == [s["__key__"] for s in stream[5:12]]
    assert [s["__key__"] for s in ds.__getitems__([30, 2, 30, 11])] == [
        stream[i]["__key__"] for i in (30, 2, 30, 11)
    ]
    with pytest.raises(IndexError, match="40"):
        ds[40]
    with pytest.raises(tarstream.ArgumentError):
        ds["s/00001"]  # type: ignore[index]


def test_keys_are_found_in_any_script_and_missing_ones_are_not(manifest: str) -> None:
    ds = tarstream.ShardDataset(manifest, decode=True)
    assert ds.index("s/ключ-κλειδί-鍵") == 3
    long_key = "s/" + "long-" * 25
    assert ds.get(long_key)["__key__"] == long_key and ds.index(long_key) == 17
    assert ds.get("s/00039")["json"] == {"i": 39, "even": False}
    assert ds.get("nope") is None and "nope" not in ds and "s/00000" in ds
    with pytest.raises(KeyError):
        ds.index("s/00040")


def test_decode_and_map_apply_as_in_a_stream(manifest: str) -> None:
    ds = tarstream.ShardDataset(manifest, decode=True, map=lambda s: (s["cls"], s["json"]["i"]))
    assert [ds[i] for i in range(0, 40, 13)] == [(i % 7, i) for i in range(0, 40, 13)]


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte counts of every ranged read random access makes."""
    reads: list[int] = []
    real = access._Ranges.read_at

    def read_at(self: Any, start: int, n: int) -> bytes:
        data = real(self, start, n)
        reads.append(len(data))
        return data

    monkeypatch.setattr(access._Ranges, "read_at", read_at)
    return reads


@pytest.fixture(scope="module")
def large_and_small(tmp_path_factory: pytest.TempPathFactory) -> str:
    """30 samples of a 200 KB field and a class id, in 3 shards."""
    directory = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(0)
    with tarstream.ShardWriter(str(directory / "l-%06d.tar"), max_samples=10) as w:
        for i in range(30):
            w.write({"__key__": f"{i:04d}", "bin": rng.bytes(200_000), "cls": i})
    return str(directory / "_l.manifest.json")


def test_field_selection_reads_only_the_selected_fields_bytes(
    large_and_small: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _counting(monkeypatch)
    whole = tarstream.ShardDataset(large_and_small)
    small = tarstream.ShardDataset(large_and_small, fields="cls", decode=True)
    assert [small[i]["cls"] for i in (4, 29, 0, 15)] == [4, 29, 0, 15]
    assert sorted(small[7]) == ["__key__", "__url__", "cls"]
    assert len(reads) == 5 and all(n <= 1024 for n in reads)  # a header and a few bytes
    reads.clear()
    assert len(whole[7]["bin"]) == 200_000 and min(reads) > 200_000


def test_a_batch_of_samples_in_one_shard_is_read_together(
    large_and_small: str, manifest: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _counting(monkeypatch)
    small = tarstream.ShardDataset(large_and_small, fields=["cls"], decode=True)
    assert [s["cls"] for s in small.__getitems__([3, 1, 2, 25])] == [3, 1, 2, 25]
    assert len(reads) == 4  # the members lie 200 KB apart: one read each
    reads.clear()
    whole = tarstream.ShardDataset(manifest)
    assert len(whole.__getitems__([1, 2, 4])) == 3
    assert len(reads) == 1  # small whole samples near each other: one read


def test_a_changed_shard_is_an_error_never_other_bytes(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(12), max_samples=6)
    manifest = str(tmp_path / "_train.manifest.json")
    shard = tmp_path / "train-000001.tar"
    index = tarstream.ShardIndex.from_bytes(sidecar_of(shard).read_bytes(), url=str(shard))
    assert index.fields == ["cls", "json", "txt"] and index.keys[0] == "s/00006"
    original = shard.read_bytes()
    data = bytearray(original)
    data[int(index.member_offset[0])] ^= 1  # sample 6's class id
    shard.write_bytes(bytes(data))
    with pytest.raises(tarstream.ShardFormatError, match="checksum"):
        tarstream.ShardDataset(manifest)[6]
    assert tarstream.ShardDataset(manifest)[7]["__key__"] == "s/00007"
    # With field selection the member's header is checked: a size that is not the sidecar's
    data = bytearray(original)
    size_field = int(index.member_offset[1]) - 512 + 124  # sample 6's json header
    data[size_field : size_field + 12] = b"%011o\x00" % (int(index.member_size[1]) + 1)
    shard.write_bytes(bytes(data))
    ds = tarstream.ShardDataset(manifest, fields="json txt")
    with pytest.raises(tarstream.SidecarError, match=r"s/00006\.json"):
        ds[6]
    assert ds[7]["json"] == original[int(index.member_offset[4]) :][: int(index.member_size[4])]


def test_without_sidecars_random_access_says_how_to_build_them(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(5))
    (tmp_path / ".tarstream" / "train-000000.tar.idx").unlink()
    with pytest.raises(tarstream.SidecarError, match="tarstream index"):
        tarstream.ShardDataset(str(tmp_path / "train-000000.tar"))


def _label(sample: dict[str, Any]) -> int:
    return int(sample["json"]["i"])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_dataloader_with_shuffle_and_workers_gives_every_sample_once(
    manifest: str, context: str
) -> None:
    ds = tarstream.ShardDataset(manifest, decode=True, map=_label)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, shuffle=True, num_workers=2, multiprocessing_context=context
    )
    got = [int(i) for batch in loader for i in batch]
    assert sorted(got) == list(range(40)) and got != list(range(40))


def test_a_distributed_sampler_splits_the_samples_between_ranks(manifest: str) -> None:
    ds = tarstream.ShardDataset(manifest, decode=True, map=_label)
    seen: list[int] = []
    for rank in range(3):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=3, rank=rank, seed=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=5, sampler=sampler)
        seen += [int(i) for batch in loader for i in batch]
    assert len(seen) == 42 and set(seen) == set(range(40))  # padded to 14 per rank


def test_a_dataset_pickles_without_its_open_files(manifest: str) -> None:
    ds = tarstream.ShardDataset(manifest)
    first = ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    assert not copy.access._files and _same(copy[0], first)
    ds.close()


def test_random_access_over_http_reads_only_the_ranges_it_needs(large_and_small: str) -> None:
    objects = files_under(Path(large_and_small).parent)
    served: list[tuple[str, int]] = []
    with ranged_http_server(objects, served) as (base, _):
        ds = tarstream.ShardDataset(f"{base}/_l.manifest.json", fields="cls", decode=True)
        served.clear()  # the manifest
        assert [ds[i]["cls"] for i in (12, 3, 28)] == [12, 3, 28]
        shard_bytes = [n for name, n in served if name.endswith(".tar")]
        assert len(shard_bytes) == 3 and max(shard_bytes) <= 1024
        whole = tarstream.ShardDataset(f"{base}/_l.manifest.json")
        assert whole[12]["cls"] == b"12" and len(whole[12]["bin"]) == 200_000


def test_random_access_over_s3(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(30), max_samples=8)
    local = tarstream.ShardDataset(str(tmp_path / "_train.manifest.json"))
    with moto_server() as endpoint:
        upload(endpoint, "data", tmp_path, "train")
        storage = tarstream.Storage({"endpoint_url": endpoint}, credentials=s3_credentials)
        ds = tarstream.ShardDataset("s3://data/train/_train.manifest.json", storage=storage)
        for i in (0, 29, 8, 7, 15):
            remote = ds[i]
            assert remote["__url__"].startswith("s3://") and remote["txt"] == local[i]["txt"]
        assert ds.get("s/00021")["json"] == local[21]["json"]
        cached = tarstream.ShardDataset(
            "s3://data/train/_train.manifest.json",
            storage=tarstream.Storage(
                {"endpoint_url": endpoint}, credentials=s3_credentials, cache_dir=tmp_path / "c"
            ),
        )
        assert cached[9]["txt"] == local[9]["txt"] and any((tmp_path / "c").iterdir())


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> str:
    """9,000 small samples in 3 shards: the key index has 3 pages."""
    directory = tmp_path_factory.mktemp("many")
    with tarstream.ShardWriter(str(directory / "m-%06d.tar"), max_samples=3000) as w:
        for i in range(9000):
            w.write({"__key__": f"k{i:05d}", "cls": i})
    return str(directory / "_m.manifest.json")


def test_a_key_index_file_answers_lookups_without_a_table_in_memory(
    many: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tarstream.cli import main

    assert main(["keys", many]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith("_m.keys.idx") and Path(path).stat().st_size == 32 + 16 * 9000 + 8 * 3

    def no_table(self: Any) -> None:
        raise AssertionError("built a table in memory")

    monkeypatch.setattr(access.RandomAccess, "key_table", no_table)
    ds = tarstream.ShardDataset(many, decode=True)
    for i in [*range(0, 9000, 97), 4095, 4096, 8191, 8192, 8999]:
        assert ds.index(f"k{i:05d}") == i and ds.get(f"k{i:05d}")["cls"] == i
    assert ds.get("k09000") is None and "nope" not in ds


def test_a_stale_key_index_is_an_error_not_a_wrong_answer(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(10), max_samples=5)
    ds = tarstream.ShardDataset(str(tmp_path / "_train.manifest.json"))
    assert ds.build_key_index().endswith("_train.keys.idx") and ds.index("s/00004") == 4
    write_dataset(tmp_path, make_samples(12), max_samples=5)  # the dataset is rewritten
    with pytest.raises(tarstream.SidecarError, match="rebuild"):
        tarstream.ShardDataset(str(tmp_path / "_train.manifest.json")).get("s/00004")


def test_key_lookups_over_http_read_a_page_not_the_index(many: str) -> None:
    tarstream.ShardDataset(many).build_key_index()
    objects = files_under(Path(many).parent)
    served: list[tuple[str, int]] = []
    with ranged_http_server(objects, served) as (base, _):
        ds = tarstream.ShardDataset(f"{base}/_m.manifest.json")
        assert ds.index("k07777") == 7777 and ds.index("k00001") == 1
        from_index = [n for name, n in served if name.endswith(".keys.idx")]
        assert sum(from_index) <= 32 + 24 + 2 * 16 * 4096  # header, fences, two pages
