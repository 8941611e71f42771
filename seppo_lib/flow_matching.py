"""Flow-matching (rectified flow) training draws, noisy samples and velocity targets.

SD3/SD3.5 (and Flux) are trained on the straight path x_t = (1 - σ)·x0 + σ·ε with the
velocity target v = ε - x0 (docs/families.md). Everything schedule-related comes from
diffusers: the training timesteps and sigmas are `FlowMatchEulerDiscreteScheduler.timesteps` /
`.sigmas` of a scheduler that has not run `set_timesteps` (its training grid, shift applied),
x_t is `scheduler.scale_noise`, and the timestep density is
`diffusers.training_utils.compute_density_for_timestep_sampling` (logit-normal, mean 0, std 1,
as SD3 is trained), indexed into the grid exactly as diffusers' `train_dreambooth_lora_sd3.py`
does (`indices = (u * T).long(); timesteps = scheduler.timesteps[indices]`). The trainer draws one
timestep per sample through the family's hook (families/sd3.py `FlowMatchNoise.draw_timestep`), called by
`diffusion.slot_draws` between the flip and the eps draws.

The per-sample error e(x) = mean((ε - x0) - v_θ(x_t, t, c))² is unweighted: with the
logit-normal scheme `compute_loss_weighting_for_sd3` is 1 (the density does the weighting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TimestepDensity:
    """Arguments of `compute_density_for_timestep_sampling` (SD3 defaults: logit-normal(0, 1))."""

    weighting_scheme: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29


def draw_timestep(  # type: ignore[no-untyped-def]
    scheduler, generator: torch.Generator, density: TimestepDensity = TimestepDensity()
) -> Tensor:
    """One training timestep (0-d float) from `generator`: u ~ density, t = scheduler.timesteps[int(u·T)].

    E.g. shift 1, T = 1000, u = 0.25: index 250, t = 750 (σ = 0.75); with shift 3 the same
    index gives σ = 3·0.75 / (1 + 2·0.75) = 0.9, t = 900.
    """
    from diffusers.training_utils import compute_density_for_timestep_sampling

    u = compute_density_for_timestep_sampling(
        weighting_scheme=density.weighting_scheme,
        batch_size=1,
        logit_mean=density.logit_mean,
        logit_std=density.logit_std,
        mode_scale=density.mode_scale,
        generator=generator,
    )
    return timestep_for_u(scheduler, u)[0]


def timestep_for_u(scheduler, u: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """The training timesteps for densities `u` in [0, 1): `scheduler.timesteps[(u · T).long()]`."""
    indices = (u * scheduler.config.num_train_timesteps).long()
    return scheduler.timesteps[indices]


def noisy_sample(scheduler, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """x_t = (1 - σ_t)·x0 + σ_t·ε, computed by `scheduler.scale_noise` on the training grid."""
    return scheduler.scale_noise(x0, timesteps, noise)


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The flow-matching regression target v = ε - x0 (d x_t / dσ along the straight path)."""
    return noise - x0
