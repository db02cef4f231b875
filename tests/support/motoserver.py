"""moto_server as a real subprocess on a free loopback port: a stand-in EC2 endpoint.

The operator under test talks to it over HTTP exactly as it would to AWS
(AWS_ENDPOINT_URL=server.url), so there is no in-process mocking involved.

    with MotoServer() as moto:
        boto3.client("ec2", endpoint_url=moto.url, ...)
        moto.reset()                      # forget every resource

The process runs in its own process group and is killed by stop(), at
interpreter exit, and by the kernel if the Python process dies first.
"""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.cluster.controlplane import LOOPBACK, ManagedProcess, free_ports, remove_stale_dirs

TMP_PREFIX = "cml-moto-"


class MotoServerError(RuntimeError):
    """moto_server did not start or did not answer."""


def moto_server_argv() -> list[str]:
    """The venv's moto_server console script, or `python -m moto.server`."""
    script = Path(sys.executable).parent / "moto_server"
    if os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "moto.server"]


@dataclass(eq=False)  # identity semantics: it owns processes
class MotoServer:
    """A moto_server subprocess bound to 127.0.0.1."""

    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    port_attempts: int = 3

    port: int = field(default=0, init=False)
    dir: Path | None = field(default=None, init=False)
    process: ManagedProcess | None = field(default=None, init=False, repr=False)
    #: Seconds from launch until it answered HTTP.
    startup_seconds: float | None = field(default=None, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> MotoServer:
        """Launch moto_server and wait until it answers HTTP."""
        with self._lock:
            if self.dir is not None:
                raise MotoServerError("moto_server already started")
            remove_stale_dirs(TMP_PREFIX)
            self.dir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
            atexit.register(self.stop)
            try:
                self._launch_with_fresh_port()
            except BaseException:
                self.stop()
                raise
            return self

    def _launch_with_fresh_port(self) -> None:
        assert self.dir is not None
        for attempt in range(1, self.port_attempts + 1):
            (self.port,) = free_ports(1)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.process = ManagedProcess(
                "moto_server", [*moto_server_argv(), "-H", LOOPBACK, "-p", str(self.port)], self.dir / "moto.log", env
            )
            began = time.monotonic()
            self.process.start()
            try:
                self._wait_answering()
                self.startup_seconds = time.monotonic() - began
                return
            except MotoServerError as exc:
                self.process.stop(self.stop_timeout)
                if attempt == self.port_attempts or "already in use" not in str(exc):
                    raise

    def _wait_answering(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while not self._answers():
            if not self.process.running():
                raise MotoServerError(f"moto_server exited during start-up; log tail:\n{self.process.log_tail()}")
            if time.monotonic() >= deadline:
                raise MotoServerError(
                    f"moto_server did not answer within {self.start_timeout:.0f}s; log tail:\n{self.process.log_tail()}"
                )
            time.sleep(0.1)

    def _request(self, method: str, path: str, timeout: float = 5) -> int:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def _answers(self) -> bool:
        try:
            self._request("GET", "/moto-api/data.json", timeout=2)  # any HTTP status will do
            return True
        except OSError:
            return False

    def reset(self) -> None:
        """Forget every resource in every service and region (POST /moto-api/reset)."""
        status = self._request("POST", "/moto-api/reset")
        if status != 200:
            raise MotoServerError(f"POST /moto-api/reset answered HTTP {status}")

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def stop(self) -> None:
        """Kill the process group and remove the temp dir. Idempotent; safe at exit."""
        with self._lock:
            if self.process is not None:
                self.process.stop(self.stop_timeout)
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            atexit.unregister(self.stop)

    def __enter__(self) -> MotoServer:
        if self.dir is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
