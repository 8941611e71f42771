"""A tiny random Stable Diffusion 3 model folder (diffusers layout, no T5), built offline in about a second.

Modelled on diffusers' tests/pipelines/stable_diffusion_3/test_pipeline_stable_diffusion_3.py
`get_dummy_components`: an SD3Transformer2DModel, two CLIPTextModelWithProjection encoders, an
AutoencoderKL with SD3's shift/scaling factors and a FlowMatchEulerDiscreteScheduler with SD3's shift 3.0.
Registered as `builtin:tiny-random:sd3` (seppo_lib/testing/__init__.py).
Differences: no text_encoder_3/tokenizer_3 (StableDiffusion3Pipeline then uses zeros for the T5 tokens),
joint_attention_dim 96 > 64 = the two CLIP widths, so the CLIP features are zero-padded as in the real
model (2048 -> 4096), and byte-level CLIP tokenizers with no merges (no hub file needed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

CLIP_WIDTH = 32  # each CLIP's hidden and projection size: hidden 2·32 = 64 (padded to 96), pooled 2·32 = 64
JOINT_DIM = 96
LATENT_CHANNELS = 4
SAMPLE_SIZE = 8  # latent side; pixels = 8 · 2 (two VAE blocks) = 16
COMPONENTS = {
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_3": [None, None],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "tokenizer_3": [None, None],
    "transformer": ["diffusers", "SD3Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "image_encoder": [None, None],
    "feature_extractor": [None, None],
}


def byte_vocab() -> dict[str, int]:
    """CLIP's byte -> unicode table as a vocab (each byte and its `</w>` form) plus the two special tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def _clip(vocab: dict[str, int], seed: int) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    eos = vocab["<|endoftext|>"]
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=CLIP_WIDTH, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos,
        projection_dim=CLIP_WIDTH, hidden_act="gelu",
    )
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(config)


def write_tiny_sd3(dest: Path, seed: int = 0) -> None:
    """Write the tiny SD3 parts and model_index.json into the existing folder `dest` (deterministic for a seed)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    SD3Transformer2DModel(
        sample_size=SAMPLE_SIZE, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=1,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=JOINT_DIM,
        pooled_projection_dim=2 * CLIP_WIDTH, pos_embed_max_size=16,
    ).save_pretrained(dest / "transformer")
    vocab = byte_vocab()
    for i, suffix in enumerate(("", "_2")):
        _clip(vocab, seed + 1 + i).save_pretrained(dest / f"text_encoder{suffix}")
        CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77).save_pretrained(dest / f"tokenizer{suffix}")
    torch.manual_seed(seed + 3)
    AutoencoderKL(
        sample_size=2 * SAMPLE_SIZE, in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1, norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    ).save_pretrained(dest / "vae")
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).save_pretrained(dest / "scheduler")
    index = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": _diffusers_version(), **COMPONENTS}
    (dest / "model_index.json").write_text(json.dumps(index, indent=2))


def build_tiny_sd3(dest: str | Path, seed: int = 0) -> Path:
    """Write the tiny SD3 folder at `dest` (deterministic for a seed) and return it."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_tiny_sd3(tmp, seed)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
