"""Reference sampling: a diffusers scheduler loop over precomputed text conditioning, through the
denoiser's model family (its sampling schedulers, denoiser kwargs and step details; families/base.py).

Each sample's initial noise (and any sampler noise) comes from its own generator seeded
by `sample_seed(run_seed, round, index)`, so a sample is the same whichever worker or
batch size produces it. The output is the final latent (no VAE round trip).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seppo_lib.config import SamplingConfig
from seppo_lib.diffusion import speed_up
from seppo_lib.families import Conditioning, ModelFamily, family_for


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # sampling.precision -> dtype


def prepare_sampler(unet: torch.nn.Module, sampling: SamplingConfig, device: torch.device | str) -> torch.nn.Module:
    """`unet` as the reference sampler runs it: on `device`, frozen, in `sampling.precision`, channels-last
    and compiled when configured (the fp32 defaults leave its numerics untouched)."""
    unet = unet.to(device, PRECISIONS[sampling.precision]).requires_grad_(False).eval()
    return speed_up(unet, channels_last=sampling.channels_last, compile=sampling.compile)


def sample_seed(run_seed: int, round_idx: int, index: int) -> int:
    """A 63-bit seed derived from (run seed, round, sample index)."""
    digest = hashlib.sha256(f"seppo-sample:{run_seed}:{round_idx}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def initial_noise(seeds: list[int], shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """One N(0, I) draw per seed, stacked (B, *shape); always drawn on CPU for portability."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)


@torch.no_grad()
def sample_latents(
    unet: torch.nn.Module,
    noise_scheduler_config: dict,  # type: ignore[type-arg]
    cond: Tensor | Conditioning,
    uncond: Tensor | Conditioning,
    seeds: list[int],
    latent_shape: tuple[int, ...],
    *,
    scheduler: str = "ddim",
    steps: int = 20,
    guidance_scale: float = 7.5,
    eta: float = 0.0,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> Tensor:
    """Sample one latent per (cond row, seed) with classifier-free guidance.

    cond: N rows of conditioning ((N, L, D) text embeddings, or a family's Conditioning); uncond: one
    row, the conditioning of "". Returns (N, *latent_shape) float32 on CPU.
    """
    cond, uncond = Conditioning.of(cond), Conditioning.of(uncond)
    if len(cond) != len(seeds):
        raise ValueError(f"{len(cond)} conditions but {len(seeds)} seeds")
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    family = family_for(unet)
    out = []
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        c = cond.rows(slice(start, start + len(chunk))).to(device, dtype)
        loop = _Loop(family, scheduler, steps, guidance_scale, eta)
        out.append(loop.run(unet, noise_scheduler_config, c, uncond.to(device, dtype), chunk, latent_shape))
        if on_batch:
            on_batch(len(chunk))
    return torch.cat(out).float().cpu()


@dataclass(frozen=True)
class _Loop:
    """One chunk's scheduler loop with classifier-free guidance (the step order of families/base.py)."""

    family: ModelFamily
    name: str
    steps: int
    guidance_scale: float
    eta: float

    def run(
        self, unet: torch.nn.Module, config: dict, cond: Conditioning, uncond: Conditioning,  # type: ignore[type-arg]
        seeds: list[int], latent_shape: tuple[int, ...],
    ) -> Tensor:  # fmt: skip
        f = self.family
        device = cond.hidden.device
        sched = f.sampling_scheduler(self.name, config)
        sched.set_timesteps(self.steps, device=device)
        generators = [torch.Generator().manual_seed(s + 1) for s in seeds]  # sampler noise, distinct from init noise
        latents = initial_noise(seeds, latent_shape, device).to(cond.hidden.dtype) * f.init_noise_sigma(sched)
        use_cfg = self.guidance_scale != 1.0
        context = Conditioning.cat([uncond.expand(len(seeds)), cond]) if use_cfg else cond
        for t in sched.timesteps:
            model_in = torch.cat([latents, latents]) if use_cfg else latents
            model_in = f.scale_model_input(sched, model_in, t)
            pred = f.denoise(unet, model_in, t, context)
            if use_cfg:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + self.guidance_scale * (pred_cond - pred_uncond)
            latents = sched.step(pred, t, latents, **f.step_kwargs(self.name, self.eta, generators)).prev_sample
        return latents
