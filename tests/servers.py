"""Real S3-compatible servers on loopback for integration tests.

`threaded_s3_server()` runs moto's S3 server in-process (fast, lives for the test session).
`MotoProcess` runs `python -m moto.server` as a child process that a fault test can kill and
start again on the same port ("the S3 server goes away and comes back"). moto keeps its state in
memory, so a restarted server starts empty: buckets and in-progress multipart uploads are gone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing is listening on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts TCP connections on `port` (or fail after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with code {proc.returncode} while starting")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout:.0f}s")


@contextmanager
def threaded_s3_server() -> Iterator[str]:
    """moto's S3 server in a thread of this process; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    try:
        wait_for_port(port, timeout=30)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.stop()


class MotoProcess:
    """`python -m moto.server` in its own session; `kill()` and `start()` keep the same port."""

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="moto-server-", suffix=".log")[1])

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        if self.running:
            raise RuntimeError(f"moto server on port {self.port} is already running")
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, timeout, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise RuntimeError(f"{exc}; server log:\n{self.log_tail()}") from exc

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown) and wait until its port is closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self, timeout: float = 60) -> None:
        self.kill()
        self.start(timeout)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        self.kill()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> MotoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
