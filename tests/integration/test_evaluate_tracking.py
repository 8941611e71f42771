"""The evaluate step's MLflow run (scores, CIs, gate, report) and the parent run when a step fails; sqlite MLflow."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from seppo_lib.config import ConfigError, SeppoConfig
from seppo_lib.errors import SeppoError
from seppo_lib.steps import evaluate
from seppo_lib.testing.tiny_models import build_tiny_model
from seppo_lib.tracking.mlflow_logger import PARENT_TAG, MlflowLogger, replay_spool
from seppo_lib.tracking.steps import step_tracking
from tests.helpers import make_image_folder, tiny_config
from tests.mlflow_server import free_port

FAST = ["sampling.num_inference_steps=2", "eval.max_prompts=2", "eval.images_per_prompt=1", "eval.bootstrap=100"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-tracking")
    return {"root": root, "data": make_image_folder(root / "data", n=4), "other": build_tiny_model(root / "other", seed=1)}


def _cfg(tmp: Path, setup: dict[str, Path], *overrides: str) -> SeppoConfig:
    return tiny_config(
        tmp, setup["data"], *FAST, f"bank.cache_dir={setup['root'] / 'cache'}", "tracking.enabled=true",
        f"tracking.mlflow_uri=sqlite:///{setup['root'] / 'mlflow.db'}", f"tracking.experiment=eval-{uuid.uuid4().hex[:8]}",
        *overrides,
    )  # fmt: skip


def _tree(cfg: SeppoConfig) -> tuple[Any, dict[str, Any]]:
    """(parent run, {step name: child run}) of cfg's run tree."""
    client = MlflowClient(cfg.tracking.mlflow_uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`seppo.run_id` = '{cfg.run_id}'")
    (parent,) = [r for r in runs if r.data.tags.get("seppo.role") == "pipeline"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id}
    return parent, children


def test_evaluate_logs_scores_gate_and_report_into_the_run_tree(tmp_path: Path, setup: dict[str, Path]) -> None:
    cfg = _cfg(tmp_path, setup)
    with step_tracking(cfg, "prepare_data"):
        pass  # an earlier step of the same pipeline run
    doc = evaluate.run(cfg, str(setup["other"]), tmp_path / "report")
    parent, children = _tree(cfg)
    run = children["evaluate"]
    assert (parent.info.status, run.info.status) == ("RUNNING", "FINISHED")  # register, the last step, ends the parent
    world, metrics = doc["scorers"]["world"], run.data.metrics
    assert metrics["world_candidate_mean"] == pytest.approx(world["candidate"]["mean"])
    assert (metrics["world_champion_ci_lo"], metrics["world_champion_ci_hi"]) == pytest.approx(
        (world["champion"]["ci_lo"], world["champion"]["ci_hi"]))  # fmt: skip
    wins = world["win_rate"]
    assert (metrics["world_win_rate"], metrics["world_win_rate_lo"]) == pytest.approx((wins["rate"], wins["lo"]))
    assert metrics["gate_candidate"] == pytest.approx(doc["gate"]["candidate"])
    tags = run.data.tags
    assert tags["seppo.gate.passes"] == str(doc["gate"]["passes"]).lower() and tags["seppo.gate.metric"] == "world"
    assert tags["seppo.eval.champion"] == "builtin:tiny-random" and tags["seppo.eval.candidate"] == str(setup["other"])
    client = MlflowClient(cfg.tracking.mlflow_uri)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/metrics.json", "eval/per_prompt.csv", "eval/grid.png"} <= logged
    local = client.download_artifacts(run.info.run_id, "eval/metrics.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == doc


def test_a_failing_step_fails_the_pipeline_run(tmp_path: Path, setup: dict[str, Path]) -> None:
    cfg = _cfg(tmp_path, setup)
    with step_tracking(cfg, "prepare_data"):
        pass
    with pytest.raises(SeppoError, match="no-such-model"):
        evaluate.run(cfg, str(tmp_path / "no-such-model"), tmp_path / "report")
    parent, children = _tree(cfg)
    assert (parent.info.status, children["evaluate"].info.status, children["prepare_data"].info.status) == (
        "FAILED", "FAILED", "FINISHED")  # fmt: skip


def test_a_config_error_fails_before_mlflow_is_opened(tmp_path: Path, setup: dict[str, Path]) -> None:
    """validate_config rejects it before a pipeline's run tree exists; `seppo evaluate` gets its one line at once."""
    cfg = _cfg(tmp_path, setup, "eval.gate_metric=clip", f"tracking.mlflow_uri=sqlite:///{tmp_path / 'fresh.db'}")
    with pytest.raises(ConfigError, match="eval.gate_metric='clip'"):
        evaluate.run(cfg, str(setup["other"]), tmp_path / "report")
    assert not (tmp_path / "fresh.db").exists()


def test_a_step_failing_offline_fails_the_parent_on_replay(tmp_path: Path, setup: dict[str, Path]) -> None:
    """The parent's end is spooled with the step's records and applied when the spool is replayed."""
    cfg = _cfg(tmp_path, setup)
    uri, seppo_run_id = str(cfg.tracking.mlflow_uri), f"offline-{uuid.uuid4().hex[:8]}"
    MlflowLogger.open(uri, cfg.tracking.experiment, "prepare_data", seppo_run_id=seppo_run_id).close()
    spool = tmp_path / "train.jsonl"
    offline = MlflowLogger.open(f"http://127.0.0.1:{free_port()}", cfg.tracking.experiment, "train_round-1",
                                seppo_run_id=seppo_run_id, spool_path=spool)  # fmt: skip
    offline.close("FAILED", end_parent=True)
    assert [json.loads(line)["kind"] for line in spool.read_text().splitlines()] == ["open", "end", "end_parent"]
    client = MlflowClient(uri)
    run = client.get_run(replay_spool(spool, uri))
    parent = client.get_run(run.data.tags[PARENT_TAG])
    assert (run.info.status, parent.info.status, parent.info.run_name) == ("FAILED", "FAILED", seppo_run_id)
