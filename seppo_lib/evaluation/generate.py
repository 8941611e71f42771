"""Sampling for evaluation: the same prompts and seeds for every model compared.

Sample (prompt i, image j) uses seed `sample_seed(eval.seed, 0, i * images_per_prompt + j)`,
so a candidate and its champion are compared on identical initial noise. Sampler settings come
from `cfg.sampling`; the model is loaded once, sampled in batches and freed before returning.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from seppo_lib.config import SeppoConfig
from seppo_lib.errors import ModelError
from seppo_lib.models import DiffusionModel, load_model
from seppo_lib.sampling import sample_latents, sample_seed

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class EvalSample:
    """One evaluation image: which prompt, which of its images, and its sampling seed."""

    prompt_index: int
    prompt: str
    sample: int
    seed: int


def eval_plan(prompts: list[str], images_per_prompt: int, base_seed: int) -> list[EvalSample]:
    """Every (prompt, image) pair in prompt-major order with its seed."""
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    return [
        EvalSample(i, prompt, j, sample_seed(base_seed, 0, i * images_per_prompt + j))
        for i, prompt in enumerate(prompts)
        for j in range(images_per_prompt)
    ]


def to_pil(pixels: Tensor) -> list[Image.Image]:
    """(B, 3, H, W) pixels in [0, 1] -> RGB PIL images."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) pixels, got shape {tuple(pixels.shape)}")
    arrays = (pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a), mode="RGB") for a in arrays]


def generate_images(
    model: DiffusionModel,
    cfg: SeppoConfig,
    plan: list[EvalSample],
    on_batch: Callable[[int], None] | None = None,
) -> list[Image.Image]:
    """One image per plan entry, sampled with `cfg.sampling` at `cfg.data.resolution`."""
    if model.is_video:
        raise ModelError(f"{model.source} is a video model; sample it with seppo_lib.evaluation.video_eval.generate_clips")
    s = cfg.sampling
    shape = model.latent_shape(cfg.data.resolution)
    res, tokens = cfg.data.resolution, cfg.data.max_caption_tokens
    uncond = model.condition([""], tokens, res)
    images: list[Image.Image] = []
    for start in range(0, len(plan), s.batch_size):
        chunk = plan[start : start + s.batch_size]
        cond = model.condition([e.prompt for e in chunk], tokens, res)
        latents = sample_latents(
            model.unet,
            model.noise_scheduler.config,
            cond,
            uncond,
            [e.seed for e in chunk],
            shape,
            scheduler=s.scheduler,
            steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale,
            eta=s.eta,
            batch_size=s.batch_size,
        )
        device = next(model.unet.parameters()).device
        images.extend(to_pil(model.decode_latents(latents.to(device))))
        if on_batch:
            on_batch(len(chunk))
    return images


def sample_model(
    uri: str,
    folder: str,
    cfg: SeppoConfig,
    plan: list[EvalSample],
    device: torch.device | str,
    on_batch: Callable[[int], None] | None = None,
    generate: Callable[[DiffusionModel, SeppoConfig, list[EvalSample], Callable[[int], None] | None], T] = generate_images,  # type: ignore[assignment]
) -> T:
    """Load the model in `folder` (shown as `uri`), sample `plan` with `generate`, and free the model."""
    logger.info("sampling %d evaluation samples from %s", len(plan), uri)
    model = load_model(folder, cfg.bank.cache_dir).to(device)
    model.source = uri
    model.unet.eval()
    try:
        return generate(model, cfg, plan, on_batch)
    finally:
        del model
        if torch.device(device).type == "cuda":  # hand the memory back before the next model loads
            gc.collect()
            torch.cuda.empty_cache()
