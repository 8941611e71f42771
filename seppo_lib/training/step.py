"""One micro-batch loss: batched policy forward on winner + partner, reference forward, loss."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from seppo_lib.config import SeppoConfig
from seppo_lib.diffusion import NoiseDraw, make_pair_batch, model_errors
from seppo_lib.losses import dpo_loss, flip_rate, implicit_accuracy, preference_logits, seppo_terms, sft_loss


@dataclass(frozen=True)
class StepInputs:
    x_w: Tensor  # (B, ...) winner latents
    x_p: Tensor | None  # (B, ...) partner: reference sample (spin/seppo) or data loser (dpo)
    cond: Tensor  # (B, L, D) text embeddings after caption dropout
    timesteps: Tensor  # (B,) shared by winner and partner
    noise: Tensor  # (B, ...) shared by winner and partner


@dataclass(frozen=True)
class UpdateMetrics:
    loss: float = 0.0
    implicit_acc: float = 0.0
    flip_rate: float = 0.0
    err_policy_w: float = 0.0
    err_ref_w: float = 0.0
    err_policy_r: float = 0.0
    err_ref_r: float = 0.0

    @classmethod
    def zeros(cls) -> UpdateMetrics:
        return cls()

    def __add__(self, other: UpdateMetrics) -> UpdateMetrics:
        return UpdateMetrics(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, k: float) -> UpdateMetrics:
        return UpdateMetrics(*(getattr(self, f.name) * k for f in fields(self)))

    def as_dict(self, method: str) -> dict[str, float]:
        keep = ("loss", "err_policy_w") if method == "sft" else tuple(f.name for f in fields(self))
        return {k: getattr(self, k) for k in keep}


def compute_loss(
    cfg: SeppoConfig,
    noise_scheduler,  # type: ignore[no-untyped-def]
    unet: torch.nn.Module,
    ref_unet: torch.nn.Module | None,
    inputs: StepInputs,
    device: torch.device,
) -> tuple[Tensor, UpdateMetrics]:
    """Batch-mean loss (with grad) and detached metrics for one micro-batch."""
    method = cfg.train.method
    draw = NoiseDraw(timesteps=inputs.timesteps.to(device), noise=inputs.noise.to(device))
    x_p = inputs.x_p.to(device) if inputs.x_p is not None and method != "sft" else None
    batch = make_pair_batch(noise_scheduler, inputs.x_w.to(device), x_p, inputs.cond.to(device), draw)
    policy_err = model_errors(unet, batch)
    if method == "sft":
        loss = sft_loss(policy_err).mean()
        return loss, UpdateMetrics(loss=loss.item(), err_policy_w=policy_err.mean().item())
    if ref_unet is None or x_p is None:
        raise ValueError(f"method {method} needs a reference model and a partner sample")
    with torch.no_grad():
        ref_err = model_errors(ref_unet, batch)
    b = batch.half
    pw, pp, rw, rp = policy_err[:b], policy_err[b:], ref_err[:b], ref_err[b:]
    if method == "dpo":
        per_sample = dpo_loss(pw, rw, pp, rp, beta=cfg.train.beta)
        s = torch.ones_like(pw)
        logits = preference_logits(pw, rw, pp, rp).detach()
    else:
        criterion = "none" if method == "spin" else cfg.train.criterion
        terms = seppo_terms(pw, rw, pp, rp, beta=cfg.train.beta, criterion=criterion)
        per_sample, s, logits = terms.loss, terms.s, terms.logits
    loss = per_sample.mean()
    return loss, UpdateMetrics(
        loss=loss.item(),
        implicit_acc=implicit_accuracy(logits).item(),
        flip_rate=flip_rate(s).item(),
        err_policy_w=pw.mean().item(),
        err_ref_w=rw.mean().item(),
        err_policy_r=pp.mean().item(),
        err_ref_r=rp.mean().item(),
    )
