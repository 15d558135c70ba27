"""Loopback servers and a fault-injecting file system for the remote-storage tests."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

S3_KEYS = {"key": "testing", "secret": "testing-secret-value"}


def s3_credentials() -> dict[str, str]:
    """A credentials function for Storage: importable, so spawned workers can call it."""
    return dict(S3_KEYS)


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 (a free port); yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def upload(endpoint: str, bucket: str, directory: Path, prefix: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["key"],
        aws_secret_access_key=S3_KEYS["secret"],
    )
    s3.create_bucket(Bucket=bucket)
    for path in sorted(directory.rglob("*")):  # shards, manifest and .tarstream/ sidecars
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(directory).as_posix()}")


# -- a file system that fails on purpose -------------------------------------------------------
@dataclass
class Fault:
    """Fail reads of ``path`` that reach byte ``at``, on the ``attempts`` (1-based) given.

    kind: "reset" (ConnectionResetError), "short" (the body ends early), "forbidden"
    (PermissionError), "change" (the object is replaced: ETag changes), "stall" (the read
    never returns until ``JOURNAL.release`` is set: a backend without a timeout of its own).
    """

    path: str
    at: int
    attempts: tuple[int, ...] = (1,)
    kind: str = "reset"
    seen: int = 0


@dataclass
class Journal:
    """What FlakyFileSystem was asked: byte ranges fetched per path, opens."""

    faults: list[Fault] = field(default_factory=list)
    ranges: list[tuple[str, int, int]] = field(default_factory=list)
    opens: int = 0
    replaced: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)

    def bytes_fetched(self) -> int:
        return sum(end - start for _, start, end in self.ranges)


JOURNAL = Journal()


class FlakyFile(AbstractBufferedFile):  # type: ignore[misc]
    def _fetch_range(self, start: int, end: int) -> bytes:
        real = self.fs.real(self.path)
        for fault in JOURNAL.faults:
            if fault.path.lstrip("/") == self.path.lstrip("/") and start <= fault.at < end:
                fault.seen += 1
                if fault.seen in fault.attempts:
                    if fault.kind == "reset":
                        raise ConnectionResetError(104, "Connection reset by peer")
                    if fault.kind == "forbidden":
                        raise PermissionError(f"403 Forbidden: {self.path}")
                    if fault.kind == "change":
                        JOURNAL.replaced.add(self.path)
                        raise ConnectionResetError(104, "Connection reset by peer")
                    if fault.kind == "short":
                        end = fault.at
                    if fault.kind == "stall":
                        JOURNAL.release.wait()
        JOURNAL.ranges.append((self.path, start, end))
        with open(real, "rb") as f:
            f.seek(start)
            return f.read(end - start)


class FlakyFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """``flaky://`` + a local path; faults and a journal from ``JOURNAL``."""

    protocol = "flaky"
    cachable = False

    @staticmethod
    def real(path: str) -> str:
        return "/" + path.lstrip("/")

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        real = self.real(path)
        if not os.path.exists(real):
            raise FileNotFoundError(path)
        size = os.path.getsize(real)
        tag = hashlib.md5(f"{path}:{size}".encode()).hexdigest()
        if path in JOURNAL.replaced:
            tag = "replaced-" + tag
        return {"name": path, "size": size, "type": "file", "ETag": tag}

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> FlakyFile:
        JOURNAL.opens += 1
        kwargs.pop("autocommit", None)
        return FlakyFile(self, path, mode, **kwargs)


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


# -- an HTTP server that can cut a body short ---------------------------------------------------
@contextmanager
def http_server(
    directory: Path, *, cut: dict[str, int] | None = None, forbidden: frozenset[str] = frozenset()
) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 without Content-Length (the body ends when the
    connection closes); a file named in ``cut`` is sent only up to that many bytes; a file
    named in ``forbidden`` is refused with 403."""
    cut = cut or {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            path = directory / self.path.lstrip("/")
            if path.name in forbidden:
                self.send_error(403)
                return
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()[: cut.get(path.name)]
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data)

        def do_HEAD(self) -> None:
            path = directory / self.path.lstrip("/")
            self.send_response(403 if path.name in forbidden else 200 if path.is_file() else 404)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve(Handler) as base:
        yield base


@contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run ``handler`` on 127.0.0.1 (a free port) in background threads; yield its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def ranged_http_server(
    objects: dict[str, bytes], served: list[tuple[str, int]] | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Serve ``objects`` (name → bytes, replaceable while served) on 127.0.0.1 the way an
    object store does: HEAD gives size and a strong ETag, GET honours ``Range`` (206) and
    answers 412 when ``If-Match`` names another ETag. Yields the base URL and ``objects``;
    each GET's object name and bytes sent are appended to ``served``."""
    log = served if served is not None else []

    def etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _headers(self, data: bytes, status: int, length: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.send_header("ETag", etag(data))
            self.send_header("Accept-Ranges", "bytes")

        def _found(self) -> bytes | None:
            data = objects.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404)
            elif self.headers.get("If-Match") not in (None, etag(data)):
                self.send_error(412)
                return None
            return data

        def do_HEAD(self) -> None:
            data = self._found()
            if data is not None:
                self._headers(data, 200, len(data))
                self.end_headers()

        def do_GET(self) -> None:
            data = self._found()
            if data is None:
                return
            ranged = self.headers.get("Range", "").removeprefix("bytes=")
            first, _, last = ranged.partition("-")
            start, end = int(first or 0), min(int(last or len(data) - 1), len(data) - 1)
            self._headers(data, 206 if ranged else 200, end + 1 - start)
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            log.append((self.path.lstrip("/"), end + 1 - start))  # before the client has it
            self.wfile.write(data[start : end + 1])

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve(Handler) as base:
        yield base, objects
