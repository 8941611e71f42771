"""Fault injection: SIGKILLed training, an S3 server lost mid-upload, MLflow unreachable.

Each test prints its figures (run with -s to see them).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from seppo_lib.bank import CheckpointBank
from seppo_lib.config import StorageConfig, load_config
from seppo_lib.errors import CheckpointError
from seppo_lib.orchestrate import run_rounds
from seppo_lib.storage import StorageError, open_store
from seppo_lib.storage.s3 import S3Store
from seppo_lib.tracking.steps import spool_dir
from tests.helpers import make_image_folder, tiny_config
from tests.integration.conftest import s3_client
from tests.mlflow_server import MlflowServer, free_port, mlflow_server  # noqa: F401 - fixture
from tests.servers import MotoProcess

pytestmark = pytest.mark.servers
REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "fault_worker.py"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- SIGKILL at random points of a multi-round run ------------------------------------------

ROUNDS = 3
KILLS = 5
# worker log lines that mark progress: kill points are drawn relative to them
PROGRESS = re.compile(r"prepared \d+ rows|reference samples from|committed (initial|ckpt-\d+)")


class Worker:
    """`tests/fault_worker.py` in its own process group; stdout lines arrive on a queue."""

    def __init__(self, overrides: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *overrides], cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], count: int, timeout: float = 120) -> bool:
        """Block until `count` lines matched `pattern` (True) or the process ended (False)."""
        deadline, seen = time.monotonic() + timeout, 0
        while seen < count:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                return False
            self.log.append(line)
            seen += bool(pattern.search(line))
        return True

    def kill(self) -> bool:
        """SIGKILL the worker; True if it was still running (the kill interrupted work)."""
        alive = self.proc.poll() is None
        if alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return alive

    def finish(self, timeout: float = 180) -> None:
        self.wait_for(re.compile(r"^DONE "), 1, timeout)
        assert self.proc.wait(timeout=30) == 0, "\n".join(self.log[-30:])

    def last_event(self) -> str:
        hits = [line.split(": ", 1)[-1] for line in self.log if PROGRESS.search(line) or line == "READY"]
        return hits[-1][:60] if hits else "starting"


def _check_bank(bank_uri: str, run_id: str, cache: Path) -> list[str]:
    """Every checkpoint the manifest lists is complete and verifies (fresh cache: real downloads)."""
    bank = CheckpointBank.open(bank_uri, run_id, cache)
    entries = bank.entries()
    assert [e.round for e in entries] == list(range(len(entries)))
    assert [e.parent for e in entries] == [None] + [e.id for e in entries[:-1]]
    for e in entries:
        bank.fetch(e.id)  # raises on a missing file or a sha256 mismatch
    return [e.id for e in entries]


@dataclass
class Campaign:
    """Start, SIGKILL and restart the worker until KILLS kills interrupted it, then let it finish."""

    overrides: list[str]
    env: dict[str, str]
    bank_uri: str
    run_id: str
    tmp: Path
    round_s: float
    rng: random.Random = field(default_factory=lambda: random.Random(1234))
    kills: int = 0
    attempts: list[str] = field(default_factory=list)
    worker: Worker | None = None

    def committed(self) -> int:
        return len(CheckpointBank.open(self.bank_uri, self.run_id, self.tmp / "probe").entries())

    def run(self) -> None:
        while True:
            before = self.committed()
            self.worker = Worker(self.overrides, self.env)
            assert self.worker.wait_for(re.compile("^READY$"), 1), "\n".join(self.worker.log)
            if self.kills >= KILLS:
                self.worker.finish()
                after = _check_bank(self.bank_uri, self.run_id, self.tmp / f"verify-{len(self.attempts)}")
                self.attempts.append(f"attempt {len(self.attempts) + 1}: ran to the end, rounds {max(before - 1, 0)} -> {len(after) - 1}")
                return
            if not self.kill_at_random_point(before):
                return
            assert len(self.attempts) < 3 * KILLS

    def kill_at_random_point(self, before: int) -> bool:
        """Kill after a random one of the next few progress lines (never past the last round's
        sampling) plus a random delay shorter than a round; True if it interrupted work. Each
        attempt gets at most ~1.5 rounds further, so the kills spread over the whole run."""
        assert self.worker is not None
        remaining = (2 if before == 0 else 0) + 2 * (ROUNDS - max(before - 1, 0)) - 1
        anchor, delay = self.rng.randint(0, min(remaining, 3)), self.rng.uniform(0.0, 0.8 * self.round_s)
        t0 = time.monotonic()
        alive = self.worker.wait_for(PROGRESS, anchor)
        time.sleep(delay)
        at, interrupted = self.worker.last_event(), self.worker.kill()
        assert alive or not interrupted
        self.kills += interrupted
        ids = _check_bank(self.bank_uri, self.run_id, self.tmp / f"verify-{len(self.attempts)}")
        keys = open_store(self.bank_uri).list(self.run_id + "/")
        leftovers = len([k for k in keys if k.split("/")[1] not in ids and k != f"{self.run_id}/manifest.json"])
        self.attempts.append(
            f"attempt {len(self.attempts) + 1}: {'SIGKILL' if interrupted else 'finished before the kill'} "
            f"{time.monotonic() - t0:.1f}s after READY (after '{at}'), rounds {max(before - 1, 0)} -> {len(ids) - 1}, "
            f"uncommitted files in S3: {leftovers}"
        )  # fmt: skip
        if not interrupted:  # it ended on its own before the kill: it must have finished cleanly
            log = self.worker.log
            assert self.worker.proc.returncode == 0 and log[-1].startswith("DONE"), "\n".join(log[-30:])
        return interrupted

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.kill()


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(s3_server: str, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", n=16)
    fast = [f"train.n_rounds={ROUNDS}", "train.updates_per_round=2", "sampling.num_inference_steps=2"]
    reference = tiny_config(tmp_path / "uninterrupted", data, *fast)
    start = time.monotonic()
    final_id = run_rounds(reference).final_checkpoint
    reference_s = time.monotonic() - start

    bucket = f"fault-{uuid.uuid4().hex[:10]}"
    s3_client(s3_server).create_bucket(Bucket=bucket)
    bank_uri = f"s3://{bucket}/bank"
    overrides = [f"workdir={tmp_path / 'work'}", f"bank.uri={bank_uri}", f"bank.cache_dir={tmp_path / 'cache'}",
                 f"data.source={data}", "tracking.enabled=false", *fast]  # fmt: skip
    run_id = load_config("tiny", overrides).run_id
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_server, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # preparing the data costs about two rounds
    campaign = Campaign(overrides, env, bank_uri, run_id, tmp_path, round_s=reference_s / (ROUNDS + 2))
    try:
        campaign.run()
    finally:
        campaign.stop()
    got = load_file(str(CheckpointBank.open(bank_uri, run_id, tmp_path / "final").fetch(final_id) / WEIGHTS))
    ref_bank = CheckpointBank.open(reference.bank.uri, reference.run_id, tmp_path / "final-ref")
    want = load_file(str(ref_bank.fetch(final_id) / WEIGHTS))
    diff = max(float((got[k] - want[k]).abs().max()) for k in want)
    print(f"\nSIGKILL fault test: {campaign.kills} kills survived over {len(campaign.attempts)} attempts "
          f"(uninterrupted reference run {reference_s:.1f}s in-process)")  # fmt: skip
    print("\n".join(campaign.attempts))
    print(f"final {final_id}: max abs diff vs uninterrupted = {diff:.3e}")
    assert campaign.kills >= KILLS and diff <= 1e-6


# ---- the S3 server goes away during a checkpoint upload -----------------------------------


@pytest.fixture(scope="module")
def moto(aws_env: dict[str, str]) -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


class UploadOutage:
    """Kill the S3 server just before the 2nd file of checkpoint `ckpt` is uploaded.

    The server is a stand-in for one with persistent disks (MinIO): what it held at the kill
    is snapshotted and restored when it comes back. With `come_back` it comes back during the
    client's retry backoff (at its first failed attempt); otherwise only when `restore()` is called.
    """

    def __init__(self, server: MotoProcess, bucket: str, ckpt: str, come_back: bool) -> None:
        self.server, self.bucket, self.ckpt, self.come_back = server, bucket, ckpt, come_back
        self.uploads: list[str] = []
        self.snapshot: list[dict[str, Any]] = []
        self.failed_attempts: list[str] = []
        self.killed = self.restored = False

    def before_send(self, request: Any, **_: Any) -> None:
        if f"/{self.ckpt}/" not in request.url or self.killed:
            return
        if request.url not in self.uploads:
            self.uploads.append(request.url)
        if len(self.uploads) == 2:
            client = s3_client(self.server.endpoint)
            for obj in client.list_objects_v2(Bucket=self.bucket).get("Contents", []):
                got = client.get_object(Bucket=self.bucket, Key=obj["Key"])
                self.snapshot.append({"Key": obj["Key"], "Body": got["Body"].read(), "Metadata": got["Metadata"]})
            self.server.kill()
            self.killed = True

    def needs_retry(self, attempts: int, operation: Any, caught_exception: Exception | None = None, **_: Any) -> None:
        if caught_exception is not None and self.killed:
            self.failed_attempts.append(f"{operation.name} attempt {attempts}: {type(caught_exception).__name__}")
            if self.come_back and not self.restored:
                self.restore()

    def restore(self) -> None:
        self.server.start()
        client = s3_client(self.server.endpoint)
        client.create_bucket(Bucket=self.bucket)
        for obj in self.snapshot:
            client.put_object(Bucket=self.bucket, **obj)
        self.restored = True


def _bank_with_outage(server: MotoProcess, tmp: Path, attempts: int, come_back: bool) -> tuple[CheckpointBank, UploadOutage]:
    if not server.running:
        server.start()
    bucket = f"outage-{uuid.uuid4().hex[:10]}"
    s3_client(server.endpoint).create_bucket(Bucket=bucket)
    store = S3Store.from_uri(f"s3://{bucket}/bank", StorageConfig(s3_endpoint_url=server.endpoint, s3_max_attempts=attempts))
    bank = CheckpointBank(store, "run", tmp / "cache")
    bank.commit(_ckpt(tmp, "initial"), "initial", round_idx=0, step=0, parent=None)
    outage = UploadOutage(server, bucket, "ckpt-000001", come_back)
    store._client.meta.events.register("before-send.s3.PutObject", outage.before_send)
    store._client.meta.events.register("needs-retry.s3", outage.needs_retry)
    return bank, outage


def _ckpt(root: Path, tag: str) -> Path:
    folder = root / f"src-{tag}"
    for rel, size in (("unet/diffusion_pytorch_model.safetensors", 4096), ("unet/config.json", 64), ("state/trainer.json", 32)):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(os.urandom(size))
    return folder


def _reader(bank: CheckpointBank, tmp: Path, name: str) -> CheckpointBank:
    store = S3Store.from_uri(bank.store.uri, StorageConfig(s3_endpoint_url=bank.store.endpoint))  # type: ignore[attr-defined]
    return CheckpointBank(store, bank.run_id, tmp / name)


def test_s3_back_during_the_retries_the_commit_completes(moto: MotoProcess, tmp_path: Path) -> None:
    bank, outage = _bank_with_outage(moto, tmp_path, attempts=8, come_back=True)
    bank.commit(_ckpt(tmp_path, "one"), "ckpt-000001", round_idx=1, step=1, parent="initial")
    print(f"\nS3 lost during upload {len(outage.uploads)} of ckpt-000001, back during backoff: "
          f"failed attempts {outage.failed_attempts}; outcome: committed")  # fmt: skip
    assert outage.killed and outage.restored and outage.failed_attempts
    reader = _reader(bank, tmp_path, "reader")
    assert reader.ids() == ["initial", "ckpt-000001"] and reader.fetch("ckpt-000001").is_dir()


def test_s3_gone_past_the_retries_fails_clearly_and_lists_nothing_half(moto: MotoProcess, tmp_path: Path) -> None:
    bank, outage = _bank_with_outage(moto, tmp_path, attempts=2, come_back=False)
    manifest_before = bank.store.get_bytes("run/manifest.json")
    with pytest.raises((StorageError, CheckpointError)) as err:
        bank.commit(_ckpt(tmp_path, "one"), "ckpt-000001", round_idx=1, step=1, parent="initial")
    message = str(err.value)
    print(f"\nS3 lost during upload {len(outage.uploads)} of ckpt-000001, down past {len(outage.failed_attempts)} "
          f"failed attempts: {type(err.value).__name__}: {message}")  # fmt: skip
    assert "\n" not in message and moto.endpoint in message and "ckpt-000001" in message
    outage.restore()  # the server (and its disk) come back
    reader = _reader(bank, tmp_path, "reader")
    assert bank.store.get_bytes("run/manifest.json") == manifest_before and reader.ids() == ["initial"]
    with pytest.raises(CheckpointError, match="not committed"):
        reader.fetch("ckpt-000001")
    bank.commit(_ckpt(tmp_path, "one-again"), "ckpt-000001", round_idx=1, step=1, parent="initial")  # a rerun completes
    assert _reader(bank, tmp_path, "reader-2").fetch("ckpt-000001").is_dir()


# ---- MLflow unreachable during a training step --------------------------------------------


def test_mlflow_unreachable_step_commits_spools_and_a_retry_replays(
    mlflow_server: MlflowServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seppo_lib.steps import prepare_data, train_round
    from seppo_lib.steps.common import open_bank, run_dir

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = make_image_folder(tmp_path / "data", n=8)
    experiment = f"faults-{uuid.uuid4().hex[:8]}"
    common = ("train.method=sft", "train.n_rounds=1", "train.updates_per_round=2", "bank.run_id=mlflow-down",
              f"tracking.experiment={experiment}")  # fmt: skip
    prepared = tiny_config(tmp_path, data, *common)  # tracking off while preparing
    data_dir = run_dir(prepared) / "data"
    prepare_data.run(prepared, data_dir)

    dead = f"http://127.0.0.1:{free_port()}"
    down = tiny_config(tmp_path, data, *common, "tracking.enabled=true", f"tracking.mlflow_uri={dead}")
    with caplog.at_level(logging.WARNING, logger="seppo_lib.tracking.mlflow_logger"):
        result = train_round.run(down, data_dir, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and dead in r.getMessage()]
    spools = sorted(spool_dir(down).glob("train_round-1-*.jsonl"))
    assert not result["skipped"] and open_bank(down).ids() == ["initial", result["checkpoint"]]
    assert warnings and "unreachable" in warnings[0] and len(spools) == 1
    records = len(spools[0].read_text().splitlines())

    # the retry: same run (bank.run_id), the tracking URI from the environment, server up
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    retry = tiny_config(tmp_path, data, *common, "tracking.enabled=true")
    assert retry.run_id == down.run_id
    again = train_round.run(retry, data_dir, 1)
    assert again["skipped"] and again["checkpoint"] == result["checkpoint"]
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], "tags.`seppo.step` = 'train_round-1'")
    replayed = [r for r in runs if "loss" in r.data.metrics]
    assert len(replayed) == 1, [r.data.metrics for r in runs]
    history = client.get_metric_history(replayed[0].info.run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    assert replayed[0].data.tags["seppo.checkpoint"] == result["checkpoint"]
    assert not list(spool_dir(down).glob("*.jsonl")) and list(spool_dir(down).glob("*.jsonl.replayed"))
    print(f"\nMLflow at {dead} down: {result['checkpoint']} committed, warning: {warnings[0][:90]}...; "
          f"{records} spooled lines replayed into run {replayed[0].info.run_id[:12]} (loss steps {[m.step for m in history]})")
