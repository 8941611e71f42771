"""A real `mlflow server` on loopback for integration tests.

`MlflowServer.start(root)` launches `mlflow server` in its own process group with a
sqlite backend and a local artifact destination (or S3 when `SEPPO_TEST_MLFLOW_ARTIFACTS`
names an s3:// URI), waits for `/health`, and `stop()` kills the whole group.
Tests use the session-scoped `mlflow_server` fixture (import it into the test module).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class MlflowServer:
    url: str
    root: Path
    artifacts: str
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, root: Path) -> MlflowServer:
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        artifacts = os.environ.get("SEPPO_TEST_MLFLOW_ARTIFACTS") or str(root / "artifacts")
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", artifacts,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        log = open(root / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        server = cls(url=f"http://127.0.0.1:{port}", root=root, artifacts=artifacts, process=proc)
        server._wait_healthy()
        return server

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}: {self.log_tail()}")
            if _healthy(self.url):
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {STARTUP_TIMEOUT_S:.0f}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever of it is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue


_shared: MlflowServer | None = None
_users = 0


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow server per test session, shared by every module that imports this fixture.

    Each importing module gets its own fixture definition; the module-level reference count
    keeps them on one server process.
    """
    global _shared, _users
    if _shared is None:
        _shared = MlflowServer.start(tmp_path_factory.mktemp("mlflow-server"))
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _shared.stop()
            _shared = None
