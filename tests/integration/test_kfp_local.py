"""The whole pipeline through kfp.local.SubprocessRunner (`seppo run`), and bad input failing early."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from seppo_lib import pipeline_runner
from seppo_lib.bank import CheckpointBank
from seppo_lib.cli import main
from seppo_lib.config import load_config
from seppo_lib.tracking.mlflow_logger import resolve_tracking_uri

# 2 rounds x 2 sampling shards, few updates and sampler steps: the tiny preset in about a minute.
FAST = [
    "train.n_rounds=2", "sampling.n_shards=2", "train.updates_per_round=2", "sampling.num_inference_steps=2",
    "data.max_rows=16", "eval.max_prompts=4", "eval.bootstrap=100",
]  # fmt: skip


def _where(tmp: Path) -> list[str]:
    return [f"workdir={tmp / 'work'}", f"bank.uri={tmp / 'bank'}", f"bank.cache_dir={tmp / 'cache'}"]


def _outputs(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """executor_output.json of every task that ran, by task name (ParallelFor iterations in order)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(run_dir.rglob("executor_output.json")):
        found.setdefault(path.parent.name, []).append(json.loads(path.read_text()))
    return found


def _meta(output: dict[str, Any], artifact: str) -> dict[str, Any]:
    return output["artifacts"][artifact]["artifacts"][0]["metadata"]


@pytest.fixture(autouse=True)
def _local_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the run's own sqlite db under workdir


def test_seppo_run_whole_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = [*_where(tmp_path), *FAST]
    assert main(["run", "--config", "tiny", *overrides]) == 0
    cfg = load_config("tiny", overrides)
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "work" / "kfp-root").iterdir()
    tasks = _outputs(run_dir)
    assert set(tasks) >= {"validate-config", "prepare-data", "sample-reference", "sample-reference-2", "train-round",
                          "train-round-2", "evaluate"}  # fmt: skip

    assert _meta(tasks["validate-config"][0], "resolved_config")["config_hash"] == cfg.config_hash()
    data = _meta(tasks["prepare-data"][0], "dataset")
    assert data["rows"] == 16 and data["config_hash"] == cfg.config_hash() and len(data["output_md5"]) == 32
    for k, name in ((1, "sample-reference"), (2, "sample-reference-2")):
        shards = [_meta(o, "references") for o in tasks[name]]
        assert sorted(m["shard"] for m in shards) == [0, 1] and all(m["round"] == k and m["samples"] > 0 for m in shards)
    models = [_meta(tasks[name][0], "model") for name in ("train-round", "train-round-2")]
    assert [m["round"] for m in models] == [1, 2] and all(m["run_id"] == cfg.run_id for m in models)
    evaluation = tasks["evaluate"][0]
    report = _meta(evaluation, "report")
    assert report["checkpoint"] == models[-1]["checkpoint"] and report["config_hash"] == cfg.config_hash()
    assert "world_candidate_mean" in _meta(evaluation, "metrics")

    # the bank holds θ_0..θ_2, the last one is the evaluated model
    bank = CheckpointBank.open(cfg.bank.uri, cfg.run_id, cfg.bank.cache_dir)
    assert [e.round for e in bank.entries()] == [0, 1, 2]
    assert bank.entries()[-1].id == models[-1]["checkpoint"]
    # every evaluated candidate is registered: register always ran, the gate chose the alias
    passes = evaluation["parameterValues"]["Output"]
    assert passes is json.loads((run_dir / "evaluate/report/metrics.json").read_text())["gate"]["passes"]
    assert "register" in tasks
    registration = json.loads(next(run_dir.glob("**/register/registration")).read_text())
    assert (registration["version"], registration["decision"]) == ("1", "promoted" if passes else "rejected")
    alias = "champion; the first champion" if passes else "challenger; no champion yet"
    assert f"registry: gate {'passed' if passes else 'failed'} -> seppo-tiny v1 ({alias})" in out
    # the MLflow run tree: evaluate logged its scores and report; register ended the parent FINISHED
    client = MlflowClient(resolve_tracking_uri(cfg))
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
                              f"tags.`seppo.run_id` = '{cfg.run_id}'")  # fmt: skip
    (parent,) = [r for r in runs if r.data.tags.get("seppo.role") == "pipeline"]
    (scored,) = [r for r in runs if r.info.run_name == "evaluate"]
    assert parent.info.status == "FINISHED" and "world_candidate_ci_lo" in scored.data.metrics
    assert "eval/metrics.json" in {a.path for a in client.list_artifacts(scored.info.run_id, "eval")}
    # the summary says where everything is
    assert f"bank:{models[-1]['checkpoint']}" in out and str(run_dir / "evaluate" / "report") in out
    assert str(tmp_path / "work" / cfg.run_id / "exports" / models[-1]["checkpoint"]) in out
    assert f"{bank.uri} (initial, " in out
    # one run report in the run folder, with both rounds' training means (from MLflow) and the registry outcome
    folder = tmp_path / "work" / cfg.run_id
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    assert f"report:   {folder / 'report.md'}" in out
    for text in (md, page):
        assert cfg.config_hash() in text and f"bank:{models[-1]['checkpoint']}" in text
    assert "| 1 | 2 | 1-2 |" in md and "| 2 | 2 | 3-4 |" in md  # round, updates, optimizer steps
    assert "data:image/png;base64," in page and "src=\"data:" in page
    assert f"| seppo-tiny | v{registration['version']} | {registration['decision']} |" in md and "not in this copy" not in md
    summary = (folder / "summary.txt").read_text()
    assert summary.startswith("seppo run: config tiny") and f"report:   {folder / 'report.md'}" in summary
    # the evaluate task's Markdown and HTML outputs, rendered by the KFP UI: the report as evaluate wrote it
    assert (run_dir / "evaluate" / "report_md").read_text() == (run_dir / "evaluate" / "report" / "report.md").read_text()
    assert (run_dir / "evaluate" / "report_html").read_text().startswith("<!DOCTYPE html>")


def test_seppo_run_video_pipeline_evaluates_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """video-tiny through every task, evaluate included: clips scored by the video scorers, a GIF grid."""
    overrides = [*_where(tmp_path), "train.n_rounds=1", "train.updates_per_round=1", "sampling.num_inference_steps=2",
                 "data.max_rows=8", "data.num_frames=4", "eval.max_prompts=2", "eval.bootstrap=100"]  # fmt: skip
    assert main(["run", "--config", "video-tiny", *overrides]) == 0
    (run_dir,) = (tmp_path / "work" / "kfp-root").iterdir()
    tasks = _outputs(run_dir)
    assert set(tasks) >= {"validate-config", "prepare-data", "sample-reference", "train-round", "evaluate"}
    report = run_dir / "evaluate" / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["scorers"]) == {"world_motion", "psnr", "ssim"} and metrics["n_prompts"] == 2
    assert (metrics["video"]["frames"], metrics["video"]["resolution"]) == (4, 8)
    assert (report / "grid.gif").is_file() and not (report / "grid.png").exists()
    assert {"world_motion_candidate_mean", "psnr_champion_mean", "ssim_win_rate"} <= set(_meta(tasks["evaluate"][0], "metrics"))
    passes = tasks["evaluate"][0]["parameterValues"]["Output"]
    assert passes is metrics["gate"]["passes"] and "register" in tasks  # registered either way
    assert "grid.gif" in capsys.readouterr().out


def test_seppo_run_bad_config_fails_before_any_heavy_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-data"
    assert main(["run", "--config", "tiny", *_where(tmp_path), f"data.source={missing}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"seppo: error: data.source={str(missing)!r} does not exist; fix the path or use an s3:// URI"]
    assert not (tmp_path / "work").exists() and not (tmp_path / "bank").exists()


def test_pipeline_stops_in_validate_config(tmp_path: Path) -> None:
    """The pipeline itself (without the CLI's check) fails in its first task, with the step's one-line error."""
    missing = tmp_path / "no-such-data"
    cfg = load_config("tiny", [*_where(tmp_path), f"data.source={missing}", "train.n_rounds=1"])
    with pytest.raises(pipeline_runner.PipelineError) as err:
        pipeline_runner.run_local(cfg)
    message = str(err.value)
    assert message.startswith("pipeline failed in task validate-config: ConfigError: data.source=") and "\n" not in message
    (run_dir,) = (tmp_path / "work" / "kfp-root").iterdir()
    assert set(_outputs(run_dir)) == set() and not (run_dir / "prepare-data").exists()
    assert not (tmp_path / "bank").exists()
