"""Flow-matching draws, x_t, velocity targets and the SePPO/DPO losses on velocity errors (hand-computed)."""

from __future__ import annotations

import math

import pytest
import torch

from seppo_lib.diffusion import SlotDraws, per_sample_mse, slot_draws
from seppo_lib.flow_matching import TimestepDensity, draw_timestep, noisy_sample, timestep_for_u, velocity_target
from seppo_lib.losses import dpo_loss, seppo_terms


def flow_draws(seeds: list[int], shape: tuple[int, ...], sched, drop: float, flip: float,  # type: ignore[no-untyped-def]
               density: TimestepDensity = TimestepDensity()) -> SlotDraws:  # fmt: skip
    """The trainer's path: `diffusion.slot_draws` with the flow-matching timestep draw as its hook."""
    return slot_draws(seeds, shape, sched.config.num_train_timesteps, drop, flip, lambda g: draw_timestep(sched, g, density))


T = torch.tensor


def training_scheduler(scheduler_config: dict):  # type: ignore[no-untyped-def,type-arg]
    """A fresh FlowMatchEulerDiscreteScheduler on its training grid (never `set_timesteps`)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)


def sigmas_for(scheduler, timesteps: torch.Tensor, n_dim: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """σ of each training timestep, shaped to broadcast over `n_dim`-D samples (the `get_sigmas` lookup)."""
    schedule = scheduler.timesteps.to(timesteps.device)
    indices = [int((schedule == t).nonzero().flatten()[0]) for t in timesteps]
    sigma = scheduler.sigmas.to(timesteps.device)[indices]
    return sigma.reshape(-1, *([1] * (n_dim - 1)))


def test_timestep_grid_uses_the_scheduler_shift() -> None:
    """T = 1000, u = 0.25 -> index 250 of the descending grid: shift 1 gives σ = 750/1000 = 0.75 (t = 750);
    shift 3 gives σ = 3·0.75 / (1 + 2·0.75) = 2.25 / 2.5 = 0.9 (t = 900)."""
    plain, shifted = training_scheduler({"shift": 1.0}), training_scheduler({"shift": 3.0})
    assert timestep_for_u(plain, T([0.25])).tolist() == pytest.approx([750.0])
    assert timestep_for_u(shifted, T([0.25])).tolist() == pytest.approx([900.0])
    assert sigmas_for(shifted, timestep_for_u(shifted, T([0.25])), 1).tolist() == pytest.approx([0.9])


def test_velocity_errors_and_losses_by_hand() -> None:
    """One pair at u = 0.25 (σ = 0.75, shift 1), ε = [0.5, 1]; winner x_w = [1, -2], partner x_r = [0, 2].

    x_t(w) = 0.25·[1, -2] + 0.75·[0.5, 1] = [0.625, 0.25];   v(w) = ε - x_w = [-0.5, 3]
    x_t(r) = 0.25·[0, 2]  + 0.75·[0.5, 1] = [0.375, 1.25];   v(r) = ε - x_r = [0.5, -1]
    e = mean((v - v_pred)²):
      policy on w  v_pred [0, 1]     -> (0.25 + 4)/2 = 2.125     ref on w  [-0.5, 2] -> (0 + 1)/2 = 0.5
      policy on r  v_pred [0.5, 0]   -> (0 + 1)/2    = 0.5       ref on r  [0.5, 1]  -> (0 + 4)/2 = 2.0
    Δ(w) = 2.125 - 0.5 = 1.625, Δ(r) = 0.5 - 2.0 = -1.5, β = 1, ℓ(z) = log(1 + e^{-z}):
      dpo / seppo none:  z = -(Δw - Δr)   = -3.125 -> log(1 + e^3.125) = 3.167999
      seppo sign: e_θ(w) = 2.125 > e_ref(w) = 0.5 so s = -1: z = -(Δw + Δr) = -0.125 -> log(1 + e^0.125) = 0.757599
      seppo indicator: s = 0: z = -Δw = -1.625 -> log(1 + e^1.625) = 1.804745
    """
    sched = training_scheduler({"shift": 1.0})
    t = timestep_for_u(sched, T([0.25, 0.25]))
    x0, eps = T([[1.0, -2.0], [0.0, 2.0]]), T([[0.5, 1.0], [0.5, 1.0]])
    assert torch.allclose(noisy_sample(sched, x0, eps, t), T([[0.625, 0.25], [0.375, 1.25]]))
    v = velocity_target(x0, eps)
    assert v.tolist() == [[-0.5, 3.0], [0.5, -1.0]]
    policy = per_sample_mse(T([[0.0, 1.0], [0.5, 0.0]]), v)
    ref = per_sample_mse(T([[-0.5, 2.0], [0.5, 1.0]]), v)
    assert policy.tolist() == [2.125, 0.5] and ref.tolist() == [0.5, 2.0]
    args = (policy[:1], ref[:1], policy[1:], ref[1:])
    assert dpo_loss(*args, beta=1.0).item() == pytest.approx(math.log(1 + math.exp(3.125)), abs=1e-6)
    assert dpo_loss(*args, beta=1.0).item() == pytest.approx(3.167999, abs=1e-6)
    sign = seppo_terms(*args, beta=1.0, criterion="sign")
    assert sign.s.tolist() == [-1.0] and sign.loss.item() == pytest.approx(0.757599, abs=1e-6)
    assert seppo_terms(*args, beta=1.0, criterion="indicator").loss.item() == pytest.approx(1.804745, abs=1e-6)
    assert seppo_terms(*args, beta=1.0, criterion="none").loss.item() == pytest.approx(3.167999, abs=1e-6)


def test_noisy_sample_is_the_straight_path_at_every_drawn_sigma() -> None:
    sched = training_scheduler({"shift": 3.0})
    draws = flow_draws(list(range(8)), (2, 3, 3), sched, 0.0, 0.0)
    x0 = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    sigma = sigmas_for(sched, draws.noise.timesteps, 4)
    expected = (1 - sigma) * x0 + sigma * draws.noise.noise
    assert torch.allclose(noisy_sample(sched, x0, draws.noise.noise, draws.noise.timesteps), expected, atol=1e-6)
    assert torch.equal(sigma.flatten() * 1000, draws.noise.timesteps)


def test_draws_are_per_sample_and_on_the_training_grid() -> None:
    """A sample's draws depend only on its own seed, never on its batch neighbours."""
    sched = training_scheduler({"shift": 3.0})
    both = flow_draws([11, 12], (4,), sched, 0.5, 0.5)
    alone = flow_draws([12], (4,), sched, 0.5, 0.5)
    assert torch.equal(both.noise.timesteps[1:], alone.noise.timesteps)
    assert torch.equal(both.noise.noise[1:], alone.noise.noise)
    assert torch.equal(both.drop[1:], alone.drop) and torch.equal(both.flip[1:], alone.flip)
    assert all(bool((sched.timesteps == t).any()) for t in both.noise.timesteps)
    assert both.noise.timesteps.dtype == torch.float32


def test_logit_normal_density_centres_sigma_at_the_shifted_half() -> None:
    """u ~ sigmoid(N(0, 1)) has median 0.5: σ's median is 0.5 unshifted and 3·0.5/(1 + 2·0.5) = 0.75 at shift 3;
    the 'uniform' scheme has about 1/4 of its σ below 0.25 where logit-normal has P(N < logit 0.25 = -1.0986) = 0.136."""
    seeds = list(range(2000))
    for shift, median in ((1.0, 0.5), (3.0, 0.75)):
        sched = training_scheduler({"shift": shift})
        sigma = flow_draws(seeds, (1,), sched, 0.0, 0.0).noise.timesteps / 1000
        assert sigma.median().item() == pytest.approx(median, abs=0.03)
    plain = training_scheduler({"shift": 1.0})
    logit = flow_draws(seeds, (1,), plain, 0.0, 0.0).noise.timesteps / 1000
    uniform = flow_draws(seeds, (1,), plain, 0.0, 0.0, TimestepDensity(weighting_scheme="none")).noise.timesteps / 1000
    assert (logit < 0.25).float().mean().item() == pytest.approx(0.136, abs=0.025)
    assert (uniform < 0.25).float().mean().item() == pytest.approx(0.25, abs=0.03)
