"""SePPO, Diffusion-DPO, SPIN-Diffusion and SFT losses as pure functions.

Every input is a per-sample error vector of shape (batch,): `e_m(x)`, the mean over
all non-batch dims of `(target - model_m(x_t, t, c))^2` (ALGORITHM.md). With
`Δ(x) = e_θ(x) - e_ref(x)` and `ℓ(z) = -log σ(z)`:

    sft    e_θ(x_w)
    dpo    ℓ(-β (Δ(x_w) - Δ(x_l)))
    spin   ℓ(-β (Δ(x_w) - Δ(x_r)))                 (= seppo with criterion none)
    seppo  ℓ(-β (Δ(x_w) - s·Δ(x_r)))               s from the anchor criterion

β is literal: no hidden 0.5 factor. All functions return per-sample losses (batch,);
the caller takes the batch mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

CRITERIA = ("sign", "indicator", "sft_mse", "none")


def _check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; allowed: {', '.join(CRITERIA)}")


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def anchor_sign(policy_err_w: Tensor, ref_err_w: Tensor, criterion: str) -> Tensor:
    """Per-sample s of the anchor criterion (no gradient).

    s = +1 where e_θ(x_w) <= e_ref(x_w) (ties count as +1) or criterion is 'none';
    elsewhere s = -1 for 'sign' and 0 for 'indicator' and 'sft_mse' (for 'sft_mse'
    those samples take the MSE branch in `seppo_loss`).
    """
    _check_criterion(criterion)
    policy_err_w, ref_err_w = policy_err_w.detach(), ref_err_w.detach()
    keep = policy_err_w <= ref_err_w
    ones = torch.ones_like(policy_err_w)
    if criterion == "none":
        return ones
    flipped = -ones if criterion == "sign" else torch.zeros_like(policy_err_w)
    return torch.where(keep, ones, flipped)


def preference_logits(
    policy_err_w: Tensor, ref_err_w: Tensor, policy_err_p: Tensor, ref_err_p: Tensor, s: Tensor | float = 1.0
) -> Tensor:
    """-(Δ(x_w) - s·Δ(x_p)): positive when the policy prefers the winner (before β)."""
    return -((policy_err_w - ref_err_w) - s * (policy_err_p - ref_err_p))


def dpo_loss(policy_err_w: Tensor, ref_err_w: Tensor, policy_err_l: Tensor, ref_err_l: Tensor, *, beta: float) -> Tensor:
    """Diffusion-DPO: ℓ(-β (Δ(x_w) - Δ(x_l))), shape (batch,)."""
    _check_beta(beta)
    return -F.logsigmoid(beta * preference_logits(policy_err_w, ref_err_w, policy_err_l, ref_err_l))


def sft_loss(policy_err_w: Tensor) -> Tensor:
    """Supervised fine-tuning on winners: e_θ(x_w), shape (batch,)."""
    return policy_err_w


@dataclass(frozen=True)
class SeppoTerms:
    """Per-sample loss plus the quantities the trainer logs."""

    loss: Tensor  # (batch,)
    s: Tensor  # (batch,) anchor sign, no grad
    logits: Tensor  # (batch,) -(Δ(x_w) - s·Δ(x_r)), no grad


def seppo_terms(
    policy_err_w: Tensor,
    ref_err_w: Tensor,
    policy_err_r: Tensor,
    ref_err_r: Tensor,
    *,
    beta: float,
    criterion: str,
) -> SeppoTerms:
    """SePPO per-sample loss with its anchor signs and preference logits."""
    _check_beta(beta)
    s = anchor_sign(policy_err_w, ref_err_w, criterion)
    logits = preference_logits(policy_err_w, ref_err_w, policy_err_r, ref_err_r, s)
    loss = -F.logsigmoid(beta * logits)
    if criterion == "sft_mse":
        loss = torch.where(s > 0, loss, policy_err_w)
    return SeppoTerms(loss=loss, s=s, logits=logits.detach())


def seppo_loss(
    policy_err_w: Tensor,
    ref_err_w: Tensor,
    policy_err_r: Tensor,
    ref_err_r: Tensor,
    *,
    beta: float,
    criterion: str,
) -> Tensor:
    """SePPO: ℓ(-β (Δ(x_w) - s·Δ(x_r))) per sample, shape (batch,)."""
    return seppo_terms(policy_err_w, ref_err_w, policy_err_r, ref_err_r, beta=beta, criterion=criterion).loss


def implicit_accuracy(logits: Tensor) -> Tensor:
    """Fraction of samples whose preference logit -(Δ(x_w) - s·Δ(x_p)) is > 0."""
    return (logits.detach() > 0).float().mean()


def flip_rate(s: Tensor) -> Tensor:
    """Fraction of samples whose anchor sign is not +1 (the 'AAF rate')."""
    return (s.detach() != 1).float().mean()
