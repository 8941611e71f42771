"""Report writers on synthetic scores and images: statistics, gate, files and their geometry."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from seppo_lib.evaluation.generate import EvalSample, eval_plan, to_pil
from seppo_lib.evaluation import report as report_module
from seppo_lib.evaluation.plots import (
    CAPTION_LINES,
    GRID_ROWS,
    LINE_H,
    MARGIN,
    TITLE_LINES,
    accuracy_figure,
    cell_size,
    grid_size,
    plot_training_curves,
    write_grid,
)
from seppo_lib.evaluation.report import build_metrics, gate_passes, per_prompt_means, write_report
from seppo_lib.sampling import sample_seed

STAT_KEYS = {"mean", "median", "ci_lo", "ci_hi"}


def _metrics(cand: dict[str, list[float]], champ: dict[str, list[float]], per_prompt: int = 1, *,
             gate: tuple = ("world", "higher", 0.0)) -> dict:
    return build_metrics(
        candidate_uri="bank:ckpt-000012", champion_uri="builtin:world-base", candidate=cand, champion=champ,
        n_prompts=len(next(iter(cand.values()))) // per_prompt, images_per_prompt=per_prompt, gate=gate,
        n_boot=200, seed=0, config_hash="abc",
    )


def test_per_prompt_means_average_each_prompts_images() -> None:
    """[1, 2 | 3, 5] with 2 images per prompt -> [1.5, 4]."""
    assert per_prompt_means([1, 2, 3, 5], 2).tolist() == [1.5, 4.0]
    with pytest.raises(ValueError, match="do not split"):
        per_prompt_means([1, 2, 3], 2)


@pytest.mark.parametrize(
    ("candidate", "champion", "direction", "margin", "passes"),
    [
        (0.6, 0.5, "higher", 0.0, True),
        (0.5, 0.5, "higher", 0.0, False),  # a tie is not a win
        (0.4, 0.5, "higher", 0.0, False),
        (0.4, 0.5, "lower", 0.0, True),
        (0.6, 0.5, "lower", 0.0, False),
        (0.30, 0.25, "higher", 0.05, True),  # 0.30 - 0.25 = 0.04999999999999999 meets 0.05
        (0.29, 0.25, "higher", 0.05, False),
        (0.20, 0.25, "lower", 0.05, True),
        (0.21, 0.25, "lower", 0.05, False),
        (math.nan, 0.25, "higher", 0.0, False),
    ],
)
def test_gate_direction_and_margin(candidate: float, champion: float, direction: str, margin: float, passes: bool) -> None:
    assert gate_passes(candidate, champion, direction, margin) is passes  # type: ignore[arg-type]


def test_gate_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="'higher' or 'lower'"):
        gate_passes(1.0, 0.0, "up", 0.0)  # type: ignore[arg-type]


def test_metrics_schema_and_values() -> None:
    """2 images per prompt; per-prompt means: candidate world [1, 0.5, 1, 0], champion [0, 0.5, 1, 1].

    Means 0.625 and 0.625; wins per prompt [1, 0.5 (tie), 0.5 (tie), 0] -> win rate 2/4 = 0.5.
    The gate on `clip` (lower is better, margin 0.5): candidate mean 2, champion mean 3 -> improvement 1 >= 0.5.
    """
    cand = {"world": [1, 1, 1, 0, 1, 1, 0, 0], "clip": [2] * 8}
    champ = {"world": [0, 0, 0, 1, 1, 1, 1, 1], "clip": [3] * 8}
    m = _metrics(cand, champ, 2, gate=("clip", "lower", 0.5))
    assert set(m) == {"candidate", "champion", "n_prompts", "images_per_prompt", "scorers", "gate", "config_hash"}
    assert (m["candidate"], m["champion"], m["n_prompts"], m["images_per_prompt"]) == ("bank:ckpt-000012", "builtin:world-base", 4, 2)
    assert set(m["scorers"]) == {"world", "clip"}
    world = m["scorers"]["world"]
    assert set(world) == {"candidate", "champion", "win_rate"}
    assert set(world["candidate"]) == set(world["champion"]) == STAT_KEYS
    assert set(world["win_rate"]) == {"rate", "lo", "hi", "n"}
    assert world["candidate"]["mean"] == 0.625 and world["champion"]["mean"] == 0.625
    assert world["candidate"]["median"] == 0.75 and world["champion"]["median"] == 0.75
    assert world["candidate"]["ci_lo"] <= 0.625 <= world["candidate"]["ci_hi"]
    assert world["win_rate"]["rate"] == 0.5 and world["win_rate"]["n"] == 4
    assert world["win_rate"]["lo"] < 0.5 < world["win_rate"]["hi"]
    assert m["gate"] == {"metric": "clip", "direction": "lower", "min_margin": 0.5, "candidate": 2.0, "champion": 3.0, "passes": True}
    assert _metrics(cand, champ, 2, gate=("clip", "lower", 1.5))["gate"]["passes"] is False
    assert _metrics(cand, champ, 2, gate=("clip", "higher", 0.0))["gate"]["passes"] is False
    json.dumps(m, allow_nan=False)  # plain JSON types only


def test_metrics_reject_unknown_gate_metric_and_mismatched_scores() -> None:
    with pytest.raises(ValueError, match="gate metric 'pickscore' is not among"):
        _metrics({"world": [1.0]}, {"world": [0.0]}, gate=("pickscore", "higher", 0.0))
    with pytest.raises(ValueError, match="differ"):
        _metrics({"world": [1.0]}, {"clip": [0.0]})


def test_eval_plan_seeds_are_prompt_major() -> None:
    plan = eval_plan(["a", "b"], 3, base_seed=7)
    assert [(e.prompt_index, e.prompt, e.sample) for e in plan] == [(i, p, j) for i, p in enumerate("ab") for j in range(3)]
    assert [e.seed for e in plan] == [sample_seed(7, 0, k) for k in range(6)]


def test_to_pil_round_trips_pixels() -> None:
    import torch

    pixels = torch.zeros(2, 3, 4, 5)
    pixels[1, 0] = 1.0
    images = to_pil(pixels)
    assert [im.size for im in images] == [(5, 4), (5, 4)]
    assert images[0].getpixel((0, 0)) == (0, 0, 0) and images[1].getpixel((2, 3)) == (255, 0, 0)


def test_cell_and_grid_size() -> None:
    assert [cell_size(s) for s in (8, 32, 24, 160, 200, 512)] == [160, 160, 168, 160, 200, 256]
    # width: 2 columns of cell px + 3 margins; height: margin, title band, margin, rows
    assert grid_size(3, 160) == (2 * 160 + 3 * 8, 8 + 2 * 14 + 8 + 3 * (3 * 14 + 160 + 14 + 8))
    assert (MARGIN, LINE_H, TITLE_LINES, CAPTION_LINES) == (8, 14, 2, 3)


def test_grid_puts_candidate_left_and_champion_right(tmp_path: Path) -> None:
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    long_prompt = "a very long prompt " * 20
    path = write_grid(tmp_path / "g.png", [red, red], [blue, blue], [long_prompt, "short"], ["x 1", "x 2"], ["y", "y"],
                      titles=(("candidate", "s3://bucket/" + "deep/" * 30 + "ckpt-1"), ("champion", "base")))
    with Image.open(path) as grid:
        assert grid.size == (344, 8 + 28 + 8 + 2 * 224)
        top = 8 + 28 + 8 + 3 * 14  # first row's images start below the caption
        assert grid.getpixel((8 + 80, top + 80)) == (255, 0, 0)
        assert grid.getpixel((2 * 8 + 160 + 80, top + 80)) == (0, 0, 255)
        assert grid.getpixel((8 + 80, top + 224 + 80)) == (255, 0, 0)
    with pytest.raises(ValueError, match="same non-zero number"):
        write_grid(tmp_path / "bad.png", [red], [], ["p"], ["n"], ["n"])


def _synthetic(n_prompts: int, per_prompt: int, side: int) -> tuple[list[EvalSample], tuple, tuple]:
    plan = eval_plan([f"prompt {i}" for i in range(n_prompts)], per_prompt, base_seed=1)
    cand_images = [Image.new("RGB", (side, side), (10 * k, 0, 0)) for k in range(len(plan))]
    champ_images = [Image.new("RGB", (side, side), (0, 0, 10 * k)) for k in range(len(plan))]
    cand = {"world": [float(k % 2) for k in range(len(plan))], "pickscore": [20.0 + 0.1 * k for k in range(len(plan))]}
    champ = {"world": [0.0] * len(plan), "pickscore": [20.5] * len(plan)}
    return plan, (cand_images, champ_images), (cand, champ)


def test_write_report_files(tmp_path: Path) -> None:
    plan, images, scores = _synthetic(5, 2, side=32)
    metrics = _metrics(*scores, 2)
    history = [(s, {"loss": 1 / s, "implicit_acc": 0.6, "flip_rate": 0.2, "grad_norm": 1.0}) for s in range(1, 5)]
    files = write_report(tmp_path, metrics, plan, images, scores, history)
    names = ["metrics.json", "per_prompt.csv", "grid.png", "accuracy_world.png", "hist_pickscore.png", "training_curves.png"]
    assert [p.name for p in files] == names
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    with (tmp_path / "per_prompt.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["prompt_index", "prompt", "sample", "seed", "world_candidate", "world_champion",
                       "pickscore_candidate", "pickscore_champion"]
    assert rows[3] == ["1", "prompt 1", "0", str(plan[2].seed), "0.0", "0.0", "20.2", "20.5"]
    assert len(rows) == 1 + 10
    sizes = {}
    for name in names[2:]:
        with Image.open(tmp_path / name) as im:
            im.load()
            sizes[name] = im.size
    assert sizes["grid.png"] == grid_size(min(GRID_ROWS, 10), 160) == (344, 44 + 8 * 224)
    assert sizes["accuracy_world.png"] == sizes["hist_pickscore.png"] == (500, 350)
    assert sizes["training_curves.png"] == (3 * 400, 320)


def test_write_report_without_history_has_no_curves(tmp_path: Path) -> None:
    plan, images, scores = _synthetic(2, 1, side=512)
    files = write_report(tmp_path, _metrics(*scores), plan, images, scores)
    assert "training_curves.png" not in {p.name for p in files} and not (tmp_path / "training_curves.png").exists()
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (2 * 256 + 3 * 8, 44 + 2 * (42 + 256 + 22))


def test_training_curves_plot_only_logged_metrics(tmp_path: Path) -> None:
    """sft logs loss but no implicit_acc/flip_rate: one panel; no curve metric at all: no file."""
    path = plot_training_curves(tmp_path / "c.png", [(1, {"loss": 0.5}), (2, {"loss": 0.4})])
    assert path is not None
    with Image.open(path) as im:
        assert im.size == (400, 320)
    assert plot_training_curves(tmp_path / "none.png", [(1, {"lr": 1e-3})]) is None
    assert not (tmp_path / "none.png").exists()


def _captured_grid(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Replace the report's grid writer by one that records its arguments."""
    seen: dict = {}

    def fake(path: Path, candidate: list, reference: list, captions: list, *_notes: list, titles: tuple) -> Path:
        seen.update(n=len(candidate), captions=captions, titles=titles)
        Path(path).write_bytes(b"png")
        return Path(path)

    monkeypatch.setattr(report_module, "write_grid", fake)
    return seen


def test_grid_shows_eight_prompts_and_names_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 prompts x 2 images: the grid shows the first image of 8 distinct prompts (not 4 prompts x 2)
    and titles the right column with the caller's label; without one it never claims "champion"."""
    seen = _captured_grid(monkeypatch)
    plan, images, scores = _synthetic(10, 2, side=8)
    write_report(tmp_path / "a", _metrics(*scores, 2), plan, images, scores, reference_label="base model")
    prompts = [caption.split("\n")[0] for caption in seen["captions"]]
    assert seen["n"] == GRID_ROWS == 8 and prompts == [f"prompt {i}" for i in range(8)]
    assert all("image 0," in caption for caption in seen["captions"])
    assert seen["titles"] == (("candidate", "bank:ckpt-000012"), ("base model", "builtin:world-base"))
    write_report(tmp_path / "b", _metrics(*scores, 2), plan, images, scores)
    assert seen["titles"][1][0] == "reference"


def test_grid_fills_rows_with_later_images_when_prompts_are_few(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _captured_grid(monkeypatch)
    plan, images, scores = _synthetic(3, 4, side=8)
    write_report(tmp_path, _metrics(*scores, 4), plan, images, scores)
    assert [c.split("\n")[1].split(",")[0] for c in seen["captions"]] == ["image 0"] * 3 + ["image 1"] * 3 + ["image 2"] * 2


def test_binary_scorer_is_drawn_as_accuracy_bars_with_the_metrics_cis(tmp_path: Path) -> None:
    """A 0/1 scorer gets accuracy_<scorer>.png (no histogram); its bars are metrics.json's means and
    the error bars its bootstrap CI, clipped to [0, 1]; the axis names both models."""
    plan, images, scores = _synthetic(6, 2, side=8)
    metrics = _metrics(*scores, 2)
    files = {p.name for p in write_report(tmp_path, metrics, plan, images, scores, reference_label="champion v3")}
    assert "accuracy_world.png" in files and "hist_world.png" not in files and "hist_pickscore.png" in files
    world = metrics["scorers"]["world"]
    fig = accuracy_figure("world", {"candidate": world["candidate"], "champion v3": world["champion"]}, 6)
    ax = fig.axes[0]
    assert [b.get_height() for b in ax.patches] == pytest.approx([world["candidate"]["mean"], world["champion"]["mean"]])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["candidate", "champion v3"]
    wild = {"a": {"mean": 0.02, "ci_lo": -0.3, "ci_hi": 0.2}, "b": {"mean": 0.97, "ci_lo": 0.8, "ci_hi": 1.4}}
    segments = accuracy_figure("world", wild, 6).axes[0].collections[0].get_segments()
    assert [v for seg in segments for v in seg[:, 1]] == pytest.approx([0.0, 0.2, 0.8, 1.0])


def test_the_reference_column_says_whether_it_is_the_base_model_or_the_champion() -> None:
    from seppo_lib.config import load_config
    from seppo_lib.steps.evaluate import reference_label

    cfg = load_config("tiny")
    assert reference_label(cfg, cfg.model.pretrained) == f"base model ({cfg.model.pretrained})"
    assert reference_label(cfg, "/tmp/champion") == "champion"
