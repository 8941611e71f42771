"""docs/results.md reports the committed benchmark output, not hand-typed numbers."""

from __future__ import annotations

import json
from pathlib import Path

from seppo_lib.bench.report import (
    aggregate,
    budget_summary,
    budget_table,
    markdown_table,
    paired_summary,
    paired_table,
    preset_search_table,
)
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
    for folder in (RESULTS, RESULTS / "video", RESULTS / "pickapic"):
        results = json.loads((folder / "results.json").read_text())
        rows = paired_summary(results)
        trained = [m for m in results["options"]["methods"] if m != "base"]
        assert [(r["method"], r["vs"]) for r in rows if r["vs"] == "base"] == [(m, "base") for m in trained]
        assert all(r["seeds"] == len(results["options"]["seeds"]) and r["samples"] == results["options"]["samples_per_prompt"] for r in rows)
        assert paired_table(rows) in doc


def test_world_preset_search_table_is_recomputed_from_the_committed_json() -> None:
    """The world-preset search (issue 19 item 6) in docs/results.md: every run's paired difference with the base model on the
    tuning draw (seed 99), rebuilt from the committed per-image scores."""
    doc = json.loads((RESULTS / "world-preset" / "search.json").read_text())
    assert doc["eval"]["eval_seed"] != 1234 and doc["eval"]["prompts"] >= 256
    assert all(len(r["test_all_per_image"]) == len(doc["base"]["test_all_per_image"]) for r in doc["runs"])
    assert preset_search_table(doc) in (ROOT / "docs" / "results.md").read_text()
    # the continued-pretraining diagnosis: the same draw and base scores, the recipe's corruption fractions varied
    continued = json.loads((RESULTS / "world-preset" / "continued.json").read_text())
    assert continued["eval"] == doc["eval"] and continued["base"] == doc["base"]
    assert {tuple(r["overrides"][:2]) for r in continued["runs"]} == {
        (f"wrong_fraction={w}", f"blur_fraction={b}") for w in (0.0, 0.3) for b in (0.0, 0.2)}
    assert preset_search_table(continued) in (ROOT / "docs" / "results.md").read_text()
    # from a 2000-step snapshot of the recipe (same draw), and the default run over 5 seeds on unseen training-split prompts
    early = json.loads((RESULTS / "world-preset" / "early.json").read_text())
    assert early["eval"] == doc["eval"] and early["base"]["test_all_per_image"] != doc["base"]["test_all_per_image"]
    assert preset_search_table(early) in (ROOT / "docs" / "results.md").read_text()
    ts = {name: f"{early['train_split'][name]['test']['all']:.3f}" for name in ("base", "w0", "w1")}
    assert f"the snapshot scores {ts['base']}, w0 {ts['w0']} and w1 {ts['w1']}" in (ROOT / "docs" / "results.md").read_text()
    indist = json.loads((RESULTS / "world-preset" / "indist.json").read_text())
    assert sorted(r["seed"] for r in indist["runs"]) == [0, 1, 2, 3, 4] and len(set(indist["eval"]["prompts"])) == 256
    from seppo_lib.world.grammar import parse

    assert {parse(p).split for p in indist["eval"]["prompts"]} == {"train"}
    assert paired_table(paired_summary(indist)) in (ROOT / "docs" / "results.md").read_text()


def test_pickapic_results_table_is_recomputed_from_the_committed_json() -> None:
    """The main comparison on the Pick-a-Pic-like data (issue 19 item 3): base, SFT, Diffusion-DPO, SPIN and SePPO over
    5 training seeds x 256 held-out prompts x 2 samples, trained on builtin:world-pickapic; its table rebuilt from the JSON."""
    folder = RESULTS / "pickapic"
    results = json.loads((folder / "results.json").read_text())
    options = results["options"]
    assert {"base", "sft", "dpo", "spin", "seppo-sign-uniform"} <= set(options["methods"])
    assert len(options["seeds"]) >= 5 and options["prompts"] >= 256 and options["samples_per_prompt"] >= 2
    assert results["dataset"]["rows"] > 0 and options["dataset"] == "builtin:world-pickapic"
    methods = [m for m in options["methods"] if m != "base"]
    table = markdown_table(aggregate(results["base"], results["runs"], methods, True), len(options["seeds"]))
    assert table == (folder / "table.md").read_text().strip()
    assert table in (ROOT / "docs" / "results.md").read_text()


def test_budget_curve_tables_are_recomputed_from_the_committed_json() -> None:
    """Issue 19 item 4: SFT and SePPO for 16 rounds on the Pick-a-Pic-like data. Its accuracy, paired and per-budget
    tables are rebuilt from the JSON, and (constant LR) round 4 of every run is the main comparison's 4-round run,
    image for image on the curve's first samples."""
    folder = RESULTS / "pickapic-budget"
    results = json.loads((folder / "results.json").read_text())
    methods = [m for m in results["options"]["methods"] if m != "base"]
    table = markdown_table(aggregate(results["base"], results["runs"], methods, True, curve_subset=True), len(results["options"]["seeds"]))
    doc = (ROOT / "docs" / "results.md").read_text()
    rows = budget_summary(results)
    assert {r["round"] for r in rows} == {4, 8, 16} and all(r["prompts"] == 128 for r in rows)
    for text in (table, paired_table(paired_summary(results)), budget_table(rows)):
        assert text in doc
    main = {(r["method"], r["seed"]): r for r in json.loads((RESULTS / "pickapic" / "results.json").read_text())["runs"]}
    for run in results["runs"]:
        assert run["config"]["train"]["lr_scheduler"] == "constant" and len(run["rounds"]) == 16
        first = main[(run["method"], run["seed"])]["final"]["test_all_per_image"][::2][:128]
        assert run["rounds"][3]["first_all_per_image"] == first
