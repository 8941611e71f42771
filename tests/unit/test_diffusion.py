"""Diffusion helpers: shared (t, eps), targets through the scheduler, per-sample errors."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from seppo_lib.diffusion import NoiseDraw, make_pair_batch, per_sample_mse, slot_draws, slot_seed
from seppo_lib.families import noise_for


def _sched(kind: str) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, prediction_type=kind)


def test_pair_shares_t_and_eps() -> None:
    sched = _sched("epsilon")
    x_w, x_p = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    draw = slot_draws([1, 2, 3], (4, 8, 8), 1000, 0.0, 0.0).noise
    batch = make_pair_batch(sched, x_w, x_p, torch.randn(3, 5, 16), draw)
    assert torch.equal(batch.timesteps[:3], batch.timesteps[3:])
    assert torch.equal(batch.target[:3], batch.target[3:])  # eps target: same noise
    assert torch.allclose(batch.noisy[:3], sched.add_noise(x_w, draw.noise, draw.timesteps))
    assert torch.allclose(batch.noisy[3:], sched.add_noise(x_p, draw.noise, draw.timesteps))


def test_v_prediction_target_uses_scheduler() -> None:
    sched = _sched("v_prediction")
    x0, eps, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([10, 900])
    assert torch.allclose(noise_for(sched).target(sched, x0, eps, t), sched.get_velocity(x0, eps, t))


def test_unknown_prediction_type_raises() -> None:
    with pytest.raises(ValueError, match="unsupported prediction_type 'sample'"):
        sched = _sched("sample")
        noise_for(sched).target(sched, torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))


def test_per_sample_mse_4d_and_5d() -> None:
    """Sample 0 error 1 everywhere -> 1; sample 1 error 2 on half of the entries -> 4 * 0.5 = 2."""
    for shape in [(2, 3, 4, 4), (2, 3, 5, 4, 4)]:
        target = torch.zeros(shape)
        pred = torch.zeros(shape)
        pred[0] = 1.0
        pred[1].view(-1)[: pred[1].numel() // 2] = 2.0
        assert per_sample_mse(pred, target).tolist() == [1.0, 2.0]


def test_slot_draws_depend_on_the_slot_only() -> None:
    """A sample's (drop, flip, t, eps) come from its own seed: the same whatever batch it is in."""
    seeds = [slot_seed(0, 1, j) for j in range(6)]
    whole = slot_draws(seeds, (3, 2, 2), 1000, 0.5, 0.5)
    halves = [slot_draws(seeds[:2], (3, 2, 2), 1000, 0.5, 0.5), slot_draws(seeds[2:], (3, 2, 2), 1000, 0.5, 0.5)]
    assert isinstance(whole.noise, NoiseDraw)
    assert torch.equal(whole.noise.noise, torch.cat([h.noise.noise for h in halves]))
    assert torch.equal(whole.noise.timesteps, torch.cat([h.noise.timesteps for h in halves]))
    assert torch.equal(whole.drop, torch.cat([h.drop for h in halves])) and torch.equal(whole.flip, torch.cat([h.flip for h in halves]))
    assert len({slot_seed(0, 1, 0), slot_seed(0, 2, 0), slot_seed(1, 1, 0), slot_seed(0, 1, 1)}) == 4
    assert not torch.equal(whole.noise.noise[0], whole.noise.noise[1])
