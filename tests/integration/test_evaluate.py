"""The evaluate step and `seppo evaluate` end to end on tiny random models, on CPU."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from seppo_lib.cli import main
from seppo_lib.config import ConfigError, SeppoConfig
from seppo_lib.evaluation.plots import cell_size, grid_size
from seppo_lib.sampling import sample_seed
from seppo_lib.steps import evaluate, prepare_data
from seppo_lib.testing.tiny_models import build_tiny_model
from tests.helpers import make_image_folder, tiny_config
from tests.tiny_clip import build_tiny_clip

FAST = ["sampling.num_inference_steps=2", "eval.max_prompts=3", "eval.images_per_prompt=2", "eval.bootstrap=200"]
STAT_KEYS = {"mean", "median", "ci_lo", "ci_hi"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    return {
        "root": root,
        "data": make_image_folder(root / "data", n=8),
        "clip": build_tiny_clip(root / "clip", seed=2),
        "other": build_tiny_model(root / "other-model", seed=1),  # same architecture, different weights
    }


def _cfg(tmp: Path, setup: dict[str, Path], *overrides: str) -> SeppoConfig:
    """The tiny preset; the model cache (tiny-random is built there once) is shared by the module."""
    scorers = ["eval.scorers=[world, pickscore]", f"eval.scorer_paths.pickscore={setup['clip']}"]
    return tiny_config(tmp, setup["data"], *FAST, *scorers, f"bank.cache_dir={setup['root'] / 'cache'}", *overrides)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_evaluate_step_writes_the_whole_report(tmp_path: Path, setup: dict[str, Path]) -> None:
    cfg = _cfg(tmp_path, setup, "eval.gate_metric=pickscore", "registry.gate_direction=lower")
    history = [(s, {"loss": 1.0 / s, "implicit_acc": 0.5 + s / 20, "flip_rate": 0.1, "lr": 1e-3}) for s in range(1, 7)]
    out = tmp_path / "report"
    metrics = evaluate.run(cfg, str(setup["other"]), out, history=history)

    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy_world.png", "grid.png", "hist_pickscore.png", "metrics.json", "per_prompt.csv", "report.html", "report.md",
        "training_curves.png",
    ]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["candidate"] == str(setup["other"]) and metrics["champion"] == "builtin:tiny-random"
    assert (metrics["n_prompts"], metrics["images_per_prompt"], metrics["config_hash"]) == (3, 2, cfg.config_hash())
    for block in metrics["scorers"].values():
        assert set(block["candidate"]) == set(block["champion"]) == STAT_KEYS
        assert block["candidate"]["ci_lo"] <= block["candidate"]["mean"] <= block["candidate"]["ci_hi"]
        assert block["win_rate"]["n"] == 3 and 0 <= block["win_rate"]["lo"] <= block["win_rate"]["rate"] <= block["win_rate"]["hi"] <= 1

    rows = _rows(out / "per_prompt.csv")
    assert [(int(r["prompt_index"]), int(r["sample"])) for r in rows] == [(i, j) for i in range(3) for j in range(2)]
    assert [int(r["seed"]) for r in rows] == [sample_seed(cfg.eval.seed, 0, k) for k in range(6)]
    cand = [float(r["pickscore_candidate"]) for r in rows]
    champ = [float(r["pickscore_champion"]) for r in rows]
    assert cand != champ  # different weights, different images
    gate = metrics["gate"]
    assert gate["candidate"] == pytest.approx(sum(cand) / 6) and gate["champion"] == pytest.approx(sum(champ) / 6)
    assert (gate["metric"], gate["direction"], gate["min_margin"]) == ("pickscore", "lower", 0.0)
    assert gate["passes"] is (gate["candidate"] < gate["champion"])

    with Image.open(out / "grid.png") as grid:
        assert grid.size == grid_size(6, cell_size(cfg.data.resolution))
    for name in ("accuracy_world.png", "hist_pickscore.png", "training_curves.png"):
        with Image.open(out / name) as im:
            im.verify()


def test_same_model_gets_same_seeds_and_ties(tmp_path: Path, setup: dict[str, Path]) -> None:
    cfg = _cfg(tmp_path, setup, "eval.gate_metric=pickscore", "eval.images_per_prompt=1")
    metrics = evaluate.run(cfg, "builtin:tiny-random", tmp_path / "r", champion="builtin:tiny-random")
    rows = _rows(tmp_path / "r" / "per_prompt.csv")
    assert all(r[f"{n}_candidate"] == r[f"{n}_champion"] for r in rows for n in ("world", "pickscore"))
    assert metrics["scorers"]["pickscore"]["win_rate"]["rate"] == 0.5
    assert metrics["gate"]["passes"] is False  # a tie never promotes
    assert not (tmp_path / "r" / "training_curves.png").exists()


def test_bank_checkpoint_candidate(tmp_path: Path, setup: dict[str, Path]) -> None:
    cfg = _cfg(tmp_path, setup, "eval.scorers=[world]", "eval.scorer_paths={}", "eval.max_prompts=1",
               "eval.images_per_prompt=1", f"bank.cache_dir={tmp_path / 'cache'}")  # bank caches are per bank
    prepare_data.run(cfg, tmp_path / "data")
    metrics = evaluate.run(cfg, "bank:initial", tmp_path / "r")
    assert metrics["candidate"] == "bank:initial" and metrics["n_prompts"] == 1
    assert (tmp_path / "r" / "grid.png").is_file()


def test_bad_gate_metric_is_a_one_line_error(tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, setup, "eval.gate_metric=hpsv2")
    with pytest.raises(ConfigError, match=r"eval.gate_metric='hpsv2' is not one of eval.scorers \(world, pickscore\)"):
        evaluate.run(cfg, "builtin:tiny-random", tmp_path / "r")
    assert not (tmp_path / "r").exists()
    rc = main(["evaluate", "--config", "tiny", "--model", "builtin:tiny-random", f"workdir={tmp_path}", "eval.gate_metric=clip"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("seppo: error: eval.gate_metric='clip' is not one of eval.scorers (world)")


def test_cli_evaluate(tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "my prompts.txt"
    prompts.write_text("# world prompts\na red circle\ntwo blue squares\na green triangle\n")
    out = tmp_path / "report"
    base = [f"workdir={tmp_path / 'work'}", f"bank.uri={tmp_path / 'bank'}", f"bank.cache_dir={setup['root'] / 'cache'}",
            "sampling.num_inference_steps=2", "eval.max_prompts=64"]
    rc = main(["evaluate", "--config", "tiny", "--model", str(setup["other"]), "--against", "builtin:tiny-random",
               "--prompts", str(prompts), "--n", "2", "--out", str(out), *base])
    text = capsys.readouterr().out
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_prompts"] == 2 and metrics["champion"] == "builtin:tiny-random"
    assert [r["prompt"] for r in _rows(out / "per_prompt.csv")] == ["a red circle", "two blue squares"]
    assert {p.name for p in out.iterdir()} == {"grid.png", "accuracy_world.png", "metrics.json", "per_prompt.csv",
                                               "report.md", "report.html"}  # not a bank: checkpoint: the report is here
    lines = text.splitlines()
    assert lines[1].split() == ["scorer", "candidate", "champion", "win", "rate", "[95%", "CI]"]
    world = metrics["scorers"]["world"]
    assert lines[2].split()[:3] == ["world", f"{world['candidate']['mean']:.4g}", f"{world['champion']['mean']:.4g}"]
    assert any(line.startswith("gate: world (higher is better, margin 0)") for line in lines)
    assert f"report: {out}" in text
