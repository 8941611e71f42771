"""Reference sampling: a diffusers scheduler loop over precomputed text embeddings.

Each sample's initial noise (and any sampler noise) comes from its own generator seeded
by `sample_seed(run_seed, round, index)`, so a sample is the same whichever worker or
batch size produces it. The output is the final latent (no VAE round trip).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor

from seppo_lib.config import SamplingConfig
from seppo_lib.diffusion import speed_up, unet_condition

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
}


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


def make_scheduler(name: str, noise_scheduler_config: dict) -> object:  # type: ignore[type-arg]
    """A fresh sampling scheduler of kind `name` built from the model's noise schedule."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name]).from_config(noise_scheduler_config)


def initial_noise(seeds: list[int], shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """One N(0, I) draw per seed, stacked (B, *shape); always drawn on CPU for portability."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)


def _step_kwargs(name: str, eta: float, generators: list[torch.Generator]) -> dict:  # type: ignore[type-arg]
    kwargs: dict = {"generator": generators}  # type: ignore[type-arg]
    if name == "ddim":
        kwargs["eta"] = eta
    return kwargs


@torch.no_grad()
def sample_latents(
    unet: torch.nn.Module,
    noise_scheduler_config: dict,  # type: ignore[type-arg]
    cond: Tensor,
    uncond: Tensor,
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

    cond: (N, L, D) text embeddings; uncond: (1, L, D) embedding of "".
    Returns (N, *latent_shape) float32 on CPU.
    """
    if cond.shape[0] != len(seeds):
        raise ValueError(f"{cond.shape[0]} conditions but {len(seeds)} seeds")
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    out = []
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        c = cond[start : start + len(chunk)].to(device, dtype)
        out.append(
            _sample_chunk(unet, noise_scheduler_config, c, uncond.to(device, dtype), chunk, latent_shape, scheduler, steps, guidance_scale, eta)
        )
        if on_batch:
            on_batch(len(chunk))
    return torch.cat(out).float().cpu()


def _sample_chunk(
    unet: torch.nn.Module,
    config: dict,  # type: ignore[type-arg]
    cond: Tensor,
    uncond: Tensor,
    seeds: list[int],
    latent_shape: tuple[int, ...],
    name: str,
    steps: int,
    guidance_scale: float,
    eta: float,
) -> Tensor:
    sched = make_scheduler(name, config)
    sched.set_timesteps(steps, device=cond.device)  # type: ignore[attr-defined]
    generators = [torch.Generator().manual_seed(s + 1) for s in seeds]  # sampler noise, distinct from init noise
    latents = initial_noise(seeds, latent_shape, cond.device).to(cond.dtype) * sched.init_noise_sigma  # type: ignore[attr-defined]
    use_cfg = guidance_scale != 1.0
    context = torch.cat([uncond.expand(len(seeds), -1, -1), cond]) if use_cfg else cond
    for t in sched.timesteps:  # type: ignore[attr-defined]
        model_in = torch.cat([latents, latents]) if use_cfg else latents
        model_in = sched.scale_model_input(model_in, t)  # type: ignore[attr-defined]
        pred = unet(model_in, t, encoder_hidden_states=unet_condition(unet, context, model_in)).sample
        if use_cfg:
            pred_uncond, pred_cond = pred.chunk(2)
            pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
        latents = sched.step(pred, t, latents, **_step_kwargs(name, eta, generators)).prev_sample  # type: ignore[attr-defined]
    return latents
