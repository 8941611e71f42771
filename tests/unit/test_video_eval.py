"""Pure pieces of video evaluation: scorer choices per model kind, per-clip scores on known values,
set-level metrics in metrics.json and the gate, registration's flattening of set-level metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from seppo_lib.config import PRESET_DIR, load_config
from seppo_lib.evaluation.generate import eval_plan
from seppo_lib.evaluation.report import build_metrics
from seppo_lib.evaluation.scorer_choices import check_eval_config, config_is_video
from seppo_lib.evaluation.video_eval import PSNR_CAP_DB, per_clip_scores
from seppo_lib.evaluation.video_refs import References, to_uint8
from seppo_lib.registry import RegistryError
from seppo_lib.steps.register import load_eval_metrics, scorer_metrics

VIDEO_PRESETS = {"video-tiny", "video-world", "bench-video", "animatediff-sd15"}


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_scores_its_own_model_kind(preset: str) -> None:
    cfg = load_config(preset)
    assert config_is_video(cfg) is (preset in VIDEO_PRESETS)
    check_eval_config(cfg, video=config_is_video(cfg))


def test_video_presets_use_video_scorers() -> None:
    tiny = load_config("video-tiny")
    assert (tiny.eval.prompts, tiny.eval.scorers, tiny.eval.gate_metric) == (
        "builtin:world-video-test", ["world_motion", "psnr", "ssim"], "world_motion")
    big = load_config("animatediff-sd15")
    assert (big.eval.gate_metric, big.registry.gate_direction) == ("fvd", "lower")
    assert big.eval.scorer_paths["reference_clips"].startswith("s3://")


def test_video_model_folder_is_detected_from_its_unet_config(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNetMotionModel"}))
    assert config_is_video(load_config("tiny", [f"model.pretrained={tmp_path}"]))
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    assert not config_is_video(load_config("tiny", [f"model.pretrained={tmp_path}"]))


def test_per_clip_scores_on_known_values() -> None:
    """Constant clips: reference 100, sample 110 (uint8). MSE = (10/255)^2, so PSNR = 20 log10(25.5) = 28.13 dB;
    SSIM of constant frames a, b is (2ab + C1) / (a^2 + b^2 + C1), C1 = 1e-4. Identical clips: the PSNR cap, SSIM 1."""
    ref = torch.full((2, 3, 2, 12, 12), 100, dtype=torch.uint8)
    clips = ref.clone()
    clips[1] += 10
    plan = eval_plan(["a", "b"], 1, 0)
    scores, details = per_clip_scores(clips, plan, References(ref, [0, 1], "test"), ["psnr", "ssim"])
    assert details == [] and list(scores) == ["psnr", "ssim"]
    assert scores["psnr"][0] == PSNR_CAP_DB and scores["psnr"][1] == pytest.approx(20 * math.log10(25.5), abs=1e-3)
    a, b = 110 / 255, 100 / 255
    assert scores["ssim"] == pytest.approx([1.0, (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)], abs=1e-6)


def test_to_uint8_maps_minus_one_to_one_onto_0_255() -> None:
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0, 1.5])).tolist() == [0, 128, 255, 255]


def _metrics(set_metrics: dict | None, gate: tuple) -> dict:  # type: ignore[type-arg]
    return build_metrics(
        candidate_uri="c", champion_uri="b", candidate={"ssim": [0.5, 0.7]}, champion={"ssim": [0.4, 0.6]}, n_prompts=2,
        images_per_prompt=1, gate=gate, n_boot=100, seed=0, config_hash="h", set_metrics=set_metrics,
    )  # fmt: skip


def test_set_level_metrics_gate_on_their_values() -> None:
    sets = {"fvd": {"candidate": 10.0, "champion": 12.5, "direction": "lower", "n_clips": 2, "n_reference": 2}}
    doc = _metrics(sets, ("fvd", "lower", 0.0))
    assert doc["set_metrics"] == sets
    assert doc["gate"] == {"metric": "fvd", "direction": "lower", "min_margin": 0.0, "candidate": 10.0, "champion": 12.5, "passes": True}
    assert _metrics(sets, ("fvd", "lower", 2.5))["gate"]["passes"] is True  # 12.5 - 10.0 meets a 2.5 margin
    assert _metrics(sets, ("fvd", "lower", 3.0))["gate"]["passes"] is False
    assert _metrics(sets, ("ssim", "higher", 0.0))["gate"]["candidate"] == pytest.approx(0.6)
    assert "set_metrics" not in _metrics(None, ("ssim", "higher", 0.0))  # image metrics.json keeps its shape
    with pytest.raises(ValueError, match=r"gate metric 'fid' is not among the scored metrics \(ssim, fvd\)"):
        _metrics(sets, ("fid", "lower", 0.0))


def test_registration_reads_set_level_metrics(tmp_path: Path) -> None:
    sets = {"fvd": {"candidate": 10.0, "champion": 12.5, "direction": "lower"}}
    doc = _metrics(sets, ("fvd", "lower", 0.0))
    doc["scorers"] = {}  # only set-level scorers
    (tmp_path / "metrics.json").write_text(json.dumps(doc))
    assert scorer_metrics(load_eval_metrics(tmp_path)) == {"fvd": 10.0}
    (tmp_path / "metrics.json").write_text(json.dumps({**doc, "set_metrics": {"fvd": {"candidate": "x"}}}))
    with pytest.raises(RegistryError, match=r"set_metrics.fvd.candidate is .x., not a number"):
        load_eval_metrics(tmp_path)
