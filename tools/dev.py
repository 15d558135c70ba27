#!/usr/bin/env python3
"""Set up the development environment and run tarstream's main jobs.

    python3 tools/dev.py quickstart   # write shards from a small sample, stream them back
    python3 tools/dev.py test         # ruff, mypy and the whole test suite
    python3 tools/dev.py bench ARGS   # a benchmark from tools/ (see tools/bench.py)
    python3 tools/dev.py bench peers  # beside litdata, MosaicML, webdataset (.venv-peers)
    python3 tools/dev.py bench quality  # shuffle quality beside MosaicML's py1e (.venv-peers)

Each command creates ``.venv`` in the repository on first use (Python >= 3.10 and pip are
all it needs) and reuses it while ``pyproject.toml`` and ``constraints.txt`` are unchanged.
Only the standard library is used here, so it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".tarstream-installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create or refresh .venv with tarstream (editable) and its dev, torch extras."""
    if sys.version_info < (3, 10):  # noqa: UP036 - this script may run on any python3
        sys.exit(f"tarstream needs Python >= 3.10, this is {sys.version.split()[0]}")
    fingerprint = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating virtual environment {VENV.name}/", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing tarstream[dev,torch] with constraints.txt (first run takes a minute)")
    log = VENV / "install.log"
    cmd = [
        str(PYTHON),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-c",
        str(ROOT / "constraints.txt"),
        "-e",
        f"{ROOT}[dev,torch]",
    ]
    with open(log, "w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if result.returncode != 0:
        sys.stdout.write(log.read_text()[-5000:])
        sys.exit(f"pip install failed (exit {result.returncode}); full log in {log}")
    STAMP.write_text(fingerprint)


PEERS = ROOT / ".venv-peers"
PEERS_REQUIREMENTS = ROOT / "tools" / "peers-requirements.txt"
#: MosaicML imports torchvision's VisionDataset and to_tensor when imported; no torchvision
#: build matches this torch, so the peers' environment has these stand-ins (unused here).
TORCHVISION_STUB = {
    "__init__.py": '"""Stand-in: no torchvision build matches this torch."""\n',
    "datasets/__init__.py": "class VisionDataset:\n    pass\n",
    "transforms/__init__.py": "",
    "transforms/functional.py": "def to_tensor(x):\n    raise NotImplementedError\n",
}


def ensure_peers_venv() -> Path:
    """Create or refresh .venv-peers: litdata, MosaicML streaming, webdataset, tarstream."""
    python = PEERS / BIN.name / PYTHON.name
    stamp = PEERS / ".tarstream-installed"
    fingerprint = hashlib.sha256(PEERS_REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == fingerprint and python.exists():
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(PEERS)
    print(f"installing the peers into {PEERS.name}/ (first run takes minutes)", flush=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    log = PEERS / "install.log"
    with open(log, "w") as out:
        steps = [
            [*pip, "install", "-r", str(PEERS_REQUIREMENTS), "-e", str(ROOT)],
            [*pip, "uninstall", "-y", "torchvision"],
        ]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode:
                sys.stdout.write(log.read_text()[-5000:])
                sys.exit(f"setting up {PEERS.name} failed; full log in {log}")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for name, text in TORCHVISION_STUB.items():
        path = Path(site) / "torchvision" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    stamp.write_text(fingerprint)
    return python


def run(*args: str) -> int:
    return subprocess.run([str(PYTHON), *args], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("quickstart", "test", "bench", "setup"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "bench" and rest[:1] in (["peers"], ["quality"]):
        peers = ensure_peers_venv()
        script = str(ROOT / "tools" / f"bench_{rest[0]}.py")
        return subprocess.run([str(peers), script, *rest[1:]], cwd=ROOT).returncode
    ensure_venv()
    if command == "setup":
        return 0
    if command == "quickstart":
        return run(str(ROOT / "examples" / "quickstart.py"), *rest)
    if command == "bench":
        return run(str(ROOT / "tools" / "bench.py"), *rest)
    for step in (["-m", "ruff", "check", "."], ["-m", "mypy"]):
        print("$", "python", *step, flush=True)
        code = run(*step)
        if code:
            return code
    print("$ python -m pytest", *rest, flush=True)
    return run("-m", "pytest", *rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
