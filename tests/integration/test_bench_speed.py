"""`seppo bench speed --quick` end to end (slow) and `seppo bench plots` on committed benchmark JSON (cheap)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from seppo_lib.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_bench_plots_redraws_the_quality_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(ROOT / "docs" / "results" / "results.json", tmp_path / "results.json")
    assert main(["bench", "plots", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name in ("accuracy_vs_round.png", "flip_rate_vs_round.png"):
        assert (tmp_path / name).stat().st_size > 1000 and f"wrote {tmp_path / name}" in printed


def test_bench_plots_redraws_the_speed_figures(tmp_path: Path) -> None:
    assert main(["bench", "plots", "--speed", str(ROOT / "docs" / "performance" / "cpu-scaling.json"), "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["bank_size.png", "cache_memory.png", "data_size.png", "shards.png"]


def test_bench_plots_without_results_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "plots", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "has no results.json" in err and "\n" not in err


@pytest.mark.slow
def test_bench_speed_quick_prints_the_ratios_within_five_minutes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "speed.json"
    assert main(["bench", "speed", "--quick", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    doc = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert set(doc["models"]) == {"world", "tiny-vae"}
    for name, model in doc["models"].items():
        assert set(model["ratios"]) == {"step", "sampler", "round"}
        assert all(math.isfinite(r) and r > 0 for r in model["ratios"].values())
        assert f"{name}: project / baseline: step {model['ratios']['step']:.2f}×" in printed
        assert model["project"]["step"]["gflops"] > 0 and model["baseline"]["sampler"]["peak_bytes"] > 0
        assert {row["switch"] for row in model["ablations"]} >= {"channels_last", "adamw_fused"}
    assert doc["wall_seconds"] < 300, f"--quick took {doc['wall_seconds']:.0f} s (limit 5 min on 2 CPU cores)"
