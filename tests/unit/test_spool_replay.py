"""Replaying an MLflow spool is idempotent: a second replay (same file, its copy, or after a crash) adds nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from seppo_lib.tracking.mlflow_logger import MlflowLogger, replay_spool
from tests.mlflow_server import free_port


def _offline_spool(tmp_path: Path) -> Path:
    spool = tmp_path / "spool.jsonl"
    logger = MlflowLogger.open(f"http://127.0.0.1:{free_port()}", "offline", "train_round", seppo_run_id="idem", spool_path=spool)
    for step in range(3):
        logger.log_metrics({"loss": 1.0 - step / 10}, step=step)
    logger.close()
    return spool


def _step_runs(uri: str) -> list[str]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("offline")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`seppo.role` = 'step'")
    return [r.info.run_id for r in runs]


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_second_replay_is_a_no_op(tmp_path: Path, uri: str) -> None:
    spool = _offline_spool(tmp_path)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(spool, copy)
    first = replay_spool(spool, uri)
    assert spool.with_name("spool.jsonl.replayed").read_text().splitlines()[-1].startswith('{"kind": "replayed"')
    assert replay_spool(spool, uri) == first  # the original name, now renamed
    assert replay_spool(spool.with_name("spool.jsonl.replayed"), uri) == first
    assert replay_spool(copy, uri) == first  # a copy (or a crash before the rename) finds the tagged run
    assert _step_runs(uri) == [first]
    history = MlflowClient(uri).get_metric_history(first, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.9), (2, 0.8)]
