"""tarstream-write and tarstream index."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

import tarstream
from tarstream.cli import main, parse_size, write_main
from tarstream.write.sources import samples_from


def _samples(pattern: str) -> list[dict[str, object]]:
    return [{k: v for k, v in s.items() if k != "__url__"} for s in tarstream.TarStream(pattern)]


def test_write_from_a_directory_groups_files_by_key_in_sorted_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    for sub in ("b", "a"):
        (src / sub).mkdir(parents=True)
        for i in (2, 1):
            (src / sub / f"{i:03d}.jpg").write_bytes(f"jpg {sub}{i}".encode())
            (src / sub / f"{i:03d}.seg.png").write_bytes(f"png {sub}{i}".encode())
    (src / "README").write_text("no field")
    (src / ".DS_Store").write_text("hidden")
    out = tmp_path / "out" / "train-%06d.tar"
    assert write_main([str(src), str(out), "--max-samples", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "out" / "train-{000000..000001}.tar")
    assert "wrote 4 samples in 2 shards" in captured.err
    assert "skipped 2 files" in captured.err and "README" in captured.err
    read = _samples(str(tmp_path / "out" / "_train.manifest.json"))
    assert read == [
        {
            "__key__": f"{d}/{i:03d}",
            "jpg": f"jpg {d}{i}".encode(),
            "seg.png": f"png {d}{i}".encode(),
        }
        for d in ("a", "b")
        for i in (1, 2)
    ]


def test_write_from_a_jsonl_index_with_file_and_metadata_columns(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(5):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(b"J" * i)
        rows.append({"id": f"id{i}", "image": f"img/{i}.jpg", "label": i % 2, "meta": {"w": i}})
    index = tmp_path / "index.jsonl"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "out" / "d-%04d.tar")
    code = write_main([str(index), out, "--file", "image", "--key", "id", "--field", "label=cls"])
    assert code == 0
    read = _samples(str(tmp_path / "out" / "d-0000.tar"))
    assert read == [
        {
            "__key__": f"id{i}",
            "jpg": b"J" * i,
            "cls": str(i % 2).encode(),
            "meta": json.dumps({"w": i}, separators=(",", ":")).encode(),
        }
        for i in range(5)
    ]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--file", "nosuchcol"], "no column 'nosuchcol'"),
        (["--file", "image", "--key", "ident"], "no column 'ident'"),
        (
            ["--file", "image", "--file", "thumb"],
            "columns 'image' and 'thumb' both give field 'jpg'",
        ),
        (["--file", "image", "--field", "label=jpg"], "both give field 'jpg'"),
    ],
)
def test_index_columns_that_are_missing_or_clash_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], said: str
) -> None:
    (tmp_path / "a.jpg").write_bytes(b"A")
    (tmp_path / "b.jpg").write_bytes(b"B")
    row = {"id": "k", "image": "a.jpg", "thumb": "b.jpg", "label": 1}
    (tmp_path / "index.jsonl").write_text(json.dumps(row) + "\n")
    code = write_main([str(tmp_path / "index.jsonl"), str(tmp_path / "o-%03d.tar"), *options])
    err = capsys.readouterr().err
    assert code == 1 and said in err and len(err.strip().splitlines()) == 1


def test_write_from_a_csv_index_keys_rows_by_number_and_names_file_fields(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"A")
    (tmp_path / "b.bin").write_bytes(b"B")
    with open(tmp_path / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption"])
        writer.writerow(["a.bin", "first"])
        writer.writerow(["b.bin", "second"])
    out = str(tmp_path / "o-%02d.tar")
    assert (
        write_main(
            [str(tmp_path / "index.csv"), out, "--file", "path=raw.dat", "--field", "caption=txt"]
        )
        == 0
    )
    assert _samples(str(tmp_path / "o-00.tar")) == [
        {"__key__": "000000000", "raw.dat": b"A", "txt": b"first"},
        {"__key__": "000000001", "raw.dat": b"B", "txt": b"second"},
    ]


def test_an_index_without_file_columns_or_with_missing_files_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "i.jsonl"
    index.write_text(json.dumps({"image": "missing.jpg"}) + "\n")
    assert write_main([str(index), str(tmp_path / "o-%02d.tar")]) == 1
    assert "--file COLUMN" in capsys.readouterr().err
    assert write_main([str(index), str(tmp_path / "o-%02d.tar"), "--file", "image"]) == 1
    assert "cannot read 'missing.jpg'" in capsys.readouterr().err
    assert not list(tmp_path.glob("o-*"))  # nothing written
    # the same, from Python: a typed error, not SystemExit
    with pytest.raises(tarstream.WriteError, match=r"--file COLUMN"):
        next(samples_from(str(index)))
    with pytest.raises(tarstream.WriteError, match=r"cannot read 'missing\.jpg'"):
        next(samples_from(str(index), files={"image": None}))


def test_repack_existing_shards_with_new_limits(tmp_path: Path) -> None:
    with wds.ShardWriter(str(tmp_path / "w-%06d.tar"), maxcount=7, verbose=0) as w:
        for i in range(20):
            w.write({"__key__": f"{i:04d}", "txt": f"t{i}"})
    out = str(tmp_path / "r" / "r-%06d.tar")
    assert (
        main(["write", str(tmp_path / "w-{000000..000002}.tar"), out, "--max-samples", "10"]) == 0
    )
    manifest = json.loads((tmp_path / "r" / "_r.manifest.json").read_text())
    assert manifest["samples"] == [10, 10]
    assert _samples(str(tmp_path / "r" / "_r.manifest.json")) == _samples(
        str(tmp_path / "w-{000000..000002}.tar")
    )


def test_index_builds_sidecars_and_a_manifest_for_webdataset_shards_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with wds.ShardWriter(str(tmp_path / "w-%06d.tar"), maxcount=30, verbose=0) as w:
        for i in range(100):
            w.write({"__key__": f"{i:04d}", "txt": f"t{i}" * i, "cls": str(i % 5)})
    pattern = str(tmp_path / "w-{000000..000003}.tar")
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")}
    assert main(["index", pattern]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "_w.manifest.json")
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")} == before  # not rewritten
    manifest = json.loads((tmp_path / "_w.manifest.json").read_text())
    assert (
        manifest["samples"] == [30, 30, 30, 10] and manifest["shards"] == "w-{000000..000003}.tar"
    )
    indexed = list(tarstream.TarStream(str(tmp_path / "_w.manifest.json"), sidecars="require"))
    assert indexed == list(tarstream.TarStream(pattern, sidecars="ignore"))


def test_index_reports_a_broken_shard_as_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.tar").write_bytes(b"not a tar" * 100)
    assert main(["index", str(tmp_path / "bad.tar")]) == 1
    assert "not a tar archive" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000", 1000),
        ("64MB", 64_000_000),
        ("1.5G", 1_500_000_000),
        ("512MiB", 512 << 20),
        ("2kib", 2048),
        ("3 GB", 3_000_000_000),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_rejects_garbage() -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size("lots")


def test_the_installed_console_scripts_run(tmp_path: Path) -> None:
    script = shutil.which("tarstream-write", path=str(Path(sys.executable).parent))
    assert script is not None, "tarstream-write is not installed beside this Python"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("hi")
    result = subprocess.run(
        [script, str(tmp_path / "src"), str(tmp_path / "o-%03d.tar")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "o-000.tar")


def test_version_and_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    for entry in (main, write_main):
        with pytest.raises(SystemExit) as done:
            entry(["--version"])
        assert done.value.code == 0
        assert capsys.readouterr().out.split()[-1] == tarstream.__version__
    result = subprocess.run(
        [sys.executable, "-m", "tarstream", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == f"tarstream {tarstream.__version__}"


def test_index_takes_a_glob_and_names_the_manifest_after_the_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with wds.ShardWriter(str(tmp_path / "val-%06d.tar"), maxcount=10, verbose=0) as w:
        for i in range(25):
            w.write({"__key__": f"{i:04d}", "txt": f"t{i}"})
    assert main(["index", str(tmp_path / "val-*.tar")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "_val.manifest.json")
    assert len(list(tarstream.TarStream(str(tmp_path / "_val.manifest.json")))) == 25
    assert main(["index", str(tmp_path / "val-000001.tar")]) == 0  # one shard
    assert capsys.readouterr().out.strip() == str(tmp_path / "_val.manifest.json")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["index", "{nothing"], "Unbalanced braces"),
        (["index", "none-*.tar"], "names no shard"),
        (["write", "SRC", "OUT/x-%06d.tar", "--max-samples", "0"], "max_samples"),
        (["write", "SRC", "s3://bucket/x-%06d.tar"], "local paths only"),
        (["write", "SRC", "OUT/x.tar"], "placeholder like %06d"),
    ],
)
def test_a_mistake_is_one_line_and_status_2_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("x")
    argv = [a.replace("SRC", str(tmp_path / "src")).replace("OUT", str(tmp_path)) for a in argv]
    argv = [str(tmp_path / a) if a.startswith(("{", "none")) else a for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (1, 2) and said in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_ls_stats_verify_and_cat_look_inside_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tarstream.ShardWriter(str(tmp_path / "t-%06d.tar"), max_samples=10) as w:
        for i in range(25):
            w.write({"__key__": f"{i:03d}", "txt": "x" * i, "cls": i})
    manifest = str(tmp_path / "_t.manifest.json")
    assert main(["ls", manifest]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "samples\tbytes\tshard\tfields"
    assert [line.split("\t")[0] for line in lines[1:]] == ["10", "10", "5"]
    assert all(line.endswith("\tcls,txt") for line in lines[1:])
    assert main(["stats", manifest]) == 0
    out = capsys.readouterr().out
    assert "samples\t25" in out and "field txt\t25" in out and "3 with sidecars" in out
    assert main(["verify", manifest]) == 0
    assert capsys.readouterr().out.count("ok\t") == 3
    result = subprocess.run(
        [sys.executable, "-m", "tarstream", "cat", manifest, "013", "txt"], capture_output=True
    )
    assert result.returncode == 0 and result.stdout == b"x" * 13
    assert main(["cat", manifest, "013"]) == 0
    assert "txt\t13 bytes" in capsys.readouterr().out
    assert main(["cat", manifest, "999"]) == 1
    shard = tmp_path / "t-000001.tar"
    data = bytearray(shard.read_bytes())
    data[3000] ^= 1  # one flipped bit in sample 011's data
    shard.write_bytes(bytes(data))
    assert main(["verify", manifest]) == 1
    out = capsys.readouterr().out
    assert "FAIL\t" in out and "'011" in out and out.count("ok\t") == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_verify_shows_a_progress_bar_on_a_terminal_and_nothing_when_piped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with tarstream.ShardWriter(str(tmp_path / "p-%06d.tar"), max_samples=4) as w:
        for i in range(10):
            w.write({"__key__": f"{i:03d}", "txt": "x"})
    manifest = str(tmp_path / "_p.manifest.json")
    assert main(["verify", manifest]) == 0
    assert capsys.readouterr().err == "3 of 3 shards ok, 10 samples read\n"  # piped: quiet
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["verify", manifest]) == 0
    shown = terminal.getvalue()
    assert "3/3" in shown and "shards" in shown and "10 samples" in shown  # tqdm's bar


def test_writing_shows_samples_of_the_total_shards_and_bytes_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"{i:03d}.txt").write_text("x" * 1000)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert write_main([str(src), str(tmp_path / "o-%06d.tar"), "--max-samples", "2"]) == 0
    shown = terminal.getvalue()
    assert "6/6" in shown and "3 shards" in shown and "MB" in shown  # tqdm's bar, with a total


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_writing_an_index_file_shows_its_row_count_as_the_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    rows = [
        {"__key__": f"{i:03d}", "txt": f"line {i}\nand more" if i == 2 else "x"} for i in range(5)
    ]
    index = tmp_path / f"index{suffix}"
    if suffix == ".jsonl":
        index.write_text(
            "\n".join(json.dumps(r) for r in rows[:3])
            + "\n\n"
            + "\n".join(json.dumps(r) for r in rows[3:])
        )
    else:
        with open(index, "w", newline="") as f:
            out = csv.DictWriter(f, ["__key__", "txt"], delimiter="\t" if suffix == ".tsv" else ",")
            out.writeheader()
            out.writerows(rows)  # one text spans two lines, quoted
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = [str(index), str(tmp_path / "o-%06d.tar"), "--no-files", "--max-samples", "2"]
    assert write_main(argv) == 0
    assert "5/5" in terminal.getvalue()  # the total counted before writing
    got = [s["txt"] for s in tarstream.TarStream(str(tmp_path / "_o.manifest.json")).decode()]
    assert got == [r["txt"] for r in rows]
