"""The models and workloads of `seppo bench speed`.

- `world`: the shipped `builtin:world-base` (pixel space, 1.6 M-parameter UNet, MiniLM text encoder).
- `tiny-vae`: `builtin:tiny-random:vae` (Stable Diffusion format: a tiny UNet on the latents of a tiny
  AutoencoderKL, a random 2-layer BERT text encoder), so the baseline's VAE round trip is real work.
- `sd15`: the Stable Diffusion 1.5 architecture built from its public configs (`SD15_UNET`, `SD15_VAE`,
  `SD15_TEXT`, `SD15_SCHEDULER`: the `unet/`, `vae/`, `text_encoder/` and `scheduler/` configs of
  `runwayml/stable-diffusion-v1-5`) with random weights, no download. The tokenizer is a byte-level
  CLIP BPE without merges (no vocab file to download); prompts are padded to 77 tokens as SD1.5's are,
  so the text encoder does the same work. On CPU its latents are 8×8 (64 px), on CUDA 64×64 (512 px).

A `Workload` is the same for the project and the baseline: pairs per update, updates per round,
sampler steps, guidance, samples per sampler batch, caption length.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from seppo_lib.errors import ConfigError

logger = logging.getLogger(__name__)

SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "norm_num_groups": 32, "norm_eps": 1e-5,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
    "mid_block_scale_factor": 1,
}  # fmt: skip
SD15_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "act_fn": "silu", "sample_size": 512, "scaling_factor": 0.18215,
}  # fmt: skip
SD15_TEXT: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
    "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}  # fmt: skip
SD15_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Workload:
    resolution: int  # pixels (square)
    batch_size: int  # pairs per update
    updates: int  # U: updates per round
    steps: int  # sampler steps (DDIM, eta 0)
    guidance: float  # classifier-free guidance scale
    sample_batch: int  # samples per sampler call
    caption_tokens: int

    @property
    def pairs(self) -> int:
        """Pairs (and reference samples) per round."""
        return self.batch_size * self.updates

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pairs_per_round": self.pairs}


@dataclass(frozen=True)
class BenchModel:
    name: str
    summary: str
    cpu: Workload
    cpu_quick: Workload
    cuda: Workload
    train_on_cpu: bool = True  # False: the CPU run compares samplers only (the step does not fit in host memory)

    def uri(self, work: Path) -> str:
        if self.name == "world":
            return "builtin:world-base"
        if self.name == "tiny-vae":
            return "builtin:tiny-random:vae"
        return str(build_sd15(work / "models" / "sd15-random"))

    def workload(self, device: str, quick: bool) -> Workload:
        if device.startswith("cuda"):
            return self.cuda
        return self.cpu_quick if quick else self.cpu


MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel("world", "builtin:world-base: pixel-space 1.6 M-parameter UNet, MiniLM text encoder, 32×32 px",
                   cpu=Workload(32, 8, 8, 10, 3.0, 64, 16), cpu_quick=Workload(32, 8, 4, 10, 3.0, 32, 16),
                   cuda=Workload(32, 64, 8, 20, 3.0, 256, 16)),
        BenchModel("tiny-vae", "builtin:tiny-random:vae: tiny SD-format UNet on 4×8×8 VAE latents, 2-layer BERT text encoder",
                   cpu=Workload(16, 4, 8, 4, 3.0, 16, 16), cpu_quick=Workload(16, 4, 4, 4, 3.0, 16, 16),
                   cuda=Workload(16, 16, 8, 20, 3.0, 64, 16)),
        BenchModel("sd15", "SD1.5 architecture from its configs, random weights (860 M-parameter UNet, CLIP-L text encoder, VAE)",
                   cpu=Workload(64, 2, 2, 4, 7.5, 4, 77), cpu_quick=Workload(64, 2, 2, 2, 7.5, 4, 77),
                   cuda=Workload(512, 16, 4, 20, 7.5, 16, 77), train_on_cpu=False),
    )
}  # fmt: skip
QUICK_MODELS = ("world", "tiny-vae")
DEFAULT_MODELS = ("world", "tiny-vae", "sd15")


def parse_models(text: str) -> tuple[str, ...]:
    """Model names from a comma-separated list; `none` = no side-by-side models (only --scaling / --presets)."""
    if text.strip() == "none":
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ConfigError(f"--models {text!r}: unknown or empty {', '.join(unknown)}; choose from {', '.join(MODELS)} or none")
    return names


def _byte_tokenizer(max_length: int) -> Any:
    """A CLIP tokenizer whose vocab is the 256 byte symbols (and their end-of-word forms): no merges, no download."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def build_sd15(dest: Path, seed: int = 0) -> Path:
    """Write the random SD1.5-architecture model folder at `dest` once (unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if (dest / "unet" / "config.json").is_file():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    logger.info("building the random SD1.5-architecture model at %s (about 4.3 GB)", dest)
    PNDMScheduler.from_config(SD15_SCHEDULER).save_pretrained(tmp / "scheduler")  # keeps the keys PNDM takes, as SD1.5's file
    tokenizer = _byte_tokenizer(SD15_TEXT["max_position_embeddings"])
    tokenizer.save_pretrained(tmp / "tokenizer")
    text = CLIPTextConfig(**SD15_TEXT, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    CLIPTextModel(text).save_pretrained(tmp / "text_encoder", safe_serialization=True)
    AutoencoderKL(**SD15_VAE).save_pretrained(tmp / "vae", safe_serialization=True)
    UNet2DConditionModel(**SD15_UNET).save_pretrained(tmp / "unet", safe_serialization=True)
    (tmp / "bench_model.json").write_text(json.dumps({"unet": SD15_UNET, "vae": SD15_VAE, "text": SD15_TEXT}, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
