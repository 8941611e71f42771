"""The evaluate step on text-to-video models (tiny random video UNets, CPU): clips, per-clip and set-level scores, report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from seppo_lib.cli import main
from seppo_lib.config import ConfigError, SeppoConfig, load_config
from seppo_lib.errors import DataError
from seppo_lib.evaluation.generate import eval_plan
from seppo_lib.evaluation.video_eval import PSNR_CAP_DB, per_clip_scores
from seppo_lib.evaluation.video_refs import RENDER_SIZE, folder_references, to_uint8, world_references
from seppo_lib.sampling import sample_seed
from seppo_lib.steps import evaluate
from seppo_lib.steps import validate_config as validate_step
from seppo_lib.testing.tiny_models import build_tiny_model
from seppo_lib.world.video import generate_video_dataset, parse_motion, render_clip

FAST = ["sampling.num_inference_steps=2", "eval.max_prompts=3", "eval.images_per_prompt=2", "eval.bootstrap=200",
        "data.num_frames=4"]  # fmt: skip
STAT_KEYS = {"mean", "median", "ci_lo", "ci_hi"}
TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A second tiny video model (other weights), tiny VideoMAE (4 frames) and ViT extractors, a reference folder."""
    from transformers import VideoMAEConfig, VideoMAEModel, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("video-eval")
    torch.manual_seed(0)
    VideoMAEModel(VideoMAEConfig(image_size=16, patch_size=8, num_frames=4, tubelet_size=2, **TINY)).save_pretrained(root / "vmae")
    ViTModel(ViTConfig(image_size=16, patch_size=8, **TINY)).save_pretrained(root / "vit")
    return {
        "root": root,
        "other": build_tiny_model(root / "other-video", variant="video", seed=1),
        "vmae": root / "vmae",
        "vit": root / "vit",
        "refs": generate_video_dataset(root / "refs", split="test", n=4, seed=3, size=32, frames=4),
    }


def _cfg(tmp: Path, setup: dict[str, Path], *overrides: str) -> SeppoConfig:
    base = [f"workdir={tmp / 'work'}", f"bank.uri={tmp / 'bank'}", f"bank.cache_dir={setup['root'] / 'cache'}",
            "tracking.enabled=false"]  # fmt: skip
    return load_config("video-tiny", [*base, *FAST, *overrides])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_block(block: dict[str, Any], n_prompts: int) -> None:
    assert set(block["candidate"]) == set(block["champion"]) == STAT_KEYS
    assert block["candidate"]["ci_lo"] <= block["candidate"]["mean"] <= block["candidate"]["ci_hi"]
    assert block["win_rate"]["n"] == n_prompts and 0 <= block["win_rate"]["rate"] <= 1


def test_video_evaluate_writes_the_whole_report(tmp_path: Path, setup: dict[str, Path]) -> None:
    cfg = _cfg(tmp_path, setup)
    history = [(s, {"loss": 1.0 / s, "implicit_acc": 0.6, "flip_rate": 0.1}) for s in range(1, 4)]
    out = tmp_path / "report"
    metrics = evaluate.run(cfg, str(setup["other"]), out, history=history)

    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy_world_motion.png", "grid.gif", "hist_psnr.png", "hist_ssim.png", "metrics.json", "per_prompt.csv",
        "report.html", "report.md", "training_curves.png",
    ]  # fmt: skip
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (metrics["candidate"], metrics["champion"]) == (str(setup["other"]), "builtin:tiny-random:video")
    assert (metrics["n_prompts"], metrics["images_per_prompt"], metrics["config_hash"]) == (3, 2, cfg.config_hash())
    assert list(metrics["scorers"]) == ["world_motion", "psnr", "ssim"] and "set_metrics" not in metrics
    for block in metrics["scorers"].values():
        _check_block(block, 3)
    video = metrics["video"]
    assert (video["frames"], video["resolution"], video["grid_columns"]) == (4, 8, ["candidate", "champion", "reference"])
    assert video["reference_clips"] == "builtin:world-video ground-truth renders"
    assert set(video["world_motion_attributes"]["candidate"]) == {"colour", "shape", "direction", "count", "all"}

    rows = _rows(out / "per_prompt.csv")
    assert [r["prompt"] for r in rows][::2] == ["a red circle moving up", "a red square moving left", "a red triangle moving down"]
    assert [(int(r["prompt_index"]), int(r["sample"])) for r in rows] == [(i, j) for i in range(3) for j in range(2)]
    assert [int(r["seed"]) for r in rows] == [sample_seed(cfg.eval.seed, 0, k) for k in range(6)]
    psnr = [(float(r["psnr_candidate"]), float(r["psnr_champion"])) for r in rows]
    assert all(0 < a < PSNR_CAP_DB and 0 < b < PSNR_CAP_DB for a, b in psnr) and any(a != b for a, b in psnr)
    assert all(-1 <= float(r["ssim_candidate"]) <= 1 for r in rows)
    gate = metrics["gate"]
    assert (gate["metric"], gate["direction"]) == ("world_motion", "higher")
    assert gate["candidate"] == pytest.approx(sum(float(r["world_motion_candidate"]) for r in rows) / 6)

    with Image.open(out / "grid.gif") as grid:  # 6 rows x (candidate, champion, reference) of 8 px, x16, 1 px gaps
        assert grid.n_frames == 4 and grid.size == (16 * (3 * 9 + 1), 16 * (6 * 9 + 1))


def test_motion_model_against_itself_ties(tmp_path: Path, setup: dict[str, Path]) -> None:
    """AnimateDiff layout (UNetMotionModel + VAE) at 16 px; the same model on the same seeds ties everywhere."""
    cfg = _cfg(tmp_path, setup, "model.pretrained=builtin:tiny-random:motion", "data.resolution=16",
               "eval.max_prompts=2", "eval.images_per_prompt=1")  # fmt: skip
    metrics = evaluate.run(cfg, "builtin:tiny-random:motion", tmp_path / "r")
    rows = _rows(tmp_path / "r" / "per_prompt.csv")
    assert len(rows) == 2 and all(r[f"{n}_candidate"] == r[f"{n}_champion"] for r in rows for n in ("psnr", "ssim"))
    assert metrics["scorers"]["psnr"]["win_rate"]["rate"] == 0.5 and metrics["gate"]["passes"] is False
    with Image.open(tmp_path / "r" / "grid.gif") as grid:
        assert grid.n_frames == 4 and grid.size == (8 * (3 * 17 + 1), 8 * (2 * 17 + 1))


def test_world_references_are_the_ground_truth_renders(tmp_path: Path, setup: dict[str, Path]) -> None:
    """Reference clip k = render_clip(prompt, 32 px, seed of sample k), every frame_stride-th frame; clips
    scored against themselves: PSNR at the cap (identical), SSIM 1, world_motion 1 at 20 px."""
    from seppo_lib.steps.prepare_data import WORLD_SIZE

    assert RENDER_SIZE == WORLD_SIZE
    cfg = _cfg(tmp_path, setup, "data.resolution=32", "data.frame_stride=2")
    plan = eval_plan(["a blue square moving right", "a red circle falling"], 2, 7)
    refs = world_references(cfg, plan)
    assert refs.clips.dtype == torch.uint8 and refs.clips.shape == (4, 3, 4, 32, 32) and refs.set_rows == [0, 1, 2, 3]
    frames = render_clip(parse_motion(plan[3].prompt), 32, 7, plan[3].seed)[::2]
    expected = torch.stack([torch.from_numpy(np.array(f)).permute(2, 0, 1) for f in frames], dim=1)
    assert torch.equal(refs.clips[3], expected)

    small = world_references(_cfg(tmp_path, setup, "data.resolution=20"), plan)
    scores, details = per_clip_scores(small.clips, plan, small, ["world_motion", "psnr", "ssim"])
    assert scores["psnr"] == [PSNR_CAP_DB] * 4 and scores["ssim"] == pytest.approx([1.0] * 4, abs=1e-6)
    assert scores["world_motion"] == [1.0] * 4 and all(d["direction"] == 1.0 for d in details)
    noisy = (small.clips.float() + 20 * torch.randn(small.clips.shape, generator=torch.Generator().manual_seed(0)))
    scores, _ = per_clip_scores(noisy.clamp(0, 255).round().to(torch.uint8), plan, small, ["psnr", "ssim"])
    assert all(15 < v < 30 for v in scores["psnr"]) and all(v < 0.95 for v in scores["ssim"])


def test_fvd_and_fid_are_set_level_and_can_gate(tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, setup, "eval.scorers=[fvd, fid, ssim]", "eval.gate_metric=fvd", "registry.gate_direction=lower",
               f"eval.scorer_paths.fvd={setup['vmae']}", f"eval.scorer_paths.fid={setup['vit']}")  # fmt: skip
    metrics = evaluate.run(cfg, str(setup["other"]), tmp_path / "r")
    assert list(metrics["scorers"]) == ["ssim"]
    sets = metrics["set_metrics"]
    for name in ("fvd", "fid"):
        s = sets[name]
        assert (s["direction"], s["n_clips"], s["n_reference"]) == ("lower", 6, 6)
        assert math.isfinite(s["candidate"]) and s["candidate"] >= 0 and s["candidate"] != s["champion"]
    gate = metrics["gate"]
    assert (gate["metric"], gate["direction"], gate["candidate"], gate["champion"]) == (
        "fvd", "lower", sets["fvd"]["candidate"], sets["fvd"]["champion"])  # fmt: skip
    assert gate["passes"] is (sets["fvd"]["candidate"] < sets["fvd"]["champion"])
    assert not (tmp_path / "r" / "hist_fvd.png").exists()

    from seppo_lib.steps.register import load_eval_metrics, scorer_metrics

    flat = scorer_metrics(load_eval_metrics(tmp_path / "r"))
    assert flat["fvd"] == sets["fvd"]["candidate"] and flat["fid"] == sets["fid"]["candidate"] and "ssim" in flat

    rc = main(["evaluate", "--config", "video-tiny", "--model", str(setup["other"]), "--out", str(tmp_path / "cli"),
               f"workdir={tmp_path / 'work'}", f"bank.cache_dir={setup['root'] / 'cache'}", *FAST, "eval.max_prompts=2",
               "eval.images_per_prompt=1", "eval.scorers=[fvd, psnr]", "eval.gate_metric=psnr",
               f"eval.scorer_paths.fvd={setup['vmae']}"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "grid.gif" in text and "2 prompts x 1 clip(s)" in text
    assert any(line.split()[:1] == ["fvd"] and "set-level, lower is better" in line for line in text.splitlines())


def test_set_level_errors_before_sampling(tmp_path: Path, setup: dict[str, Path]) -> None:
    out = tmp_path / "r"
    with pytest.raises(ConfigError, match=r"^the fvd scorer needs a local feature extractor: set eval.scorer_paths.fvd"):
        evaluate.run(_cfg(tmp_path, setup, "eval.scorers=[fvd, psnr]", "eval.gate_metric=psnr"), "builtin:tiny-random:video", out)
    with pytest.raises(ConfigError, match=r"is an image model \(embeds frames\); fvd needs a VideoMAE model"):
        evaluate.run(_cfg(tmp_path, setup, "eval.scorers=[fvd, psnr]", "eval.gate_metric=psnr",
                          f"eval.scorer_paths.fvd={setup['vit']}"), "builtin:tiny-random:video", out)  # fmt: skip
    with pytest.raises(ConfigError, match=r"embeds 4-frame clips but data.num_frames=6"):
        evaluate.run(_cfg(tmp_path, setup, "eval.scorers=[fvd, psnr]", "eval.gate_metric=psnr", "data.num_frames=6",
                          f"eval.scorer_paths.fvd={setup['vmae']}"), "builtin:tiny-random:video", out)  # fmt: skip
    with pytest.raises(ConfigError, match=r"fvd / fid need at least 2 clips per model, got 1"):
        evaluate.run(_cfg(tmp_path, setup, "eval.scorers=[fvd, psnr]", "eval.gate_metric=psnr", "eval.max_prompts=1",
                          "eval.images_per_prompt=1", f"eval.scorer_paths.fvd={setup['vmae']}"), "builtin:tiny-random:video", out)  # fmt: skip
    assert not out.exists()


def test_reference_clips_from_a_folder(tmp_path: Path, setup: dict[str, Path]) -> None:
    """Prompts = the folder's captions (its metadata.jsonl); each prompt's reference is the clip with that caption."""
    refs_dir = setup["refs"]
    cfg = _cfg(tmp_path, setup, "eval.scorers=[psnr, ssim]", "eval.gate_metric=ssim", f"eval.prompts={refs_dir / 'metadata.jsonl'}",
               f"eval.scorer_paths.reference_clips={refs_dir}")  # fmt: skip
    metrics = evaluate.run(cfg, str(setup["other"]), tmp_path / "r")
    assert metrics["video"]["reference_clips"] == str(refs_dir) and metrics["n_prompts"] == 3
    plan = eval_plan([json.loads(line)["caption"] for line in (refs_dir / "metadata.jsonl").read_text().splitlines()[:3]], 2, 0)
    refs = folder_references(cfg, plan, refs_dir, "refs")
    assert refs.set_rows == [0, 2, 4] and torch.equal(refs.clips[0], refs.clips[1])
    from seppo_lib.data.prepare import preprocess_clip
    from seppo_lib.data.video import read_clip

    assert torch.equal(refs.clips[2], to_uint8(preprocess_clip(read_clip(refs_dir / "000001.gif", 4), 8)))
    with pytest.raises(DataError, match=r"refs: no reference clip has the caption of prompt 0 'a cat' \(matched by caption\)"):
        folder_references(cfg, eval_plan(["a cat"], 1, 0), refs_dir, "refs")
    missing = _cfg(tmp_path, setup, "eval.scorers=[psnr]", "eval.gate_metric=psnr", f"eval.scorer_paths.reference_clips={tmp_path / 'nope'}")
    with pytest.raises(DataError, match=r"eval.scorer_paths.reference_clips=.*nope' is not a folder"):
        evaluate.run(missing, "builtin:tiny-random:video", tmp_path / "r2")


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("video-tiny", ["eval.scorers=[pickscore, psnr]"],
         r"eval.scorers has 'pickscore', an image scorer, but this is a video model; video scorers: world_motion, psnr, ssim, fvd, fid"),
        ("video-tiny", ["eval.scorers=[world]", "eval.gate_metric=world"], r"eval.scorers has 'world', an image scorer"),
        ("tiny", ["eval.scorers=[world, ssim]"],
         r"eval.scorers has 'ssim', a video scorer, but this is an image model; image scorers: world, pickscore, clip, aesthetic"),
        ("video-tiny", ["eval.scorers=[psnr, lpips]", "eval.gate_metric=psnr"], r"unknown scorer 'lpips' in eval.scorers; video scorers"),
        ("video-tiny", ["eval.gate_metric=fvd"], r"eval.gate_metric='fvd' is not one of eval.scorers \(world_motion, psnr, ssim\)"),
        ("video-tiny", ["eval.prompts=builtin:world-test"],
         r"eval.prompts='builtin:world-test' are image-world prompts, but this is a video model; use builtin:world-video-test or"),
        ("tiny", ["eval.prompts=builtin:world-video-test"], r"are video-world prompts, but this is an image model"),
        ("video-tiny", ["registry.gate_direction=lower"],
         r"eval.gate_metric=world_motion is higher-is-better but registry.gate_direction=lower; set registry.gate_direction=higher"),
        ("video-tiny", ["eval.scorers=[fvd, psnr]", "eval.gate_metric=fvd", "eval.scorer_paths.fvd=/x"],
         r"eval.gate_metric=fvd is lower-is-better but registry.gate_direction=higher"),
        ("video-tiny", ["eval.scorer_paths.pickscore=/x"], r"eval.scorer_paths.pickscore is not used with scorers world_motion, psnr, ssim"),
        ("video-tiny", ["eval.scorers=[world_motion]", "eval.scorer_paths.reference_clips=/x"],
         r"eval.scorer_paths.reference_clips is not used with scorers world_motion"),
        ("video-tiny", ["data.num_frames=1"], r"world_motion checks motion and needs data.num_frames >= 2, got 1"),
    ],
)
def test_validate_config_rejects_scorers_of_the_other_kind(tmp_path: Path, preset: str, overrides: list[str], message: str) -> None:
    cfg = load_config(preset, [f"workdir={tmp_path}", *overrides])
    for check in (lambda: validate_step.run(cfg.to_json()), lambda: evaluate.check_gate_metric(cfg)):
        with pytest.raises(ConfigError, match=message) as err:
            check()
        assert "\n" not in str(err.value)


def test_video_world_prompts_and_video_models_are_detected(tmp_path: Path, setup: dict[str, Path]) -> None:
    """A prompt file that is not video-world text fails before sampling; an image preset evaluating a video
    model folder is checked as video."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moving up\na cat\n")
    with pytest.raises(DataError, match=r"eval.prompts: prompt 1 \(cannot parse 'a cat'.*builtin:world-video-test"):
        evaluate.run(_cfg(tmp_path, setup, f"eval.prompts={prompts}"), "builtin:tiny-random:video", tmp_path / "r")
    image_cfg = load_config("tiny", [f"workdir={tmp_path}", f"bank.cache_dir={setup['root'] / 'cache'}", "tracking.enabled=false"])
    with pytest.raises(ConfigError, match=r"eval.scorers has 'world', an image scorer, but this is a video model"):
        evaluate.run(image_cfg, str(setup["other"]), tmp_path / "r")
    assert not (tmp_path / "r").exists()
