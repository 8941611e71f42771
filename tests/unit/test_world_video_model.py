"""The shipped base model of the built-in video world (`builtin:world-video-base`) and its recipe."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.config import SamplingConfig
from seppo_lib.models import load_model
from seppo_lib.world.builtin import BUILTIN_WORLD_VIDEO_BASE

MAX_WEIGHT_BYTES = 20 * 1024 * 1024
RECIPE = json.loads((BUILTIN_WORLD_VIDEO_BASE / "recipe.json").read_text())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_model("builtin:world-video-base", tmp_path_factory.mktemp("cache"))


def test_base_model_is_an_animatediff_unet_on_the_image_world_base(base) -> None:  # type: ignore[no-untyped-def]
    """A pixel-space UNetMotionModel with the image world base model's 2-D layout and MiniLM text states."""
    unet = base.unet
    assert type(unet).__name__ == "UNetMotionModel" and base.is_video and base.vae is None
    assert (unet.config.in_channels, unet.config.out_channels, unet.config.cross_attention_dim) == (3, 3, 384)
    image_config = json.loads((BUILTIN_WORLD_VIDEO_BASE.parent / "base_model" / "unet" / "config.json").read_text())
    assert list(unet.config.block_out_channels) == image_config["block_out_channels"]
    r = RECIPE["recipe"]
    assert base.latent_shape(r["size"], r["frames"]) == (3, r["frames"], r["size"], r["size"])
    assert any("motion_modules" in n for n, _ in unet.named_parameters())


def test_weights_are_small_float32_safetensors_and_the_text_encoder_is_referenced() -> None:
    files = [p for p in BUILTIN_WORLD_VIDEO_BASE.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert weights and not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert sum(p.stat().st_size for p in weights) <= MAX_WEIGHT_BYTES
    assert all(t.dtype == torch.float32 for p in weights for t in load_file(str(p)).values())
    assert json.loads((BUILTIN_WORLD_VIDEO_BASE / "seppo_model.json").read_text()) == {"text_encoder": "builtin:minilm"}
    assert not (BUILTIN_WORLD_VIDEO_BASE / "text_encoder").exists()


def test_recipe_records_command_data_and_measured_accuracy() -> None:
    assert RECIPE["command"].startswith("python -m seppo_lib.world.video_pretrain ")
    assert RECIPE["recipe"]["init_unet"] == "builtin:world-base"
    assert RECIPE["data"]["clips_seen"] == RECIPE["recipe"]["steps"] * RECIPE["recipe"]["batch_size"]
    acc = RECIPE["measured_accuracy"]
    for split in ("test", "train"):
        assert set(acc[split]) == {"colour", "shape", "count", "direction", "all"}
        assert all(0.0 <= v <= 1.0 for v in acc[split].values())
    assert (acc["resolution"], acc["frames"]) == (RECIPE["recipe"]["size"], RECIPE["recipe"]["frames"])


def test_samples_clips_of_the_trained_shape(base) -> None:  # type: ignore[no-untyped-def]
    from seppo_lib.evaluation.video_metrics import sample_clips, world_scores

    r = RECIPE["recipe"]
    sampling = SamplingConfig(scheduler="ddim", num_inference_steps=2, guidance_scale=3.0, batch_size=2)
    texts = ["a red circle moving right", "a blue square moving down"]
    clips = sample_clips(base, texts, [0, 1], sampling, resolution=r["size"], frames=r["frames"], max_tokens=16)
    assert clips.shape == (2, 3, r["frames"], r["size"], r["size"])
    assert 0.0 <= float(clips.min()) and float(clips.max()) <= 1.0
    assert [set(s) for s in world_scores(clips, texts)] == [{"colour", "shape", "count", "direction", "all"}] * 2


def test_world_video_accuracy_defaults_to_the_trained_clip_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from seppo_lib.evaluation.video_metrics import world_video_accuracy

    sampling = SamplingConfig(scheduler="ddim", num_inference_steps=2, guidance_scale=3.0, batch_size=2)
    acc = world_video_accuracy(BUILTIN_WORLD_VIDEO_BASE, 1, 1, sampling=sampling, cache_dir=tmp_path)
    assert (acc["resolution"], acc["frames"]) == (RECIPE["recipe"]["size"], RECIPE["recipe"]["frames"])
    assert set(acc["test"]) == {"colour", "shape", "count", "direction", "all"}
