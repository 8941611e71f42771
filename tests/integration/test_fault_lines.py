"""Faults end in one line (issue 16, item 6): a hanging or dead S3 endpoint within a time budget,
disk full and permission errors naming the path, store ValueErrors, all under `SeppoError`.

Each test prints its figures (run with -s to see them).
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seppo_lib.cli import main
from seppo_lib.config import StorageConfig
from seppo_lib.errors import SeppoError
from seppo_lib.storage import StorageError
from seppo_lib.storage.s3 import S3Store
from tests.helpers import make_image_folder
from tests.servers import LOOPBACK, free_port

BUDGET_S = 3.0


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """An HTTP endpoint on loopback that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


def _store(endpoint: str, attempts: int = 8) -> S3Store:
    settings = StorageConfig(s3_endpoint_url=endpoint, s3_max_attempts=attempts)
    return S3Store.from_uri("s3://bucket/prefix", settings, time_budget=BUDGET_S)


@pytest.mark.parametrize("action", ["get_bytes", "put_bytes", "list"])
def test_hanging_endpoint_gives_up_within_the_budget_naming_it(
    aws_env: dict[str, str], hanging_endpoint: str, caplog: pytest.LogCaptureFixture, action: str
) -> None:
    store = _store(hanging_endpoint)
    call: dict[str, Any] = {"get_bytes": lambda: store.get_bytes("k"), "put_bytes": lambda: store.put_bytes("k", b"x"),
                            "list": lambda: store.list("")}  # fmt: skip
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="seppo_lib.storage.s3_retry"), pytest.raises(StorageError) as err:
        call[action]()
    took = time.monotonic() - start
    message = str(err.value)
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    print(f"\nhanging endpoint, {action}, budget {BUDGET_S:g}s: gave up after {took:.2f}s, {len(retries)} retry line(s): {message}")
    assert took < BUDGET_S + 0.5
    assert hanging_endpoint in message and "budget" in message and "\n" not in message
    attempts = int(re.search(r"failed (\d+) time", message).group(1))  # type: ignore[union-attr]
    assert len(retries) == attempts - 1 and all(hanging_endpoint in line for line in retries)


def test_dead_endpoint_retries_stop_at_the_budget(aws_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"  # connection refused: fast failures, many retries
    store = _store(dead, attempts=50)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="seppo_lib.storage.s3_retry"), pytest.raises(StorageError) as err:
        store.get_bytes("k")
    took = time.monotonic() - start
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    print(f"\ndead endpoint, budget {BUDGET_S:g}s, 50 retries allowed: gave up after {took:.2f}s and {len(retries)} retries")
    assert took < BUDGET_S + 0.5 and retries and dead in str(err.value)


def test_store_key_errors_and_storage_errors_are_seppo_errors(aws_env: dict[str, str]) -> None:
    store = _store("http://127.0.0.1:9")
    with pytest.raises(SeppoError, match="escapes the store root"):
        store.get_bytes("../outside")
    assert issubclass(StorageError, SeppoError)


# ---- disk full and permission errors through the CLI ---------------------------------------


def _prepare_args(tmp: Path) -> list[str]:
    data = make_image_folder(tmp / "d", n=2)
    return ["prepare", "--config", "tiny", f"workdir={tmp / 'w'}", f"bank.uri={tmp / 'bank'}",
            f"bank.cache_dir={tmp / 'cache'}", f"data.source={data}", "--output", str(tmp / "out")]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),  # f.write: no filename
        (PermissionError(errno.EACCES, "Permission denied", "FILE"), "permission denied"),
    ],
)
def test_disk_full_and_permission_errors_are_one_line_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error: OSError, needle: str
) -> None:
    shard = tmp_path / "out" / "shard-00000.safetensors"
    if error.filename == "FILE":
        error.filename = str(shard)

    def fail(*_: Any, **__: Any) -> None:
        raise error

    monkeypatch.setattr("seppo_lib.data.shards.save_file", fail)
    assert main(_prepare_args(tmp_path)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("seppo: error:")]
    print(f"\n{errno.errorcode[error.errno or 0]}: {lines}")
    assert len(lines) == 1 and needle in lines[0]
    assert str(shard if error.filename else tmp_path / "out") in lines[0]


def test_programming_errors_are_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any, **__: Any) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr("seppo_lib.data.shards.save_file", fail)
    with pytest.raises(TypeError, match="a bug"):
        main(_prepare_args(tmp_path))
