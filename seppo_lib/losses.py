"""SePPO, Diffusion-DPO, SPIN-Diffusion, Diffusion-KTO and SFT losses as pure functions.

Every input is a per-sample error vector of shape (batch,): `e_m(x)`, the mean over
all non-batch dims of `(target - model_m(x_t, t, c))^2` (ALGORITHM.md). With
`Δ(x) = e_θ(x) - e_ref(x)` and `ℓ(z) = -log σ(z)`:

    sft    e_θ(x_w)
    dpo    ℓ(-β (Δ(x_w) - Δ(x_l)))
    spin   ℓ(-β (Δ(x_w) - Δ(x_r)))                 (= seppo with criterion none)
    seppo  ℓ(-β (Δ(x_w) - s·Δ(x_r)))               s from the anchor criterion
    kto    1 - σ(±(r(x) - z_ref)), r = -β Δ(x)      + desirable, - undesirable (`kto_terms`)

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


@dataclass(frozen=True)
class KtoTerms:
    """Diffusion-KTO per-sample loss plus the quantities the trainer logs."""

    loss: Tensor  # (n,)
    margin: Tensor  # (n,) ±(r - z_ref), no grad: > 0 where the sample sits on its label's side of z_ref
    kl: Tensor  # () z_ref / β = max(0, mean(e_ref - e_θ)), no grad


def kto_terms(policy_err: Tensor, ref_err: Tensor, desirable: Tensor, *, beta: float) -> KtoTerms:
    """Diffusion-KTO (Li et al. 2024, arXiv 2404.04465) on n labelled samples, shape (n,).

    Implicit reward r(x) = -β Δ(x), Δ = e_θ - e_ref; reference point z_ref = β·max(0, mean_n(-Δ)),
    detached (the batch KL estimate); loss 1 - σ(r - z_ref) for a desirable sample, 1 - σ(z_ref - r)
    for an undesirable one. This is the official script's default loss (github.com/jacklishufan/
    diffusion-kto, train_kto_sd_v1.5.py at 226bbd0: `--loss kto --halo sigmoid --bce_offset none`,
    λ_D = λ_U = 1): `g = ref_loss - model_loss`, `kl = mean(g).clamp(min=0).detach()`,
    `1 - sigmoid(label_sgn * beta_dpo * (g - kl))`. Its β multiplies the MSE gap with no 0.5, so
    its `beta_dpo` is β here as written. It all-reduces the KL mean over processes; here the mean
    is over the micro-batch given.

    Example (β=2): e_θ = [1, 1.5, 2, 1.5], e_ref = [2, 1, 2, 2], desirable = [T, T, F, F]:
    Δ = [-1, 0.5, 0, -0.5], mean(-Δ) = 0.25 so z_ref = 0.5; r = [2, -1, 0, 1];
    margins = [2-0.5, -1-0.5, 0.5-0, 0.5-1] = [1.5, -1.5, 0.5, -0.5];
    loss = 1 - σ(margin) = [0.182426, 0.817574, 0.377541, 0.622459]. With every Δ > 0
    (e.g. Δ = [0.5, 1, 1.5, 1], β=1) the mean is -1, clamped: z_ref = 0 and the margins are ±r.
    """
    _check_beta(beta)
    gain = ref_err - policy_err  # -Δ
    kl = gain.mean().detach().clamp(min=0)
    sign = torch.where(desirable, 1.0, -1.0).to(gain.dtype)
    margin = sign * (beta * (gain - kl))
    return KtoTerms(loss=1 - torch.sigmoid(margin), margin=margin.detach(), kl=kl)


def implicit_accuracy(logits: Tensor) -> Tensor:
    """Fraction of samples whose preference logit -(Δ(x_w) - s·Δ(x_p)) is > 0."""
    return (logits.detach() > 0).float().mean()


def flip_rate(s: Tensor) -> Tensor:
    """Fraction of samples whose anchor sign is not +1 (the 'AAF rate')."""
    return (s.detach() != 1).float().mean()
