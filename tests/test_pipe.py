"""pipe: shards: only when allowed, run without a shell, never from a manifest, reaped."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

import tarstream
from tarstream import ManifestError, ShardError

from .conftest import make_samples, write_dataset


@pytest.fixture
def shards(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    samples = make_samples(12)
    write_dataset(tmp_path, samples, max_samples=5)  # 3 shards
    return tmp_path, samples


def _pipe(*argv: str) -> str:
    return "pipe:" + shlex.join(argv)


def test_pipe_shards_are_refused_unless_allowed(shards: tuple[Path, list[Any]]) -> None:
    directory, _ = shards
    with pytest.raises(ValueError, match="allow_pipe=True"):
        tarstream.TarStream(_pipe("cat", str(directory / "train-000000.tar")))


def test_pipe_shards_give_the_same_samples_as_the_files(shards: tuple[Path, list[Any]]) -> None:
    directory, _ = shards
    local = [str(directory / f"train-{i:06d}.tar") for i in range(3)]
    piped = tarstream.TarStream([_pipe("cat", path) for path in local], allow_pipe=True)
    plain = tarstream.TarStream(local)
    expected = [(s["__key__"], s["txt"], s["json"]) for s in plain]
    assert [(s["__key__"], s["txt"], s["json"]) for s in piped] == expected
    loader = tarstream.Loader(piped.batch(2), num_workers=2, multiprocessing_context="fork")
    assert sorted(k for b in loader for k in b["__key__"]) == sorted(k for k, _, _ in expected)


def test_a_pipe_command_runs_without_a_shell_and_its_failure_names_the_shard(
    shards: tuple[Path, list[Any]], tmp_path: Path
) -> None:
    directory, _ = shards
    canary = tmp_path / "canary"
    url = f"pipe:cat {directory / 'train-000000.tar'}; touch {canary}"
    with pytest.raises(ShardError, match="exited with status 1") as caught:
        list(tarstream.TarStream(url, allow_pipe=True))
    assert caught.value.shard == url
    assert not canary.exists()  # ";" and "touch" were arguments of cat, not shell syntax


def test_a_manifest_may_not_name_a_command(shards: tuple[Path, list[Any]]) -> None:
    directory, _ = shards
    manifest = json.loads((directory / "_train.manifest.json").read_text())
    manifest["shards"] = [_pipe("cat", "x.tar"), "train-000001.tar", "train-000002.tar"]
    (directory / "evil.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"'pipe:cat x\.tar' must be relative .* or pipe:"):
        tarstream.TarStream(str(directory / "evil.manifest.json"), allow_pipe=True)


def test_stopping_early_stops_and_reaps_the_command(
    shards: tuple[Path, list[Any]], tmp_path: Path
) -> None:
    directory, _ = shards
    pid_file = tmp_path / "pid"
    program = (
        "import os, sys\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        f"sys.stdout.buffer.write(open({str(directory / 'train-000000.tar')!r}, 'rb').read())\n"
        "while True:\n"  # never ends by itself: only closing the shard stops it
        "    sys.stdout.buffer.write(bytes(65536))\n"
    )
    stream = tarstream.TarStream(_pipe(sys.executable, "-c", program), allow_pipe=True)
    iterator = iter(stream)
    first = next(iterator)
    iterator.close()
    assert first["__key__"] == "s/00000"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # gone, not a zombie: it was waited for
