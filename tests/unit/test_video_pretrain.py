"""The video world base model's recipe: AnimateDiff from an image UNet, zero-initialised motion
modules, per-group learning rates, and a short run that writes a loadable model folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from seppo_lib.errors import DataError
from seppo_lib.world.video_pretrain import (
    VideoRecipe,
    build_motion_unet,
    param_groups,
    pretrain_video,
    spatial_unet,
    wrong_prompt,
)
from seppo_lib.world.video import motion_split

TINY = VideoRecipe(
    steps=2, batch_size=2, size=20, frames=3, init_unet=None, block_out_channels=(8, 16, 16),
    attention_head_dim=8, norm_num_groups=4, motion_heads=2, warmup_steps=1,
)


def _framewise(unet2d: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    b, c, f, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    out = unet2d(frames, t.repeat_interleave(f), encoder_hidden_states=cond.repeat_interleave(f, 0)).sample
    return out.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def test_zero_initialised_motion_model_is_its_image_unet_frame_by_frame() -> None:
    """With the motion modules' proj_out at zero every temporal layer is the identity, so the
    UNetMotionModel's prediction equals the 2-D UNet's on each frame (AnimateDiff's start)."""
    torch.manual_seed(0)
    motion = build_motion_unet(TINY).eval()
    torch.manual_seed(0)
    unet2d = spatial_unet(TINY).eval()
    x, t, cond = torch.randn(2, 3, 3, 20, 20), torch.tensor([10, 700]), torch.randn(2, 5, 384)
    with torch.no_grad():
        got = motion(x, t, encoder_hidden_states=cond.repeat_interleave(3, 0)).sample
        want = _framewise(unet2d, x, t, cond)
    assert torch.allclose(got, want, atol=1e-5)
    random_init = build_motion_unet(replace(TINY, zero_init_motion=False)).eval()
    with torch.no_grad():
        other = random_init(x, t, encoder_hidden_states=cond.repeat_interleave(3, 0)).sample
    assert not torch.allclose(other, want, atol=1e-3)


def test_param_groups_split_motion_and_spatial_learning_rates() -> None:
    unet = build_motion_unet(TINY)
    motion, spatial = param_groups(unet, replace(TINY, lr=1e-3, spatial_lr_scale=0.25))
    assert motion["lr"] == 1e-3 and spatial["lr"] == 2.5e-4
    assert len(motion["params"]) + len(spatial["params"]) == len(list(unet.parameters()))
    assert motion["params"] and spatial["params"]
    with pytest.raises(DataError, match="spatial_lr_scale"):
        replace(TINY, spatial_lr_scale=2.0).check()


def test_wrong_prompt_changes_exactly_one_attribute() -> None:
    rng = np.random.default_rng(0)
    for prompt in motion_split("train")[:20]:
        other = wrong_prompt(prompt, rng)
        diffs = (other.thing.colour != prompt.thing.colour) + (other.thing.shape != prompt.thing.shape) + (other.direction != prompt.direction)
        assert diffs == 1 and other.split == "train"


def test_short_run_moves_motion_weights_only_and_writes_a_loadable_folder(tmp_path: Path) -> None:
    """spatial_lr_scale=0 freezes the 2-D weights: after two steps the motion modules moved, the
    spatial weights are bit-identical; the folder loads as a video model with its recipe."""
    from seppo_lib.models import load_model

    recipe = replace(TINY, spatial_lr_scale=0.0, weight_decay=0.0, ema_decay=0.0)
    torch.manual_seed(recipe.seed)
    start = build_motion_unet(recipe).state_dict()
    doc = pretrain_video(tmp_path / "model", recipe, command="test", save_every=1)
    model = load_model(str(tmp_path / "model"), tmp_path / "cache")
    assert model.is_video and type(model.unet).__name__ == "UNetMotionModel"
    after = model.unet.state_dict()
    moved = [k for k in start if not torch.equal(start[k], after[k])]
    assert moved and all("motion_modules" in k for k in moved)
    assert json.loads((tmp_path / "model" / "recipe.json").read_text())["recipe"]["frames"] == 3
    assert doc["data"]["clips_seen"] == 4 and doc["motion_parameters"] > 0
    assert (tmp_path / "model.step-000001" / "unet").is_dir()
