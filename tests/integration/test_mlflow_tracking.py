"""MlflowLogger against a real `mlflow server` (and the sqlite default without one)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from seppo_lib.config import SeppoConfig
from seppo_lib.tracking.mlflow_logger import (
    PARENT_TAG,
    MlflowLogger,
    TrackingError,
    config_params,
    lineage_tags,
    replay_spool,
    resolve_tracking_uri,
)
from tests.mlflow_server import MlflowServer, free_port, mlflow_server  # noqa: F401 - fixture

servers = pytest.mark.servers


def _dead_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@servers
def test_params_metrics_tags_and_artifacts_reach_the_server(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    cfg = SeppoConfig(name="trk")
    logger = MlflowLogger.open(mlflow_server.url, "trk", "train_round", seppo_run_id=cfg.run_id, tags={"seppo.round": "1"})
    assert logger.online and logger.run_id and logger.parent_run_id
    logger.log_params({**config_params(cfg), "note": "x" * 7000})
    for step, loss in enumerate([0.9, 0.7, 0.5]):
        logger.log_metrics({"loss": loss, "implicit_acc": 0.5 + step / 10}, step=step)
    logger.set_tags(lineage_tags(cfg.config_hash(), git_sha="abc123", dvc_rev="v1", dvc_md5="d41d8", kfp_run_id="kfp-7"))
    (tmp_path / "report.json").write_text('{"world": 0.5}')
    logger.log_artifact(tmp_path / "report.json", "reports")
    logger.close()

    client = MlflowClient(mlflow_server.url)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.beta"] == str(cfg.train.beta)
    assert run.data.params["eval.scorers"] == str(cfg.eval.scorers)
    assert len(run.data.params["note"]) == 6000  # MLflow's param value limit
    assert _history(client, logger.run_id, "loss") == [(0, 0.9), (1, 0.7), (2, 0.5)]
    tags = run.data.tags
    assert tags["seppo.config_hash"] == cfg.config_hash()
    lineage = (tags["seppo.git_sha"], tags["seppo.dvc_rev"], tags["seppo.dvc_md5"], tags["seppo.kfp_run_id"])
    assert lineage == ("abc123", "v1", "d41d8", "kfp-7")
    assert tags["seppo.round"] == "1" and tags[PARENT_TAG] == logger.parent_run_id
    assert [a.path for a in client.list_artifacts(logger.run_id, "reports")] == ["reports/report.json"]


@servers
def test_separate_loggers_share_one_parent_run(mlflow_server: MlflowServer) -> None:
    """Two steps (separate logger objects and clients, as in two KFP pods) join one run tree."""
    seppo_run_id = f"tree-{time.time_ns()}"
    first = MlflowLogger.open(
        mlflow_server.url, "tree", "prepare_data", seppo_run_id=seppo_run_id, parent_tags={"seppo.config_hash": "h"}
    )
    second = MlflowLogger.open(mlflow_server.url, "tree", "train_round", seppo_run_id=seppo_run_id)
    assert first.parent_run_id == second.parent_run_id
    assert first.run_id != second.run_id
    first.close()
    second.close(end_parent=True)

    client = MlflowClient(mlflow_server.url)
    parent = client.get_run(str(first.parent_run_id))
    assert parent.info.run_name == seppo_run_id and parent.info.status == "FINISHED"
    assert parent.data.tags["seppo.role"] == "pipeline" and parent.data.tags["seppo.config_hash"] == "h"
    children = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["prepare_data", "train_round"]
    assert all(r.data.tags["seppo.run_id"] == seppo_run_id for r in children)


@servers
def test_unreachable_server_spools_and_replay_uploads(
    mlflow_server: MlflowServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = _dead_uri()
    spool = tmp_path / "spool.jsonl"
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    logger = MlflowLogger.open(dead, "offline", "train_round", seppo_run_id=f"off-{time.time_ns()}", spool_path=spool)
    logger.log_params({"train": {"beta": 2000.0}})
    for step in range(3):
        logger.log_metrics({"loss": 1.0 - step / 10, "grad_norm": 2.0}, step=step)
    logger.set_tags({"seppo.round": "2"})
    logger.close()
    assert time.monotonic() - started < 10, "an unreachable server must not stall training"

    assert not logger.online and logger.run_id is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert dead in warnings[0] and str(spool) in warnings[0] and f"seppo tracking replay {spool}" in warnings[0]
    kinds = [json.loads(line)["kind"] for line in spool.read_text().splitlines()]
    assert kinds == ["open", "params", "metrics", "metrics", "metrics", "tags", "end"]

    run_id = replay_spool(spool, mlflow_server.url)
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(run_id)
    assert _history(client, run_id, "loss") == [(0, 1.0), (1, 0.9), (2, 0.8)]
    assert run.data.params["train.beta"] == "2000.0" and run.data.tags["seppo.round"] == "2"
    assert run.info.status == "FINISHED" and run.data.tags[PARENT_TAG]
    assert not spool.exists() and spool.with_name("spool.jsonl.replayed").exists()


@servers
def test_server_lost_mid_run_spools_into_the_same_run(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """The client is pointed at a dead port mid-run (what a crashed server looks like to it)."""
    spool = tmp_path / "mid.jsonl"
    logger = MlflowLogger.open(mlflow_server.url, "midrun", "train_round", spool_path=spool)
    logger.log_metrics({"loss": 1.0}, step=0)
    dead = _dead_uri()
    logger.tracking_uri, logger.client = dead, MlflowClient(dead)
    started = time.monotonic()
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.close()
    assert time.monotonic() - started < 20 and not logger.online

    run_id = replay_spool(spool, mlflow_server.url)
    assert run_id == logger.run_id
    assert _history(MlflowClient(mlflow_server.url), run_id, "loss") == [(0, 1.0), (1, 0.5)]


@servers
def test_buffer_is_uploaded_at_close_when_the_server_is_back(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """Opened while the server is down; the client is pointed at the live server before close()."""
    spool = tmp_path / "back.jsonl"
    logger = MlflowLogger.open(_dead_uri(), "back", "sample_reference", seppo_run_id=f"back-{time.time_ns()}", spool_path=spool)
    logger.log_metrics({"flip_rate": 0.25}, step=7)
    assert spool.exists() and len(logger.pending) == 1
    logger.tracking_uri, logger.client = mlflow_server.url, MlflowClient(mlflow_server.url)
    logger.close()
    assert logger.run_id and not logger.pending and spool.with_name("back.jsonl.replayed").exists()
    assert _history(MlflowClient(mlflow_server.url), logger.run_id, "flip_rate") == [(7, 0.25)]


@servers
def test_reopening_a_run_appends_to_it(mlflow_server: MlflowServer) -> None:
    first = MlflowLogger.open(mlflow_server.url, "reopen", "train_round")
    first.log_metrics({"loss": 1.0}, step=0)
    first.close("FAILED")
    again = MlflowLogger.open(mlflow_server.url, "reopen", "train_round", run_id=first.run_id)
    again.log_metrics({"loss": 0.5}, step=1)
    again.close()
    client = MlflowClient(mlflow_server.url)
    assert _history(client, str(first.run_id), "loss") == [(0, 1.0), (1, 0.5)]
    assert client.get_run(str(first.run_id)).info.status == "FINISHED"
    with pytest.raises(TrackingError, match="does not exist"):
        MlflowLogger.open(mlflow_server.url, "reopen", "train_round", run_id="f" * 32)


@servers
def test_replay_rejects_bad_files_and_dead_servers(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "metrics"}\n')
    with pytest.raises(TrackingError, match="not a seppo MLflow spool"):
        replay_spool(bad, mlflow_server.url)
    bad.write_text('{"kind": "open", "experiment": "x", "run_name": "y"}\n')
    with pytest.raises(TrackingError, match=r"unreachable.*--tracking-uri"):
        replay_spool(bad, _dead_uri())
    with pytest.raises(FileNotFoundError):
        replay_spool(tmp_path / "missing.jsonl", mlflow_server.url)


def test_sqlite_default_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = SeppoConfig(workdir=str(tmp_path / "work"))
    uri = resolve_tracking_uri(cfg)
    assert uri == f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}"
    with MlflowLogger.open(uri, cfg.tracking.experiment, "evaluate", seppo_run_id=cfg.run_id) as logger:
        logger.log_metrics({"loss": 0.25}, step=4)
        (tmp_path / "grid.png").write_bytes(b"png")
        logger.log_artifact(tmp_path / "grid.png")
    client = MlflowClient(uri)
    assert _history(client, str(logger.run_id), "loss") == [(4, 0.25)]
    artifacts = client.get_run(str(logger.run_id)).info.artifact_uri
    assert artifacts.startswith((tmp_path / "work" / "mlartifacts").as_uri())
    assert (tmp_path / "work" / "mlartifacts" / str(logger.run_id) / "artifacts" / "grid.png").read_bytes() == b"png"


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_tracking_uri(SeppoConfig(workdir=str(tmp_path))) == "http://mlflow.example:5000"
    explicit = SeppoConfig.model_validate({"workdir": str(tmp_path), "tracking": {"mlflow_uri": "http://x:1"}})
    assert resolve_tracking_uri(explicit) == "http://x:1"


def test_lineage_tags_discover_git_sha_and_kfp_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEPPO_GIT_SHA", raising=False)
    monkeypatch.setenv("KFP_RUN_ID", "kfp-run-42")
    tags = lineage_tags("cfg-hash", bank_uri="s3://bank/runs")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its HEAD is recorded
        assert re.fullmatch(r"[0-9a-f]{40}", tags["seppo.git_sha"]) and tags["seppo.git_sha"] == head.stdout.strip()
        assert tags["mlflow.source.git.commit"] == tags["seppo.git_sha"]
    else:  # no git (e.g. an image without .git): left out
        assert "seppo.git_sha" not in tags
    assert tags["seppo.kfp_run_id"] == "kfp-run-42" and tags["seppo.bank_uri"] == "s3://bank/runs"
    assert "seppo.dvc_rev" not in tags  # unknown values are left out, not faked
    monkeypatch.setenv("SEPPO_GIT_SHA", "feedbeef")
    assert lineage_tags("h")["seppo.git_sha"] == "feedbeef"
