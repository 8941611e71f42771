"""The run report (report.md + report.html) from a synthetic evaluation folder and training history."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from seppo_lib.config import SeppoConfig, load_config
from seppo_lib.evaluation import run_report
from seppo_lib.evaluation.plots import plot_training_curves, round_starts, with_error_gap
from seppo_lib.evaluation.report import build_metrics
from seppo_lib.evaluation.run_report import TrackedFacts, to_markdown, tracked_facts, write_run_report

CANDIDATE = "bank:ckpt-000004"
FIGURES = ("grid.png", "accuracy_world.png", "training_curves.png")
# 2 rounds of 2 updates; round means: loss 0.9 / 0.5, implicit acc 0.55 / 0.75, flip 0.2 / 0.1, gap -0.015 / -0.035
HISTORY = [
    (1, {"round": 1.0, "loss": 1.0, "implicit_acc": 0.5, "flip_rate": 0.25, "err_policy_w": 0.30, "err_ref_w": 0.31}),
    (2, {"round": 1.0, "loss": 0.8, "implicit_acc": 0.6, "flip_rate": 0.15, "err_policy_w": 0.29, "err_ref_w": 0.31}),
    (3, {"round": 2.0, "loss": 0.6, "implicit_acc": 0.7, "flip_rate": 0.1, "err_policy_w": 0.27, "err_ref_w": 0.30}),
    (4, {"round": 2.0, "loss": 0.4, "implicit_acc": 0.8, "flip_rate": 0.1, "err_policy_w": 0.26, "err_ref_w": 0.30}),
]


def _cfg(tmp_path: Path, *overrides: str) -> SeppoConfig:
    return load_config("tiny", [f"workdir={tmp_path / 'work'}", "tracking.enabled=false", "bank.run_id=tiny-report", *overrides])


def _eval_dir(tmp_path: Path, cfg: SeppoConfig) -> Path:
    """metrics.json (world: candidate 6/8 vs base model 3/8, gate passes) and one small PNG per figure."""
    out = tmp_path / "eval"
    out.mkdir()
    metrics = build_metrics(
        candidate_uri=CANDIDATE, champion_uri=cfg.model.pretrained, candidate={"world": [1, 0, 1, 1, 0, 1, 1, 1]},
        champion={"world": [0, 0, 1, 0, 0, 1, 1, 0]}, n_prompts=8, images_per_prompt=1,
        gate=("world", "higher", 0.0), n_boot=200, seed=0, config_hash=cfg.config_hash(),
    )  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics))
    for k, name in enumerate(FIGURES):
        Image.new("RGB", (6, 6), (40 * k, 200, 90)).save(out / name)
    return out


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_report_has_every_section_with_the_runs_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Config + hash, lineage (the run identity's data and base model versions, KFP run id, image), per-round
    training means incl. the winner-error gap, the evaluation with CIs and win rate, the gate, the inlined figures."""
    from seppo_lib.identity import lineage_tags

    cfg = _cfg(tmp_path)
    eval_dir = _eval_dir(tmp_path, cfg)
    identity = lineage_tags(cfg)
    monkeypatch.setenv("KFP_RUN_ID", "kfp-run-42")
    monkeypatch.setenv("SEPPO_IMAGE", "ghcr.io/seppo-ml/seppo:test")
    md_path, html_path = write_run_report(cfg, eval_dir, run_report.run_dir(cfg), facts=TrackedFacts(HISTORY))
    assert (md_path, html_path) == (tmp_path / "work" / cfg.run_id / "report.md", tmp_path / "work" / cfg.run_id / "report.html")
    md, page = md_path.read_text(), html_path.read_text()
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    world = metrics["scorers"]["world"]
    for raw in (md, page):
        text = html.unescape(raw).replace("\\", "")  # Markdown escapes and HTML entities off
        for heading in ("Run", "Lineage", "Configuration", "Training", "Evaluation", "Gate and registration", "Samples"):
            assert re.search(rf"(## |<h2>){heading}(\n|</h2>)", text), heading
        assert cfg.config_hash() in text and "updates_per_round: 4" in text  # the YAML of the resolved config
        for fact in ("kfp-run-42", "ghcr.io/seppo-ml/seppo:test", identity["seppo.data_version"], identity["seppo.base_model"],
                     identity["seppo.identity_hash"], cfg.model.pretrained):  # fmt: skip
            assert fact in text, fact
        cells = re.sub(r"<[^>]+>", "|", raw).replace("\\", "")
        assert re.search(r"1\W+2\W+1-2\W+0\.9\W+0\.55\W+0\.2\W+-0\.015\W", cells)  # round 1 means
        assert re.search(r"2\W+2\W+3-4\W+0\.5\W+0\.75\W+0\.1\W+-0\.035\W", cells)  # round 2 means
        ci = f"{world['candidate']['mean']:.4g} [{world['candidate']['ci_lo']:.4g}, {world['candidate']['ci_hi']:.4g}]"
        win = world["win_rate"]
        assert ci in text and f"{win['rate']:.3f} [{win['lo']:.3f}, {win['hi']:.3f}]" in text
        assert "candidate 0.75 vs reference 0.375 -> the gate PASSES" in text
        for name in FIGURES:
            assert f"data:image/png;base64,{_b64(eval_dir / name)}" in text, name
    # nothing the page loads from elsewhere: every src is a data URI, no links, scripts or stylesheets
    assert re.findall(r'src="([^"]*)"', page) and all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', page))
    assert not re.search(r"href=|<script|<link|@import|url\(", page)
    assert "<details><summary>resolved config" in page  # the YAML is collapsible in the HTML


def test_markdown_stays_within_the_kfp_viewer_limit(tmp_path: Path) -> None:
    """Images that would push report.md past the limit are named, not inlined; earlier ones still are."""
    cfg = _cfg(tmp_path)
    eval_dir = _eval_dir(tmp_path, cfg)
    md, _ = write_run_report(cfg, eval_dir, tmp_path / "out", facts=TrackedFacts(HISTORY))
    full = md.read_text()
    sections = run_report.build_sections(cfg, eval_dir, json.loads((eval_dir / "metrics.json").read_text()), TrackedFacts(HISTORY), None)
    limit = len(full) - 50  # room for all but the last image (the grid)
    small = to_markdown(f"seppo run report: {cfg.run_id}", sections, max_chars=limit)
    assert len(small) <= limit
    assert f"base64,{_b64(eval_dir / 'training_curves.png')}" in small and _b64(eval_dir / "grid.png") not in small
    assert "grid.png is not inlined here (the KFP Markdown viewer shows at most" in small.replace("\\", "")


def test_registration_is_added_when_the_report_is_rewritten(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "tracking.enabled=true", f"tracking.mlflow_uri=sqlite:///{tmp_path / 'none.db'}")
    eval_dir = _eval_dir(tmp_path, cfg)
    md, page = write_run_report(cfg, eval_dir, tmp_path / "out")
    first = md.read_text()
    assert "Registration: not in this copy of the report" in first.replace("\\", "")
    assert f"No training history: MLflow at sqlite:///{tmp_path / 'none.db'}: no MLflow database" in first.replace("\\", "")
    assert not (tmp_path / "none.db").exists()  # reading the history never creates a database
    registration = {"model_name": "seppo-tiny", "version": "3", "decision": "champion", "champion": "3", "reason": "beats v2"}
    write_run_report(cfg, eval_dir, tmp_path / "out", facts=TrackedFacts(HISTORY), registration=registration)
    again = md.read_text().replace("\\", "")
    assert "| seppo-tiny | v3 | champion | v3 | beats v2 |" in again and "not in this copy" not in again
    assert "<td>seppo-tiny</td><td>v3</td><td>champion</td>" in page.read_text()


def test_without_tracking_the_report_says_why_there_is_no_history(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    md, _ = write_run_report(cfg, _eval_dir(tmp_path, cfg), tmp_path / "out")
    text = md.read_text().replace("\\", "")
    assert "No training history: tracking.enabled is false." in text
    assert "Not registered: tracking.enabled is false" in text


def test_tracked_facts_read_this_runs_training_rounds_from_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What train_round logs through step_tracking comes back as the report's history: per round the
    latest finished run that logged metrics (a later failed attempt, a later skipped rerun and another
    run's rounds are left out)."""
    from seppo_lib.tracking.steps import step_tracking

    db = f"tracking.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}"
    cfg, other = _cfg(tmp_path, "tracking.enabled=true", db), _cfg(tmp_path, "tracking.enabled=true", db, "bank.run_id=tiny-other")
    monkeypatch.setenv("KFP_RUN_ID", "kfp-run-7")  # what the components set while the rounds train
    for k in (1, 2):
        with step_tracking(cfg, f"train_round-{k}") as tracked:
            for step, row in HISTORY[2 * k - 2 : 2 * k]:
                tracked.log_metrics({**row, "grad_norm": 1.0}, step=step)
    with pytest.raises(RuntimeError), step_tracking(cfg, "train_round-1") as tracked:  # a later attempt that failed
        tracked.log_metrics({"loss": 99.0, "round": 1.0}, step=1)
        raise RuntimeError("killed")
    with step_tracking(cfg, "train_round-2"):  # a rerun that found round 2 committed: nothing logged
        pass
    with step_tracking(other, "train_round-1") as tracked:
        tracked.log_metrics({"loss": 7.0, "round": 1.0}, step=1)
    monkeypatch.delenv("KFP_RUN_ID")  # `seppo run` rewriting the report after the pipeline
    facts = tracked_facts(cfg)
    assert facts.note is None and facts.kfp_run_id == "kfp-run-7"
    assert ("KFP run id", "kfp-run-7") in run_report.lineage_rows(cfg, facts)
    assert facts.history == [(step, row) for step, row in HISTORY]  # grad_norm is not read


def test_training_curves_draw_the_error_gap_and_round_boundaries(tmp_path: Path) -> None:
    assert round_starts(HISTORY) == [3]
    assert with_error_gap(HISTORY[0][1])["err_gap_w"] == pytest.approx(0.30 - 0.31)
    path = plot_training_curves(tmp_path / "curves.png", HISTORY)
    assert path is not None
    with Image.open(path) as im:
        assert im.size == (4 * 400, 320)  # loss, implicit accuracy, flip rate, winner-error gap
