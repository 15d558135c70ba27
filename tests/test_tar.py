"""The tar reader: formats it must read, and every way a shard can be broken."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tarstream
from tarstream.format.samples import build_sidecar, read_samples
from tarstream.format.scan import ReadStats

from .conftest import make_samples, write_dataset

# 4 KiB reads keep every buffer below the bulk parser's minimum (per-header path);
# 1 MiB reads let the bulk parser take runs of headers.
READ_SIZES = [4096, 1 << 20]


def _read(path: Path, **options: object) -> list[dict[str, object]]:
    return list(tarstream.TarStream(str(path), **options))  # type: ignore[arg-type]


def _tar_bytes(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _expected(members: list[tuple[str, bytes]]) -> list[tuple[str, dict[str, bytes]]]:
    """Group members into samples the way the format defines it."""
    samples: list[tuple[str, dict[str, bytes]]] = []
    for name, data in members:
        last = name.rsplit("/", 1)[-1]
        if "." not in last[1:] or last.startswith(".") or last.endswith("."):
            continue
        key, field = name[: len(name) - len(last) + last.index(".")], last[last.index(".") + 1 :]
        if samples and samples[-1][0] == key:
            samples[-1][1][field] = data
        else:
            samples.append((key, {field: data}))
    return samples


def _as_pairs(samples: list[dict[str, object]]) -> list[tuple[str, dict[str, object]]]:
    return [
        (str(s["__key__"]), {k: v for k, v in s.items() if not k.startswith("__")}) for s in samples
    ]


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    """One shard of 300 samples (enough for bulk parsing) with a sidecar."""
    write_dataset(tmp_path, make_samples(300))
    return tmp_path / "train-000000.tar"


def _offset_of(path: Path, member: str) -> int:
    with tarfile.open(path) as tf:
        return tf.getmember(member).offset


@pytest.mark.parametrize("read_size", READ_SIZES)
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_ustar_gnu_and_pax_archives_with_long_names(
    tmp_path: Path, fmt: int, read_size: int
) -> None:
    members = [(f"dir{i % 3}/{i:04d}.txt", b"t" * (i % 700)) for i in range(200)]
    members += [("p" * 90 + "/" + "q" * 90 + ".seg.png", b"long"), ("z/0.cls", b"1")]
    if fmt == tarfile.USTAR_FORMAT:
        members[-2] = ("p" * 90 + "/" + "q" * 8 + ".seg.png", b"prefix-split name")
    path = tmp_path / "a.tar"
    path.write_bytes(_tar_bytes(members, fmt))
    assert _as_pairs(_read(path, read_size=read_size)) == _expected(members)


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_directories_links_and_fifos_are_skipped_and_counted(
    tmp_path: Path, read_size: int
) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(100):
            for kind, name in [
                (tarfile.DIRTYPE, f"d{i}"),
                (tarfile.REGTYPE, f"d{i}/{i:03d}.txt"),
                (tarfile.SYMTYPE, f"d{i}/latest"),  # not named as a field: skipped
                (tarfile.FIFOTYPE, f"f{i}"),
                (tarfile.LNKTYPE, f"h{i}/"),
            ]:
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                data = f"data{i}".encode() if kind == tarfile.REGTYPE else b""
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    stats = ReadStats()
    samples = list(
        read_samples(io.BytesIO(out.getvalue()), "x.tar", stats=stats, read_size=read_size)
    )
    assert [s["__key__"] for s in samples] == [f"d{i}/{i:03d}" for i in range(100)]
    assert all(s["txt"] == f"data{i}".encode() and len(s) == 3 for i, s in enumerate(samples))
    assert stats.skipped == {"directory": 100, "symlink": 100, "fifo": 100, "hardlink": 100}


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        (tarfile.SYMTYPE, "symlink"),
        (tarfile.LNKTYPE, "hardlink"),
        (tarfile.FIFOTYPE, "fifo"),
        (tarfile.CHRTYPE, "char device"),
        (tarfile.GNUTYPE_SPARSE, "sparse file"),
        (b"M", "continued file"),
        (b"Q", "type 'Q'"),
    ],
)
def test_a_member_named_as_a_field_that_is_not_a_file_is_an_error_not_a_lost_field(
    tmp_path: Path, kind: bytes, said: str
) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, type_ in [("0001.txt", tarfile.REGTYPE), ("0001.jpg", kind)]:
            info = tarfile.TarInfo(name)
            info.type = type_
            info.linkname = "0001.txt" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            tf.addfile(info, io.BytesIO(b""))
    (tmp_path / "links.tar").write_bytes(out.getvalue())
    for sidecars in ("ignore", "auto"):
        with pytest.raises(tarstream.ShardFormatError, match=f"is a {said}, not a regular") as e:
            _read(tmp_path / "links.tar", sidecars=sidecars)
        assert e.value.member == "0001.jpg" and e.value.offset == 512


def test_members_without_a_field_and_reserved_fields_are_skipped_and_counted() -> None:
    members = [
        ("a.txt", b"1"),
        ("README", b"r"),
        ("dir/.hidden", b"h"),
        ("a.__meta__", b"m"),
        ("b.txt", b"2"),
    ]
    stats = ReadStats()
    samples = list(read_samples(io.BytesIO(_tar_bytes(members)), "x.tar", stats=stats))
    assert _as_pairs(samples) == [("a", {"txt": b"1"}), ("b", {"txt": b"2"})]  # type: ignore[arg-type]
    assert stats.skipped == {"no_field": 2, "reserved_field": 1}


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_a_tar_inside_a_member_is_data_not_members(tmp_path: Path, read_size: int) -> None:
    inner = _tar_bytes([(f"{i}.txt", b"inner" * 100) for i in range(50)])
    members = [(f"{i:03d}.tar", inner) for i in range(10)] + [("zz.txt", b"end")]
    path = tmp_path / "outer.tar"
    path.write_bytes(_tar_bytes(members))
    assert _as_pairs(_read(path, read_size=read_size)) == _expected(members)


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_a_field_repeated_in_a_sample_is_a_format_error(tmp_path: Path, read_size: int) -> None:
    members = [(f"{i:03d}.txt", b"x") for i in range(100)] + [("099.txt", b"again")]
    path = tmp_path / "dup.tar"
    path.write_bytes(_tar_bytes(members))
    with pytest.raises(tarstream.ShardFormatError, match="'txt' appears twice in sample '099'"):
        _read(path, read_size=read_size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(
        st.sampled_from([0, 1, 100, 511, 512, 513, 1024, 5000]), min_size=1, max_size=80
    ),
    fields_per_sample=st.integers(1, 3),
    fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    read_size=st.sampled_from([512, 1536, 4096, 40960, 1 << 20]),
    long_every=st.integers(0, 10),
)
def test_reader_agrees_with_the_format_definition_on_random_archives(
    sizes: list[int], fields_per_sample: int, fmt: int, read_size: int, long_every: int
) -> None:
    members = []
    for i, size in enumerate(sizes):
        key = f"k{i // fields_per_sample:04d}"
        if (
            long_every
            and (i // fields_per_sample) % long_every == 0
            and fmt != tarfile.USTAR_FORMAT
        ):
            key = "l" * 120 + key
        members.append((f"{key}.f{i % fields_per_sample}", bytes([i % 251]) * size))
    data = _tar_bytes(members, fmt)
    samples = list(read_samples(io.BytesIO(data), "x.tar", read_size=read_size))
    assert _as_pairs(samples) == _expected(members)  # type: ignore[arg-type]


# ---- broken shards: every error names shard, member and byte offset ------------------------


def _assert_names(error: tarstream.ShardError, path: Path, member: str | None, offset: int) -> None:
    assert error.shard == str(path)
    assert error.member == member
    assert error.offset == offset
    text = str(error)
    assert str(path) in text and f"at byte {offset}" in text
    if member is not None:
        assert repr(member) in text
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == text


@pytest.mark.parametrize("sidecars", ["ignore", "auto"])
@pytest.mark.parametrize("read_size", READ_SIZES)
def test_truncated_inside_a_member(shard: Path, sidecars: str, read_size: int) -> None:
    cut = _offset_of(shard, "s/00150.txt") + 512 + 10
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(tarstream.TruncatedShardError) as info:
        _read(shard, sidecars=sidecars, read_size=read_size)
    _assert_names(info.value, shard, "s/00150.txt", cut)


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_truncated_at_a_member_boundary_without_sidecar_misses_the_end_marker(
    shard: Path, read_size: int
) -> None:
    cut = _offset_of(shard, "s/00150.cls")
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(
        tarstream.TruncatedShardError, match="without the end-of-archive marker"
    ) as info:
        _read(shard, sidecars="ignore", read_size=read_size)
    _assert_names(info.value, shard, "s/00149.txt", cut)


@pytest.mark.parametrize("cut_member", ["s/00150.cls", "s/00150.json", "s/00299.txt"])
def test_truncated_at_a_member_boundary_is_caught_by_the_sidecar(
    shard: Path, cut_member: str
) -> None:
    cut = _offset_of(shard, cut_member)
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(tarstream.TruncatedShardError, match="truncated") as info:
        _read(shard, sidecars="require")
    _assert_names(info.value, shard, cut_member, cut)


def test_truncated_after_the_last_member_is_caught_by_the_sidecar(shard: Path) -> None:
    data = shard.read_bytes()
    end = _offset_of(shard, "s/00299.txt") + 512 + 512 * 2  # txt of sample 299 is < 1 KiB
    end = next(o for o in range(end - 1024, len(data), 512) if data[o : o + 512] == bytes(512))
    shard.write_bytes(data[:end])
    with pytest.raises(tarstream.TruncatedShardError) as info:
        _read(shard, sidecars="require")
    assert info.value.offset == end and info.value.shard == str(shard)


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_a_zero_block_in_the_middle_is_an_error_not_an_early_end(
    shard: Path, read_size: int
) -> None:
    data = bytearray(shard.read_bytes())
    header = _offset_of(shard, "s/00100.cls")
    data[header : header + 512] = bytes(512)
    shard.write_bytes(bytes(data))
    with pytest.raises(tarstream.ShardFormatError, match="zero block") as info:
        _read(shard, sidecars="ignore", read_size=read_size)
    _assert_names(info.value, shard, "s/00099.txt", header + 512)


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_a_corrupt_header_fails_its_checksum(shard: Path, read_size: int) -> None:
    data = bytearray(shard.read_bytes())
    header = _offset_of(shard, "s/00200.json")
    data[header + 130] ^= 0x01  # one bit of the size field
    shard.write_bytes(bytes(data))
    with pytest.raises(tarstream.ShardFormatError, match="checksum mismatch") as info:
        _read(shard, sidecars="ignore", read_size=read_size)
    _assert_names(info.value, shard, "s/00200.json", header)
    assert "previous member 's/00200.cls'" in str(info.value)


@pytest.mark.parametrize(
    "content", [b"just some text\n" * 100, bytes(range(256)) * 40, b"\x1f\x8b" + bytes(2000)]
)
def test_a_file_that_is_not_a_tar(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(content)
    with pytest.raises(tarstream.ShardFormatError, match="not a tar archive") as info:
        _read(path)
    _assert_names(info.value, path, None, 0)


def test_an_empty_file_is_a_truncated_shard(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(b"")
    with pytest.raises(tarstream.TruncatedShardError) as info:
        _read(path)
    _assert_names(info.value, path, None, 0)


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_member_size_is_checked_against_the_limit_before_reading(
    shard: Path, read_size: int
) -> None:
    with pytest.raises(tarstream.MemberTooLargeError, match="max_member_size") as info:
        _read(shard, sidecars="ignore", max_member_size=800, read_size=read_size)
    first_big = next(i for i in range(300) if i * 37 % 900 + 1 > 800)
    member = f"s/{first_big:05d}.txt"
    _assert_names(info.value, shard, member, _offset_of(shard, member))


def test_data_appended_after_the_end_marker_is_an_error(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes() + _tar_bytes([("extra.txt", b"x")]))
    with pytest.raises(tarstream.ShardFormatError, match="followed by data"):
        _read(shard, sidecars="ignore")


def test_errors_redact_credentials_in_urls() -> None:
    error = tarstream.ShardFormatError("bad", shard="s3://KEY:SECRET@bucket/x.tar", offset=1)
    assert "SECRET" not in str(error) and "s3://***@bucket/x.tar" in str(error)
    assert "SECRET" not in repr(pickle.loads(pickle.dumps(error)))


@pytest.mark.parametrize("read_size", READ_SIZES)
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../evil.txt", "'..' component"),
        ("a/../../evil.txt", "'..' component"),
        ("/etc/passwd.txt", "absolute path"),
    ],
)
def test_a_member_name_that_is_unsafe_as_a_path_is_refused(
    tmp_path: Path, read_size: int, name: str, why: str
) -> None:
    members = [(f"{i:04d}.txt", b"x") for i in range(200)] + [(name, b"evil")]
    for fmt in (tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"bad-{fmt}.tar"
        path.write_bytes(_tar_bytes(members, fmt))
        with pytest.raises(tarstream.ShardFormatError, match=why) as caught:
            _read(path, sidecars="ignore", read_size=read_size)
        assert caught.value.member == name and caught.value.offset == 200 * 1024


def test_a_pax_path_record_that_escapes_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("0001.txt")
        info.size = 4
        info.pax_headers = {"path": "../../evil.txt"}
        tf.addfile(info, io.BytesIO(b"evil"))
    (tmp_path / "pax.tar").write_bytes(out.getvalue())
    with pytest.raises(tarstream.ShardFormatError, match="unsafe as a path"):
        _read(tmp_path / "pax.tar", sidecars="ignore")


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_a_key_that_comes_back_after_other_samples_is_an_error_naming_both_offsets(
    tmp_path: Path, read_size: int
) -> None:
    members = [(f"{i:04d}.txt", b"x") for i in range(100)] + [("0007.cls", b"1")]
    (tmp_path / "split.tar").write_bytes(_tar_bytes(members))
    with pytest.raises(tarstream.ShardFormatError, match="appears again") as caught:
        _read(tmp_path / "split.tar", sidecars="ignore", read_size=read_size)
    assert "starts at byte 7168" in str(caught.value)  # the first time: sample 7
    assert caught.value.member == "0007.cls" and caught.value.offset == 100 * 1024
    with (
        open(tmp_path / "split.tar", "rb") as f,
        pytest.raises(tarstream.ShardFormatError, match="appears again"),  # no sidecar either
    ):
        build_sidecar(f, "split.tar", name="split.tar")


@pytest.mark.parametrize("read_size", READ_SIZES)
def test_a_lenient_reader_skips_and_counts_unsafe_and_repeated_keys_and_reads_on(
    tmp_path: Path, read_size: int
) -> None:
    members = [(f"{i:04d}.txt", b"x") for i in range(100)]
    members[50:50] = [("../../evil.txt", b"evil"), ("/etc/passwd.txt", b"root")]
    members[80:80] = [("0007.cls", b"1"), ("0007.json", b"{}")]  # key 0007 comes back
    (tmp_path / "hostile.tar").write_bytes(_tar_bytes(members))
    stream = tarstream.TarStream(
        str(tmp_path / "hostile.tar"), sidecars="ignore", errors="skip", read_size=read_size
    )
    samples = list(stream)
    assert [s["__key__"] for s in samples] == [f"{i:04d}" for i in range(100)]
    assert all(set(s) == {"__key__", "__url__", "txt"} for s in samples)  # 0007 not merged
    stats = stream.stats
    assert stats.skipped["unsafe_key"] == 2 and stats.skipped["repeated_key"] == 2
    assert stats.shards_failed == 0 and len(stats.failures) == 3
    assert "unsafe as a path" in stats.failures[0] and "appears again" in stats.failures[2]


def test_members_the_bulk_parser_cannot_take_do_not_make_it_rescan_each_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tarstream.format.scan as scan

    tries = 0
    bulk_run = scan.bulk_run

    def counting(*args: object) -> object:
        nonlocal tries
        tries += 1
        return bulk_run(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(scan, "bulk_run", counting)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(20_000):
            info = tarfile.TarInfo(f"d{i:06d}")
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for i in range(300):
            info = tarfile.TarInfo(f"{i:06d}.txt")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "dirs.tar").write_bytes(out.getvalue())
    stream = tarstream.TarStream(str(tmp_path / "dirs.tar"), sidecars="ignore")
    assert len(list(stream)) == 300
    assert stream.stats.skipped["directory"] == 20_000
    assert tries < 40  # each failed try doubles the wait: 625 tries at a fixed 32
