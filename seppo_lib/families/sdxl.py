"""The SDXL family: a UNet2DConditionModel with `addition_embed_type="text_time"` on two CLIP text
encoders, trained as a DDPM (the sd family's noise process).

Conditioning (diffusers' StableDiffusionXLPipeline.encode_prompt with clip_skip=None):
    hidden   = concat(text_encoder(ids).hidden_states[-2], text_encoder_2(ids_2).hidden_states[-2]) on the
               feature axis, (B, L, D1 + D2);
    pooled   = text_encoder_2(ids_2)[0], the projected `text_embeds` of CLIPTextModelWithProjection, (B, P);
    time_ids = original size + crop top-left + target size = (R, R, 0, 0, R, R) for resolution R, (B, 6)
               (train_diffusion_dpo_sdxl.py's compute_time_ids with no random crop).
The denoiser takes them as `encoder_hidden_states=hidden, added_cond_kwargs={"text_embeds": pooled,
"time_ids": time_ids}`. The unconditional row is the encoding of "" like every family's (seppo's caption
dropout trains on it), so the exported pipeline sets `force_zeros_for_empty_prompt` false to match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seppo_lib.errors import ModelError
from seppo_lib.families.base import Conditioning, read_json, register_family, require_safetensors
from seppo_lib.families.sd import NO_COMPONENT, SDFamily, tokenize


def load_transformers_part(folder: Path) -> torch.nn.Module:
    """A transformers model folder loaded with the class its config.json names (architectures[0])."""
    import transformers

    arch = (read_json(folder / "config.json").get("architectures") or [""])[0]
    if not hasattr(transformers, arch):
        raise ModelError(f"{folder} names no known transformers class (architectures={arch!r})")
    require_safetensors(folder, "text encoder")
    return getattr(transformers, arch).from_pretrained(folder, use_safetensors=True)


def time_ids(resolution: int, n: int) -> Tensor:
    """(n, 6) SDXL micro-conditioning: original (R, R), crop (0, 0), target (R, R)."""
    return torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32).repeat(n, 1)


CLIP_PAIR = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")  # SDXL's and SD3's two CLIP encoders


def load_clip_pair(folder: Path, what: str) -> dict[str, Any]:
    """text_encoder/, text_encoder_2/ (their config's transformers class) and tokenizer/, tokenizer_2/ of `folder`."""
    from transformers import AutoTokenizer

    missing = [p for p in CLIP_PAIR if not (folder / p).is_dir()]
    if missing:
        raise ModelError(f"{folder} is {what} but lacks {', '.join(missing)}")
    return {
        "text_encoder": load_transformers_part(folder / "text_encoder"),
        "text_encoder_2": load_transformers_part(folder / "text_encoder_2"),
        "tokenizer": AutoTokenizer.from_pretrained(folder / "tokenizer"),
        "tokenizer_2": AutoTokenizer.from_pretrained(folder / "tokenizer_2"),
    }


def clip_pair_states(model: Any, prompts: list[str], max_length: int, family: str) -> list[tuple[Tensor, Tensor]]:
    """(penultimate hidden states, first output) of text_encoder and text_encoder_2 on `prompts` padded to
    `max_length` tokens; the first output is the projected pooled embedding of a CLIPTextModelWithProjection."""
    if any(model.parts.get(p) is None for p in CLIP_PAIR):
        raise ModelError(f"{model.source} has no CLIP text encoders/tokenizers ({family} needs {', '.join(CLIP_PAIR)})")
    states = []
    for enc_name, tok_name in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        encoder = model.parts[enc_name]
        ids = tokenize(model.parts[tok_name], prompts, max_length).to(next(encoder.parameters()).device)
        out = encoder(input_ids=ids, output_hidden_states=True)
        states.append((out.hidden_states[-2], out[0]))
    return states


class SDXLFamily(SDFamily):
    name = "sdxl"
    denoiser_classes = ("UNet2DConditionModel",)
    frozen_parts = ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae")
    text_parts = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    pipeline_class = "StableDiffusionXLPipeline"
    pipeline_extras = {"feature_extractor": NO_COMPONENT, "image_encoder": NO_COMPONENT, "force_zeros_for_empty_prompt": False}

    def accepts(self, denoiser_config: dict[str, Any]) -> bool:
        return denoiser_config.get("_class_name") in self.denoiser_classes and denoiser_config.get("addition_embed_type") == "text_time"

    def load_text(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return load_clip_pair(folder, "an SDXL model")

    @torch.no_grad()
    def encode_prompts(self, model: Any, prompts: list[str], max_length: int, resolution: int | None = None) -> Conditioning:
        """{"hidden", "pooled", "time_ids"} by the rule in the module docstring; `resolution` defaults to
        the UNet's sample_size times the VAE factor (1024 for SDXL base)."""
        states = clip_pair_states(model, prompts, max_length, "SDXL")
        pooled = next((out for _, out in states if out.ndim == 2), None)  # the first projected output, as diffusers
        if pooled is None:
            raise ModelError(f"{model.source}: text_encoder_2 gives no pooled (projected) embedding; SDXL needs a CLIPTextModelWithProjection")
        hidden = [h for h, _ in states]
        res = resolution or int(model.denoiser.config.sample_size) * model.vae_factor
        return Conditioning({"hidden": torch.cat(hidden, dim=-1).float(), "pooled": pooled.float(), "time_ids": time_ids(res, len(prompts))})

    def denoise(self, denoiser: torch.nn.Module, noisy: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]}
        return denoiser(noisy, timesteps, encoder_hidden_states=cond.hidden, added_cond_kwargs=added).sample


SDXL = register_family(SDXLFamily())
