"""Diffusion training helpers: shared (t, eps) draws, targets and per-sample errors.

Noise schedules always come from the diffusers scheduler through the model family's noise process
(families/base.py `NoiseProcess`, DDPM's in families/sd.py: `add_noise`, `get_velocity`); nothing
here re-implements one. The denoiser forward is the family's `denoise`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from seppo_lib.families import Conditioning, ModelFamily, NoiseProcess, family_for, noise_for
from seppo_lib.families.sd import ddpm_timestep


@dataclass(frozen=True)
class NoiseDraw:
    """One (t, eps) draw per pair, shared by the winner and its partner."""

    timesteps: Tensor  # (B,) long
    noise: Tensor  # like the latents


def slot_seed(run_seed: int, round_idx: int, slot: int) -> int:
    """A 63-bit seed for training slot `slot` of round `round_idx`.

    The slot is the global sample index within the round (update u trains slots
    [u·B_eff, (u+1)·B_eff)), so a sample's draws depend on (run seed, round, update, global
    index) and never on which process or micro-batch trains it.
    """
    digest = hashlib.sha256(f"seppo-train:{run_seed}:{round_idx}:{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class SlotDraws:
    """The random choices of a batch of training samples, one generator per sample."""

    drop: Tensor  # (B,) bool: caption replaced by the unconditional embedding
    flip: Tensor  # (B,) bool: horizontal flip of winner and partner
    noise: NoiseDraw


def slot_draws(
    seeds: Sequence[int], latent_shape: tuple[int, ...], num_train_timesteps: int, caption_dropout: float, flip_prob: float,
    draw_timestep: Callable[[torch.Generator], Tensor] | None = None,
) -> SlotDraws:  # fmt: skip
    """Per-sample dropout, flip, t and eps ~ N(0, I), each sample from its own seed (on CPU), in that order.

    t ~ U{0..T-1} (DDPM), or `draw_timestep(generator)` (a family's noise process, e.g. flow matching)."""
    drop, flip, t, eps = [], [], [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        drop.append(torch.rand((), generator=g) < caption_dropout)
        flip.append(torch.rand((), generator=g) < flip_prob)
        t.append(draw_timestep(g) if draw_timestep is not None else ddpm_timestep(g, num_train_timesteps))
        eps.append(torch.randn(latent_shape, generator=g))
    return SlotDraws(drop=torch.stack(drop), flip=torch.stack(flip), noise=NoiseDraw(torch.stack(t), torch.stack(eps)))


def per_sample_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean of (target - pred)^2 over every non-batch dim (4-D images, 5-D video)."""
    return (target.float() - pred.float()).pow(2).flatten(1).mean(dim=1)


@dataclass(frozen=True)
class PairBatch:
    """A batch of pairs in one tensor: rows [0, B) winners, [B, 2B) partners."""

    noisy: Tensor  # (2B, ...)
    timesteps: Tensor  # (2B,)
    target: Tensor  # (2B, ...)
    cond: Conditioning  # (2B, ...) rows

    @property
    def half(self) -> int:
        return self.noisy.shape[0] // 2


def make_pair_batch(scheduler, x_w: Tensor, x_p: Tensor | None, cond: Tensor | Conditioning, draw: NoiseDraw,  # type: ignore[no-untyped-def]
                    noise: NoiseProcess | None = None) -> PairBatch:  # fmt: skip
    """Noise winners (and partners, when given) with the SAME (t, eps) and stack them.

    With `x_p=None` (SFT) the batch holds the winners only. `noise`: the process (default: the
    scheduler's, by its class).
    """
    noise = noise or noise_for(scheduler)
    x0 = x_w if x_p is None else torch.cat([x_w, x_p])
    reps = 1 if x_p is None else 2
    t = draw.timesteps.repeat(reps)
    eps = draw.noise.repeat(reps, *([1] * (draw.noise.dim() - 1)))
    noisy = noise.add_noise(scheduler, x0, eps, t)
    target = noise.target(scheduler, x0, eps, t)
    return PairBatch(noisy=noisy, timesteps=t, target=target, cond=Conditioning.of(cond).repeat(reps))


def model_errors(unet: torch.nn.Module, batch: PairBatch, family: ModelFamily | None = None) -> Tensor:
    """Per-sample errors of one batched forward over winners and partners (the denoiser's family's forward)."""
    pred = (family or family_for(unet)).denoise(unet, batch.noisy, batch.timesteps, batch.cond)
    return per_sample_mse(pred, batch.target)


def speed_up(unet: torch.nn.Module, *, channels_last: bool = False, compile: bool = False) -> torch.nn.Module:
    """`unet` itself, optionally with its 2-D convolution weights in channels-last memory format and its
    forward compiled in place (`nn.Module.compile`: the class, attributes and state_dict keys stay
    the same, so saving, DDP and in-place weight swaps work unchanged) for static shapes (a new batch
    shape compiles once more; inductor's dynamic-shape path failed on these UNets). Only 4-D tensors
    change layout; the 5-D weights of 3-D (video) convolutions keep theirs."""
    if channels_last:
        for tensor in (*unet.parameters(), *unet.buffers()):
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    if compile:
        unet.compile(dynamic=False)
    return unet
