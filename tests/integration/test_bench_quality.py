"""`seppo bench quality` end to end on the shipped world base model (tiny budgets)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from seppo_lib.bench.methods import method_overrides, parse_methods
from seppo_lib.bench.quality import BenchOptions, grid_indices, run_benchmark
from seppo_lib.bench.scoring import balanced_prompts
from seppo_lib.config import ConfigError

#: 1 round of 1 update on 8 rows, 2-step sampler: the plumbing, not the numbers.
TINY_BUDGET = (
    "data.max_rows=8", "data.shard_size=8", "train.updates_per_round=1", "train.batch_size=2",
    "sampling.num_inference_steps=2",
)
PNGS = ("accuracy_vs_round.png", "flip_rate_vs_round.png", "samples_grid.png")


def _fractions(results: dict[str, Any]) -> list[float]:
    """Every accuracy in the summary and the per-run scores (all must lie in [0, 1])."""
    out = []
    for entry in results["summary"].values():
        for split in ("test", "train"):
            out += [stat["mean"] for stat in entry[split].values()]
    for run in results["runs"]:
        for r in run["rounds"]:
            out += list(r["test_first"].values())
            if r["reference_accuracy"] is not None:
                out.append(r["reference_accuracy"])
        out += run["final"]["test_all_per_image"]
    return out


def _check_outputs(out: Path, methods: list[str]) -> dict[str, Any]:
    results = json.loads((out / "results.json").read_text())
    table = (out / "table.md").read_text()
    for method in methods:
        assert f"| {method} |" in table
    for name in PNGS:
        assert (out / name).stat().st_size > 1000, name
    values = _fractions(results)
    assert values and all(0.0 <= v <= 1.0 and not math.isnan(v) for v in values)
    return results


def test_benchmark_plumbing_one_seed_two_methods(tmp_path: Path) -> None:
    """1 seed x (sft, seppo), 2 prompts, 1 round of 1 update: outputs, shared seeds, flip-rate logging."""
    options = BenchOptions(
        out=tmp_path / "out", workdir=tmp_path / "work", methods=("sft", "seppo-sign-uniform"), seeds=(0,),
        prompts=2, train_prompts=2, samples_per_prompt=1, rounds=1, grid_prompts=2, overrides=TINY_BUDGET,
    )
    results = run_benchmark(options)
    data = _check_outputs(options.out, ["sft", "seppo-sign-uniform"])
    assert results["table"] in (options.out / "table.md").read_text()
    runs = {r["method"]: r for r in data["runs"]}
    assert set(runs) == {"sft", "seppo-sign-uniform"}
    # same budget: one update of batch 2 each; seppo logs the anchor criterion's flip rate
    assert [s["step"] for s in runs["sft"]["step_metrics"]] == [1] == [s["step"] for s in runs["seppo-sign-uniform"]["step_metrics"]]
    assert "flip_rate" in runs["seppo-sign-uniform"]["step_metrics"][0] and "flip_rate" not in runs["sft"]["step_metrics"][0]
    assert runs["seppo-sign-uniform"]["rounds"][0]["reference_accuracy"] is not None
    assert runs["sft"]["rounds"][0]["reference_accuracy"] is None
    assert data["eval"]["test_prompts"] == [p.text for p in balanced_prompts("test", 2, 1234)]
    # a second call reuses the finished runs instead of training again
    again = run_benchmark(options)
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in data["runs"]]


def test_balanced_prompts_and_grid_columns() -> None:
    prompts = balanced_prompts("test", 7, 3)
    assert [p.relation is None for p in prompts] == [True] * 4 + [False] * 3
    assert prompts == balanced_prompts("test", 7, 3) and len(set(prompts)) == 7
    assert all(p.split == "test" for p in prompts)
    assert grid_indices(8, 4) == [0, 1, 4, 5]
    assert grid_indices(2, 8) == [0, 1]
    with pytest.raises(Exception, match="balanced"):
        balanced_prompts("test", 500, 0)


def test_methods_differ_only_in_method_rows() -> None:
    assert parse_methods("all")[0] == "base" and len(parse_methods("all")) == 9
    assert "train.criterion=indicator" in method_overrides("seppo-indicator-uniform")
    assert "bank.reference=initial" in method_overrides("seppo-sign-initial")
    with pytest.raises(ConfigError, match="unknown benchmark method"):
        parse_methods("sft,ppo")


@pytest.mark.slow
def test_quick_benchmark_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`seppo bench quality --quick` with a tiny budget: table, JSON and PNGs with numbers in [0, 1]."""
    from seppo_lib.cli import main

    out = tmp_path / "quick"
    argv = ["bench", "quality", "--quick", "--out", str(out), "--workdir", str(tmp_path / "work"), "--rounds", "2",
            "--prompts", "4", "--train-prompts", "2"]
    for override in ("data.max_rows=32", "train.updates_per_round=2", "train.batch_size=4"):
        argv += ["--set", override]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| base |" in printed and "| sft |" in printed and "| seppo-sign-uniform |" in printed
    results = _check_outputs(out, ["base", "sft", "seppo-sign-uniform"])
    assert results["options"]["seeds"] == [0]
    assert all(len(r["rounds"]) == 2 for r in results["runs"])


def test_video_benchmark_grades_clips_with_the_motion_scorer(tmp_path: Path) -> None:
    """bench-video on a tiny random 3-D UNet (8 px, 4 frames): distinct held-out motion prompts, per-clip
    motion checks (with "direction"), a direction column in the table and frame strips in the grid."""
    from PIL import Image

    from seppo_lib.world.video import choose_motion_prompts

    video_budget = (
        *TINY_BUDGET, "model.pretrained=builtin:tiny-random:video", "data.resolution=8", "data.num_frames=4",
    )
    options = BenchOptions(
        out=tmp_path / "out", workdir=tmp_path / "work", config="bench-video", methods=("base", "seppo-sign-uniform"),
        seeds=(0,), prompts=2, train_prompts=2, samples_per_prompt=1, rounds=1, grid_prompts=2, overrides=video_budget,
    )
    results = run_benchmark(options)
    data = _check_outputs(options.out, ["base", "seppo-sign-uniform"])
    assert data["eval"]["test_prompts"] == [p.text for p in choose_motion_prompts("test", 2, 1234)]
    assert set(data["base"]["test"]) == {"colour", "shape", "direction", "count", "all"}
    assert "| method | test all | colour | shape | count | direction |" in results["table"]
    assert "relation" not in results["table"]
    strip = Image.open(options.work / "grids" / "base" / "00.png")
    assert strip.size == (8 * 4, 8)  # 4 frames side by side
    assert data["runs"][0]["rounds"][0]["reference_accuracy"] is not None


def test_video_benchmark_prompts_are_distinct() -> None:
    from seppo_lib.bench.scoring import bench_prompts
    from seppo_lib.errors import DataError

    prompts = bench_prompts("test", 32, 1234, video=True)
    assert len({p.text for p in prompts}) == 32 and all(p.split == "test" for p in prompts)
    with pytest.raises(DataError, match="distinct test motion prompts"):
        bench_prompts("test", 33, 1234, video=True)
    assert grid_indices(32, 4, video=True) == [0, 1, 2, 3]
