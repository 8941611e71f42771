"""`seppo bench quality` end to end on the shipped world base model (tiny budgets)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from seppo_lib.bench.methods import method_overrides, parse_methods
from seppo_lib.bench.quality import BenchOptions, dataset_overrides, grid_indices, run_benchmark
from seppo_lib.bench.scoring import EvalSet, balanced_prompts
from seppo_lib.config import ConfigError

#: 1 round of 1 update on 8 rows, 2-step sampler: the plumbing, not the numbers.
TINY_BUDGET = (
    "data.max_rows=8", "data.shard_size=8", "train.updates_per_round=1", "train.batch_size=2",
    "sampling.num_inference_steps=2",
)
PNGS = ("accuracy_vs_round.png", "flip_rate_vs_round.png", "samples_grid.png")
PAIRED_HEADER = "| method | vs | difference | 95% CI | excludes 0 |"


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
    assert PAIRED_HEADER in (out / "paired.md").read_text()
    values = _fractions(results)
    assert values and all(0.0 <= v <= 1.0 and not math.isnan(v) for v in values)
    return results


def test_benchmark_plumbing_one_seed_two_methods(tmp_path: Path) -> None:
    """1 seed x (sft, seppo), 2 prompts, 1 round of 1 update: outputs, shared seeds, flip-rate logging."""
    options = BenchOptions(
        out=tmp_path / "out", workdir=tmp_path / "work", methods=("sft", "seppo-sign-uniform"), seeds=(0,),
        prompts=2, train_prompts=2, samples_per_prompt=1, rounds=1, grid_prompts=2, overrides=TINY_BUDGET, curve_prompts=1,
    )
    results = run_benchmark(options)
    data = _check_outputs(options.out, ["sft", "seppo-sign-uniform"])
    assert results["table"].startswith((options.out / "table.md").read_text().strip())
    assert (options.out / "paired.md").read_text().strip() in results["table"]
    runs = {r["method"]: r for r in data["runs"]}
    assert set(runs) == {"sft", "seppo-sign-uniform"}
    # no base in the methods: the paired table compares seppo with sft only, on 1 seed × 2 prompts × 1 sample
    paired = [(r["method"], r["vs"], r["seeds"], r["prompts"], r["samples"]) for r in data["paired"]]
    assert paired == [("seppo-sign-uniform", "sft", 1, 2, 1)]
    sft, seppo = (runs[m]["final"]["test_all_per_image"] for m in ("sft", "seppo-sign-uniform"))
    assert data["paired"][0]["mean"] == pytest.approx(sum(seppo) / 2 - sum(sft) / 2)
    assert data["paired"][0]["seeds_better"] == int(sum(seppo) > sum(sft))
    # the accuracy-vs-round curve reads the first sample of the first curve_prompts test prompts in every round
    assert [r["curve_prompts"] for r in runs["sft"]["rounds"]] == [1] and data["base"]["curve_prompts"] == 1
    # every round keeps the curve's per-image scores (the final round's: its first samples); a 1-prompt curve has no budgets
    assert runs["sft"]["rounds"][0]["first_all_per_image"] == sft[:1] and data["budgets"] == []
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
    assert grid_indices(balanced_prompts("test", 8, 0), 4) == [0, 1, 4, 5]
    assert grid_indices(balanced_prompts("test", 2, 0), 8) == [0, 1]
    # past the split's 23 count prompts: all of them, relation prompts for the rest
    large = balanced_prompts("test", 256, 1234)
    assert sum(p.relation is None for p in large) == 23 and len(set(large)) == 256
    assert [p.relation is None for p in large] == [True] * 23 + [False] * 233
    assert grid_indices(large, 4) == [0, 1, 23, 24]
    with pytest.raises(Exception, match="balanced"):
        balanced_prompts("test", 868, 0)
    # the accuracy-vs-round curve samples the same noise as the final round's first samples
    full = EvalSet(tuple(large[:4]), 3, 7)
    assert full.first_samples(2).seeds == [full.seeds[0], full.seeds[3]]
    assert full.first_samples().prompts == full.prompts and full.first_samples().samples_per_prompt == 1


def test_methods_differ_only_in_method_rows() -> None:
    assert parse_methods("all")[0] == "base" and len(parse_methods("all")) == 9
    assert "train.criterion=indicator" in method_overrides("seppo-indicator-uniform")
    assert "bank.reference=initial" in method_overrides("seppo-sign-initial")
    with pytest.raises(ConfigError, match="unknown benchmark method"):
        parse_methods("sft,ppo")


def test_dataset_option_overrides_every_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--dataset builtin:world-pickapic: generated once into <work>/cache and read as Pick-a-Pic parquet by every run
    (the generator is faked here: test_world_pickapic.py runs the real one); a plain source is passed through."""
    from seppo_lib.world import pickapic

    def fake(out: Path, **_: object) -> dict[str, object]:
        Path(out).mkdir(parents=True)
        (Path(out) / pickapic.ANNOTATOR_JSON).write_text('{"rows": 7}')
        return {}

    monkeypatch.setattr(pickapic, "generate_pickapic_dataset", fake)
    options = BenchOptions(out=tmp_path / "out", workdir=tmp_path / "work", dataset="builtin:world-pickapic")
    overrides, stats = dataset_overrides(options)
    folder = Path(overrides[0].removeprefix("data.source="))
    assert folder.parent == tmp_path / "work" / "cache" / "builtin-data" and overrides[1:] == ("data.format=pickapic",)
    assert stats == {"rows": 7}
    assert dataset_overrides(BenchOptions(out=tmp_path, dataset=str(folder))) == ((f"data.source={folder}",), {"rows": 7})
    assert dataset_overrides(BenchOptions(out=tmp_path, dataset="builtin:world")) == (("data.source=builtin:world",), None)
    assert dataset_overrides(BenchOptions(out=tmp_path)) == ((), None)


@pytest.mark.slow
def test_quick_benchmark_on_pickapic_like_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`seppo bench quality --quick --dataset <seppo world generate-pickapic folder>` with a tiny budget, DPO included:
    winners for sft/seppo, pairs for dpo, the annotator's statistics and the paired table in the outputs."""
    from seppo_lib.cli import main

    data = tmp_path / "pickapic"
    assert main(["world", "generate-pickapic", "--out", str(data), "--n", "48", "--steps", "4"]) == 0
    out = tmp_path / "quick"
    argv = ["bench", "quality", "--quick", "--dataset", str(data), "--methods", "base,sft,dpo,seppo-sign-uniform", "--out", str(out),
            "--workdir", str(tmp_path / "work"), "--rounds", "1", "--prompts", "4", "--train-prompts", "2"]
    for override in ("data.max_rows=64", "train.updates_per_round=2", "train.batch_size=4", "sampling.num_inference_steps=4"):
        argv += ["--set", override]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| dpo | base |" in printed and "| seppo-sign-uniform | sft |" in printed
    results = _check_outputs(out, ["base", "sft", "dpo", "seppo-sign-uniform"])
    assert results["dataset"] == json.loads((data / "annotator.json").read_text())
    assert results["preset"]["data"]["source"] == str(data)
    runs = tmp_path / "work" / "runs"
    prepared = {r["method"]: json.loads((runs / r["run_id"] / "data" / "dataset.json").read_text()) for r in results["runs"]}
    assert prepared["dpo"]["paired"] and not prepared["sft"]["paired"]
    assert prepared["sft"]["report"]["dropped"].get("tie", 0) == results["dataset"]["ties"]


@pytest.mark.slow
def test_quick_benchmark_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`seppo bench quality --quick` with a tiny budget: table, JSON and PNGs with numbers in [0, 1]."""
    from seppo_lib.cli import main

    out = tmp_path / "quick"
    argv = ["bench", "quality", "--quick", "--out", str(out), "--workdir", str(tmp_path / "work"), "--rounds", "2",
            "--prompts", "4", "--train-prompts", "2", "--curve-prompts", "3", "--untuned"]
    for override in ("data.max_rows=32", "train.updates_per_round=2", "train.batch_size=4"):
        argv += ["--set", override]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| base |" in printed and "| sft |" in printed and "| seppo-sign-uniform |" in printed
    results = _check_outputs(out, ["base", "sft", "seppo-sign-uniform"])
    assert results["options"]["seeds"] == [0]
    assert all(len(r["rounds"]) == 2 for r in results["runs"])
    # --curve-prompts: 3 of the 4 prompts in every round; --untuned: the preset's LR (bench-quality: 3e-4), not the tuned ones
    assert all(k["curve_prompts"] == 3 for r in results["runs"] for k in r["rounds"])
    assert {r["config"]["train"]["lr"] for r in results["runs"]} == {3e-4}


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
    assert grid_indices(prompts, 4, video=True) == [0, 1, 2, 3]
