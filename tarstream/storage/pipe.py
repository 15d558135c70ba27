"""``pipe:COMMAND`` shards: the output of a command, run as an argument list (no shell)."""

from __future__ import annotations

import io
import shlex
import subprocess
import tempfile
from typing import Any, cast

from ..errors import ShardError
from .urls import PIPE_PREFIX

__all__ = ["PipeInput"]


class PipeInput(io.RawIOBase):
    """The output of ``pipe:COMMAND``, run as an argument list (no shell).

    At the end of the output the command's exit status is checked; closing early stops
    the command and waits for it, so no child process outlives the read.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.argv = shlex.split(url[len(PIPE_PREFIX) :])
        if not self.argv:
            raise ValueError(f"{url!r}: pipe: needs a command")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self._process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr
            )
        except OSError as e:
            self._stderr.close()
            raise ShardError(f"cannot run {self.argv[0]!r}: {e}", shard=url) from e
        self._stdout = cast(io.BufferedReader, self._process.stdout)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._stdout.readinto(buffer)
        if not n:
            status = self._process.wait()
            if status:
                self._stderr.seek(0)
                said = self._stderr.read()[-500:].decode("utf-8", "replace").strip()
                raise ShardError(
                    f"command {self.argv[0]!r} exited with status {status}"
                    + (f": {said}" if said else ""),
                    shard=self.url,
                )
        return n or 0

    def close(self) -> None:
        if not self.closed:
            self._stdout.close()
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._stderr.close()
        super().close()
