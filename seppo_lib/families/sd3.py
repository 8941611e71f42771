"""The Stable Diffusion 3 / 3.5 family: an SD3Transformer2DModel trained by flow matching.

Noise process (seppo_lib/flow_matching.py, docs/families.md): x_t = (1 - σ)·x0 + σ·ε on the
FlowMatchEulerDiscreteScheduler's training grid, logit-normal timesteps, velocity target ε - x0.

Conditioning (diffusers' StableDiffusion3Pipeline.encode_prompt with clip_skip=None):
    hidden = concat(CLIP-L hidden_states[-2], CLIP-G hidden_states[-2]) on the feature axis, zero-padded to
             the transformer's joint_attention_dim, followed on the token axis by the T5 last hidden state
             (`T5_TOKENS` tokens) or, with no text_encoder_3, by `T5_TOKENS` zero rows, as the pipeline does;
    pooled = concat(CLIP-L text_embeds, CLIP-G text_embeds), (B, P).
The denoiser takes `hidden_states, timestep (B,), encoder_hidden_states=hidden, pooled_projections=pooled`.
Sampling is FlowMatchEulerDiscreteScheduler (`sampling.scheduler: euler`) with classifier-free guidance on
the velocity; no initial-noise scale, no input scaling. An exported model folder loads with
`StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)` when it has no T5.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seppo_lib import flow_matching
from seppo_lib.errors import ModelError
from seppo_lib.families.base import Conditioning, ModelFamily, NoiseProcess, register_family, register_noise
from seppo_lib.families.sdxl import NO_COMPONENT, clip_pair_states, load_clip_pair, load_transformers_part

T5_TOKENS = 256  # StableDiffusion3Pipeline's default max_sequence_length
FLOW_SAMPLERS = {"euler": "FlowMatchEulerDiscreteScheduler"}


class FlowMatchNoise(NoiseProcess):
    """FlowMatchEulerDiscreteScheduler's training process (seppo_lib/flow_matching.py)."""

    name = "flow_matching"
    scheduler_class = "FlowMatchEulerDiscreteScheduler"

    def draw_timestep(self, generator: torch.Generator, scheduler: Any) -> Tensor:
        return flow_matching.draw_timestep(scheduler, generator)

    def add_noise(self, scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return flow_matching.noisy_sample(scheduler, x0, noise, timesteps)

    def target(self, scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return flow_matching.velocity_target(x0, noise)


class SD3Family(ModelFamily):
    name = "sd3"
    denoiser_folder = "transformer"
    denoiser_classes = ("SD3Transformer2DModel",)
    frozen_parts = ("scheduler", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3", "vae")
    text_parts = ("text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3")
    optional_parts = ("text_encoder_3", "tokenizer_3")  # T5: absent, the pipeline uses zeros for its tokens
    noise_scheduler_class = "FlowMatchEulerDiscreteScheduler"
    pipeline_class = "StableDiffusion3Pipeline"
    pipeline_extras = {"image_encoder": NO_COMPONENT, "feature_extractor": NO_COMPONENT}  # noqa: RUF012
    sampler_names = tuple(FLOW_SAMPLERS)

    def accepts(self, denoiser_config: dict[str, Any]) -> bool:
        return denoiser_config.get("_class_name") in self.denoiser_classes

    def load_text(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Both CLIP encoders + tokenizers (required) and T5 (text_encoder_3 + tokenizer_3) when present."""
        from transformers import AutoTokenizer

        parts = load_clip_pair(folder, "an SD3 model")
        if (folder / "text_encoder_3").is_dir() and (folder / "tokenizer_3").is_dir():
            parts["text_encoder_3"] = load_transformers_part(folder / "text_encoder_3")
            parts["tokenizer_3"] = AutoTokenizer.from_pretrained(folder / "tokenizer_3")
        return parts

    @torch.no_grad()
    def encode_prompts(self, model: Any, prompts: list[str], max_length: int, resolution: int | None = None) -> Conditioning:
        """{"hidden", "pooled"} by the rule in the module docstring (CLIP prompts padded to `max_length` tokens)."""
        states = clip_pair_states(model, prompts, max_length, "SD3")
        bad = [name for name, (_, out) in zip(("text_encoder", "text_encoder_2"), states, strict=True) if out.ndim != 2]
        if bad:
            raise ModelError(f"{model.source}: {bad[0]} gives no pooled (projected) embedding; SD3 needs CLIPTextModelWithProjection")
        hidden, pooled = [h for h, _ in states], [out for _, out in states]
        clip = torch.cat(hidden, dim=-1)
        t5 = self._t5_hidden(model.parts, prompts, int(model.denoiser.config.joint_attention_dim), clip)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return Conditioning({"hidden": torch.cat([clip, t5], dim=-2).float(), "pooled": torch.cat(pooled, dim=-1).float()})

    @staticmethod
    def _t5_hidden(parts: Mapping[str, Any], prompts: list[str], joint_dim: int, like: Tensor) -> Tensor:
        encoder, tokenizer = parts.get("text_encoder_3"), parts.get("tokenizer_3")
        if encoder is None or tokenizer is None:
            return torch.zeros(len(prompts), T5_TOKENS, joint_dim, device=like.device, dtype=like.dtype)
        ids = tokenizer(
            prompts, padding="max_length", max_length=T5_TOKENS, truncation=True, add_special_tokens=True, return_tensors="pt"
        ).input_ids
        return encoder(ids.to(next(encoder.parameters()).device))[0].to(like.dtype)

    def denoise(self, denoiser: torch.nn.Module, noisy: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        t = timesteps.expand(noisy.shape[0]) if timesteps.dim() == 0 else timesteps
        return denoiser(
            hidden_states=noisy, timestep=t, encoder_hidden_states=cond.hidden, pooled_projections=cond["pooled"], return_dict=False
        )[0]

    def sampling_scheduler(self, name: str, scheduler_config: Mapping[str, Any]) -> Any:
        import diffusers

        if name not in FLOW_SAMPLERS:
            raise ValueError(f"unknown sampler {name!r} for {self.name} models; allowed: {', '.join(FLOW_SAMPLERS)}")
        return getattr(diffusers, FLOW_SAMPLERS[name]).from_config(scheduler_config)

    def init_noise_sigma(self, scheduler: Any) -> float:
        return 1.0

    def scale_model_input(self, scheduler: Any, sample: Tensor, t: Tensor) -> Tensor:
        return sample


FLOW = register_noise(FlowMatchNoise())
SD3 = register_family(SD3Family())
