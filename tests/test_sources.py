"""Writer sources: Parquet with list and struct columns, globs and brace lists of index
parts, text lists, URLs fetched from a local HTTP server with a failing row."""

from __future__ import annotations

import csv
import http.server
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import tarstream
from tarstream.cli import main, write_main

from .conftest import files_under
from .remote_helpers import ranged_http_server, serve


def _read(pattern: str) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in s.items() if k != "__url__"}
        for s in tarstream.TarStream(pattern).decode()
    ]


def test_a_parquet_index_with_list_and_struct_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text(f"text {i}")
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "text": [f"{i}.txt" for i in range(3)],
            "tags": [["x"], ["y", "z"], []],
            "meta": [{"w": 1, "h": 2}, {"w": 3, "h": 4}, {"w": 5, "h": 6}],
            "label": [0, 1, 2],
        }
    )
    pq.write_table(table, tmp_path / "index.parquet")
    out = str(tmp_path / "out" / "p-%06d.tar")
    assert (
        write_main(
            [
                str(tmp_path / "index.parquet"),
                out,
                "--file",
                "text",
                "--key",
                "id",
                "--field",
                "tags=tags.json",
                "--field",
                "meta=meta.json",
                "--field",
                "label=cls",
            ]
        )
        == 0
    )
    got = _read(str(tmp_path / "out" / "_p.manifest.json"))
    assert got == [
        {
            "__key__": "a",
            "txt": "text 0",
            "tags.json": ["x"],
            "meta.json": {"w": 1, "h": 2},
            "cls": 0,
        },
        {
            "__key__": "b",
            "txt": "text 1",
            "tags.json": ["y", "z"],
            "meta.json": {"w": 3, "h": 4},
            "cls": 1,
        },
        {"__key__": "c", "txt": "text 2", "tags.json": [], "meta.json": {"w": 5, "h": 6}, "cls": 2},
    ]


def _parts(tmp_path: Path) -> None:
    for part in range(3):
        with open(tmp_path / f"part-{part}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "label"])
            for i in range(2):
                name = f"{part}-{i}.txt"
                (tmp_path / name).write_text(name)
                writer.writerow([name, part * 10 + i])


@pytest.mark.parametrize("pattern", ["part-*.csv", "part-{0..2}.csv"])
def test_a_glob_or_brace_list_of_index_parts_is_read_in_order(tmp_path: Path, pattern: str) -> None:
    _parts(tmp_path)
    out = str(tmp_path / "out" / "g-%06d.tar")
    assert write_main([str(tmp_path / pattern), out, "--file", "file", "--field", "label=cls"]) == 0
    got = _read(str(tmp_path / "out" / "_g.manifest.json"))
    assert [s["__key__"] for s in got] == [f"{i:09d}" for i in range(6)]  # numbered over parts
    assert [s["cls"] for s in got] == [0, 1, 10, 11, 20, 21]
    assert [s["txt"] for s in got][:3] == ["0-0.txt", "0-1.txt", "1-0.txt"]


def test_a_missing_part_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _parts(tmp_path)
    out = str(tmp_path / "out" / "g-%06d.tar")
    assert write_main([str(tmp_path / "part-{0..3}.csv"), out, "--file", "file"]) == 1
    assert "part-3.csv does not exist" in capsys.readouterr().err


def _url_index(tmp_path: Path, base: str) -> Path:
    index = tmp_path / "urls.jsonl"
    rows = [
        {"__key__": f"u{i}", "image": f"{base}/img-{i}.png", "caption": f"caption {i}"}
        for i in range(5)
    ]
    rows[2]["image"] = f"{base}/missing.png"  # the server has no such file
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return index


def _served() -> dict[str, bytes]:
    return {f"img-{i}.png": f"png bytes {i}".encode() for i in range(5)}


def test_urls_in_an_index_are_fetched_and_a_failing_row_stops_the_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ranged_http_server(_served()) as (base, _):
        index = _url_index(tmp_path, base)
        out = str(tmp_path / "out" / "u-%06d.tar")
        assert write_main([str(index), out, "--file", "image=bin"]) == 1
    err = capsys.readouterr().err
    assert "row 3" in err and "missing.png" in err and "Traceback" not in err


def test_a_failing_url_is_skipped_and_recorded_when_asked(tmp_path: Path) -> None:
    with ranged_http_server(_served()) as (base, _):
        index = _url_index(tmp_path, base)
        out = str(tmp_path / "out" / "u-%06d.tar")
        code = write_main(
            [str(index), out, "--file", "image=bin", "--on-error", "skip", "--fetch-workers", "3"]
        )
        assert code == 0
    got = [
        {k: v for k, v in s.items() if k != "__url__"}
        for s in tarstream.TarStream(str(tmp_path / "out" / "_u.manifest.json"))
    ]
    assert [s["__key__"] for s in got] == ["u0", "u1", "u3", "u4"]  # in order, u2 left out
    assert got[3]["bin"] == b"png bytes 4" and got[3]["caption"] == b"caption 4"
    failures = [json.loads(line) for line in (tmp_path / "out" / "_failures.jsonl").open()]
    assert len(failures) == 1 and failures[0]["row"] == 3 and failures[0]["column"] == "image"
    assert failures[0]["location"].endswith("/missing.png")


def test_a_text_list_of_files_and_urls(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "one.txt").write_text("first")
    with ranged_http_server(_served()) as (base, _):
        listing = tmp_path / "files.txt"
        listing.write_text(f"docs/one.txt\n{base}/img-1.png\n\n")
        out = str(tmp_path / "out" / "t-%06d.tar")
        assert write_main([str(listing), out]) == 0
    got = [
        {k: v for k, v in s.items() if k != "__url__"}
        for s in tarstream.TarStream(str(tmp_path / "out" / "_t.manifest.json"))
    ]
    assert got == [
        {"__key__": "docs/one", "txt": b"first"},
        {"__key__": "img-1", "png": b"png bytes 1"},
    ]


@contextmanager
def _killing_server(objects: dict[str, bytes], victim: dict[str, int]) -> Iterator[str]:
    """Serve ``objects``; the GET numbered ``victim["at"]`` kills process ``victim["pid"]``
    with SIGKILL before it is answered (a kill -9 at a chosen point of a write)."""
    seen = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            seen[0] += 1
            if seen[0] == victim.get("at") and "pid" in victim:
                os.kill(victim["pid"], signal.SIGKILL)
            data = objects[self.path.lstrip("/")]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_HEAD(self) -> None:
            data = objects[self.path.lstrip("/")]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve(Handler) as base:
        yield base


@pytest.mark.parametrize("kill_at", [1, 47, 113])
def test_a_write_killed_at_any_point_and_run_again_gives_the_same_bytes(
    tmp_path: Path, kill_at: int
) -> None:
    objects = {f"f-{i:03d}.txt": (f"text {i} " * (i % 17 + 1)).encode() for i in range(150)}
    victim: dict[str, int] = {"at": kill_at}
    with _killing_server(objects, victim) as base:
        listing = tmp_path / "urls.txt"
        listing.write_text("".join(f"{base}/{name}\n" for name in objects))
        args = [str(listing), "--max-samples", "20", "--fetch-workers", "1"]
        assert write_main([*args[:1], str(tmp_path / "ref" / "w-%06d.tar"), *args[1:]]) == 0
        out = str(tmp_path / "out" / "w-%06d.tar")
        command = [sys.executable, "-m", "tarstream", "write", args[0], out, *args[1:]]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        victim["pid"] = process.pid
        victim["at"] += len(objects)  # counted from the reference write's requests on
        assert process.wait() == -signal.SIGKILL
        assert write_main([args[0], out, *args[1:]]) == 0  # the same arguments again
    assert files_under(tmp_path / "out") == files_under(tmp_path / "ref")  # no temporary file left


def _source_tree(directory: Path, n: int) -> Path:
    src = directory / "src"
    src.mkdir()
    for i in range(n):
        (src / f"{i:04d}.txt").write_text("z" * (i * 13 % 300))
        (src / f"{i:04d}.cls").write_text(str(i % 5))
    return src


@pytest.mark.parametrize("workers", [2, 3])
def test_a_parallel_write_is_the_sequential_write_byte_for_byte(
    tmp_path: Path, workers: int
) -> None:
    src = _source_tree(tmp_path, 95)
    one = [str(src), str(tmp_path / "one" / "d-%06d.tar"), "--max-samples", "10"]
    assert write_main(one) == 0
    many = [str(src), str(tmp_path / "many" / "d-%06d.tar"), "--max-samples", "10"]
    assert write_main([*many, "--workers", str(workers)]) == 0
    assert files_under(tmp_path / "many") == files_under(tmp_path / "one")


def test_a_parallel_write_of_an_index_and_its_resume(tmp_path: Path) -> None:
    _parts(tmp_path)
    args = ["--file", "file", "--field", "label=cls", "--max-samples", "2"]
    assert (
        write_main([str(tmp_path / "part-*.csv"), str(tmp_path / "one" / "i-%06d.tar"), *args]) == 0
    )
    many = str(tmp_path / "many" / "i-%06d.tar")
    assert write_main([str(tmp_path / "part-*.csv"), many, *args, "--workers", "2"]) == 0
    assert files_under(tmp_path / "many") == files_under(tmp_path / "one")
    (tmp_path / "many" / ".tarstream" / "i-000001.tar.idx").unlink()  # as if stopped there
    (tmp_path / "many" / "_i.manifest.json").unlink()
    (tmp_path / "many" / ".i-000002.tar.999-0badf00d.partial").write_bytes(b"half a shard")
    assert write_main([str(tmp_path / "part-*.csv"), many, *args, "--workers", "2"]) == 0
    assert files_under(tmp_path / "many") == files_under(tmp_path / "one")


def test_a_part_removes_only_its_own_stale_temporaries(tmp_path: Path) -> None:
    from tarstream.write.durable import remove_temporaries

    names = [".i-000002.tar.999-0badf00d.partial", ".i-000003.tar.7-00c0ffee.partial"]
    for name in [*names, ".i-x.tar.1-00.partial", "i-000001.tar"]:
        (tmp_path / name).write_bytes(b"x")
    remove_temporaries(str(tmp_path / "i-%06d.tar"), lambda shard: shard % 2 == 0)  # part 0 of 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names[1:], ".i-x.tar.1-00.partial", "i-000001.tar"]
    )
    remove_temporaries(str(tmp_path / "i-%06d.tar"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".i-x.tar.1-00.partial", "i-000001.tar"]


def test_an_index_of_values_only_is_written_when_it_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"txt": f"text {i}", "cls": i % 3, "json": {"id": i}} for i in range(7)]
    index = tmp_path / "texts.jsonl"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "one" / "t-%06d.tar")
    assert write_main([str(index), out, "--max-samples", "3"]) == 1  # paths as text? no
    assert "--no-files" in capsys.readouterr().err
    assert write_main([str(index), out, "--max-samples", "3", "--no-files"]) == 0
    written = _read(str(tmp_path / "one" / "_t.manifest.json"))
    assert written == [{"__key__": f"{i:09d}", **r} for i, r in enumerate(rows)]
    many = str(tmp_path / "many" / "t-%06d.tar")
    assert write_main([str(index), many, "--max-samples", "3", "--no-files", "--workers", "2"]) == 0
    assert files_under(tmp_path / "many") == files_under(tmp_path / "one")
    python = list(tarstream.write.sources.samples_from(str(index), files={}))
    assert [{k: v for k, v in s.items() if k != "__key__"} for s in python] == rows


def test_parallel_writing_needs_fixed_shard_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _source_tree(tmp_path, 3)
    out = str(tmp_path / "o" / "d-%06d.tar")
    assert write_main([str(src), out, "--workers", "2", "--max-bytes", "1MB"]) == 2
    assert "--max-samples" in capsys.readouterr().err


def test_parts_written_apart_and_merged_are_the_one_process_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _source_tree(tmp_path, 73)
    assert write_main([str(src), str(tmp_path / "one" / "d-%06d.tar"), "--max-samples", "8"]) == 0
    out = str(tmp_path / "parts" / "d-%06d.tar")
    for part in (2, 0, 1):  # in any order, as machines finish
        assert write_main([str(src), out, "--max-samples", "8", "--part", f"{part}/3"]) == 0
    merged = str(tmp_path / "parts" / "_d.manifest.json")
    assert (
        main(["merge", str(tmp_path / "parts" / "_d.part-*.manifest.json"), "--output", merged])
        == 0
    )
    one, parts = files_under(tmp_path / "one"), files_under(tmp_path / "parts")
    assert {n: b for n, b in parts.items() if ".part-" not in n and "manifest" not in n} == {
        n: b for n, b in one.items() if "manifest" not in n
    }
    whole = json.loads(one["_d.manifest.json"])
    again = json.loads(parts["_d.manifest.json"])
    for key in ("shards", "samples", "sizes", "fields", "total_samples"):
        assert again[key] == whole[key]
    assert [s["__key__"] for s in tarstream.TarStream(merged)] == [f"{i:04d}" for i in range(73)]
    capsys.readouterr()
    assert main(["merge", merged, merged, "--output", str(tmp_path / "x.json")]) == 1
    assert "more than one manifest" in capsys.readouterr().err


def test_a_hugging_face_dataset_is_a_source(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    np = pytest.importorskip("numpy")
    from PIL import Image

    images = [Image.fromarray(np.full((4, 5, 3), i * 40, np.uint8)) for i in range(5)]
    ds = datasets.Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(5)],
            "image": images,
            "label": [i % 2 for i in range(5)],
            "caption": [f"c{i}" if i != 3 else None for i in range(5)],
        }
    )
    writer = tarstream.write_samples(
        ds,
        str(tmp_path / "h-%06d.tar"),
        key="id",
        fields={"image": "png", "label": "cls", "caption": "txt"},
        max_samples=2,
    )
    assert len(writer.shards) == 3 and writer.manifest().total_samples == 5
    got = list(tarstream.TarStream(str(tmp_path / "_h.manifest.json")).decode("rgb8"))
    assert [s["__key__"] for s in got] == [f"r{i}" for i in range(5)]
    assert [int(s["png"][0, 0, 0]) for s in got] == [0, 40, 80, 120, 160]
    assert [s["cls"] for s in got] == [0, 1, 0, 1, 0] and "txt" not in got[3]
    # run again with resume: nothing new, the same shards
    before = files_under(tmp_path)
    tarstream.write_samples(
        ds,
        str(tmp_path / "h-%06d.tar"),
        key="id",
        fields={"image": "png", "label": "cls", "caption": "txt"},
        max_samples=2,
        resume=True,
    )
    assert files_under(tmp_path) == before


@pytest.mark.slow
def test_a_write_with_ray_tasks_is_the_one_process_write(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    src = _source_tree(tmp_path, 41)
    assert write_main([str(src), str(tmp_path / "one" / "d-%06d.tar"), "--max-samples", "8"]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        manifest = tarstream.write_with_ray(
            str(src), str(tmp_path / "ray" / "d-%06d.tar"), parts=3, max_samples=8
        )
    finally:
        ray.shutdown()
    assert manifest.total_samples == 41
    one, written = files_under(tmp_path / "one"), files_under(tmp_path / "ray")
    assert {n: b for n, b in written.items() if "manifest" not in n} == {
        n: b for n, b in one.items() if "manifest" not in n
    }
    assert [
        s["__key__"] for s in tarstream.TarStream(str(tmp_path / "ray" / "_d.manifest.json"))
    ] == [f"{i:04d}" for i in range(41)]
