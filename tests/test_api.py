"""The public face: one sorted __all__, importable without torch, errors that pickle."""

from __future__ import annotations

import pickle
import subprocess
import sys

import tarstream
import tarstream.errors


def test_all_is_sorted_and_every_name_exists() -> None:
    assert list(tarstream.__all__) == sorted(tarstream.__all__)
    for name in tarstream.__all__:
        assert hasattr(tarstream, name), name


def test_every_error_type_is_exported_drawn_in_the_tree_and_pickles() -> None:
    doc = tarstream.errors.__doc__ or ""
    errors = [getattr(tarstream, n) for n in tarstream.__all__ if n.endswith("Error")]
    assert len(errors) == 17
    for error_type in errors:
        assert error_type.__name__ in doc
        assert issubclass(error_type, tarstream.TarstreamError)
        if issubclass(error_type, tarstream.ShardError):
            error = error_type("why", shard="a.tar", member="k.txt", offset=3)
        else:
            error = error_type("why")
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is error_type and str(copy) == str(error)


def test_every_warning_is_exported_drawn_in_the_tree_and_raised_by_its_module() -> None:
    doc = tarstream.errors.__doc__ or ""
    warning_types = [getattr(tarstream, n) for n in tarstream.__all__ if n.endswith("Warning")]
    assert {w.__name__ for w in warning_types} == {
        "TarstreamWarning",
        "ResumeWarning",
        "EpochWarning",
        "CacheWarning",
    }
    for warning_type in warning_types:
        assert warning_type.__name__ in doc
        assert issubclass(warning_type, tarstream.TarstreamWarning)
        assert issubclass(warning_type, UserWarning)
    assert issubclass(tarstream.ImageTooLargeError, ValueError)


def test_writing_shards_does_not_import_torch(tmp_path: object) -> None:
    code = f"""
import sys, tarstream
with tarstream.ShardWriter({str(tmp_path)!r} + "/t-%02d.tar") as w:
    w.write({{"__key__": "k", "txt": "x"}})
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_torch_reading_and_pipelines_work_as_plain_iterables(tmp_path: object) -> None:
    code = f"""
import sys
sys.modules["torch"] = None  # as if torch were not installed: importing it fails
import tarstream
with tarstream.ShardWriter({str(tmp_path)!r} + "/t-%02d.tar") as w:
    for i in range(10):
        w.write({{"__key__": f"{{i:02d}}", "txt": str(i), "cls": i}})
stream = tarstream.TarStream({str(tmp_path)!r} + "/t-00.tar", seed=3)
assert type(stream).__mro__[-1] is object and len(stream) == 10
batches = list(stream.shuffle(4).decode().to_tuple("txt", "cls").batch(5))
assert sorted(int(t) for b in batches for t in b[0]) == list(range(10))
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_with_torch_a_pipeline_is_an_iterable_dataset(tmp_path: object) -> None:
    from torch.utils.data import IterableDataset

    with tarstream.ShardWriter(f"{tmp_path}/t-%02d.tar") as w:
        w.write({"__key__": "k", "txt": "x"})
    assert isinstance(tarstream.TarStream(f"{tmp_path}/t-00.tar"), IterableDataset)
