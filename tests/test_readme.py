"""The README's examples that say they are tested run here, as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import make_samples, write_dataset

README = Path(__file__).resolve().parent.parent / "README.md"
_TESTED = re.compile(r"<!-- tested: [^>]*-->\n```python\n(.*?)```", re.S)


def _examples() -> list[str]:
    return _TESTED.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_tested_examples() -> None:
    assert len(_examples()) >= 1


@pytest.mark.parametrize("number", range(len(_examples())))
def test_a_readme_example_runs(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    (tmp_path / "out").mkdir()
    write_dataset(tmp_path / "out", make_samples(30), max_samples=8)
    monkeypatch.chdir(tmp_path)
    exec(compile(_examples()[number], f"README.md example {number}", "exec"), {})
