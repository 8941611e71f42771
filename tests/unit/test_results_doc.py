"""docs/results.md reports the committed benchmark output, not hand-typed numbers."""

from __future__ import annotations

import json
from pathlib import Path

from seppo_lib.bench.report import aggregate, markdown_table, paired_summary, paired_table
from seppo_lib.bench.tune import tuning_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def test_results_table_is_recomputed_from_the_committed_json() -> None:
    """The table in docs/results.md equals the one rebuilt from docs/results/results.json's runs."""
    results = json.loads((RESULTS / "results.json").read_text())
    methods = [m for m in results["options"]["methods"] if m != "base"]
    summary = aggregate(results["base"], results["runs"], methods, "base" in results["options"]["methods"])
    table = markdown_table(summary, len(results["options"]["seeds"]))
    assert table == (RESULTS / "table.md").read_text().strip()
    assert table in (ROOT / "docs" / "results.md").read_text()
    assert len(results["options"]["seeds"]) >= 3 and results["options"]["samples_per_prompt"] >= 4
    for name in ("accuracy_vs_round.png", "flip_rate_vs_round.png", "samples_grid.png"):
        assert (RESULTS / name).stat().st_size > 1000


def test_tuning_table_is_recomputed_from_the_committed_json() -> None:
    doc = json.loads((RESULTS / "tuning" / "tuning.json").read_text())
    assert tuning_table(doc) in (ROOT / "docs" / "results.md").read_text()


def test_video_results_table_is_recomputed_from_the_committed_json() -> None:
    """The video world's table in docs/results.md equals the one rebuilt from docs/results/video/results.json:
    base vs SFT vs SePPO over at least 3 seeds, graded by the motion scorer (a direction column)."""
    video = RESULTS / "video"
    results = json.loads((video / "results.json").read_text())
    methods = [m for m in results["options"]["methods"] if m != "base"]
    assert {"base", "sft", "seppo-sign-uniform"} <= set(results["options"]["methods"])
    assert len(results["options"]["seeds"]) >= 3 and results["preset"]["data"]["source"] == "builtin:world-video"
    summary = aggregate(results["base"], results["runs"], methods, True)
    table = markdown_table(summary, len(results["options"]["seeds"]))
    assert "direction" in table
    assert table == (video / "table.md").read_text().strip()
    assert table in (ROOT / "docs" / "results.md").read_text()
    for name in ("accuracy_vs_round.png", "samples_grid.png"):
        assert (video / name).stat().st_size > 1000


def test_paired_tables_are_recomputed_from_the_committed_json() -> None:
    """The paired re-analysis tables in docs/results.md (image and video world) equal the ones rebuilt from the
    committed per-image scores: method − base and method − sft per method, each over all seeds × prompts × samples."""
    doc = (ROOT / "docs" / "results.md").read_text()
    for folder in (RESULTS, RESULTS / "video"):
        results = json.loads((folder / "results.json").read_text())
        rows = paired_summary(results)
        trained = [m for m in results["options"]["methods"] if m != "base"]
        assert [(r["method"], r["vs"]) for r in rows if r["vs"] == "base"] == [(m, "base") for m in trained]
        assert all(r["seeds"] == len(results["options"]["seeds"]) and r["samples"] == results["options"]["samples_per_prompt"] for r in rows)
        assert paired_table(rows) in doc
