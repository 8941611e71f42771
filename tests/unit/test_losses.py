"""Losses and the anchor criterion on hand-computed numbers (ALGORITHM.md tests 1-3)."""

from __future__ import annotations

import math

import pytest
import torch

from seppo_lib.losses import (
    anchor_sign,
    dpo_loss,
    flip_rate,
    implicit_accuracy,
    seppo_loss,
    seppo_terms,
    sft_loss,
)

T = torch.tensor


def test_criterion_none_reduces_to_diffusion_dpo() -> None:
    """pw=[.5,.2] rw=[.4,.3] pl=[.3,.4] rl=[.5,.2], beta=2.

    Δw = [0.1, -0.1], Δl = [-0.2, 0.2], Δw-Δl = [0.3, -0.3], z = -β(Δw-Δl) = [-0.6, 0.6]
    ℓ(z) = log(1 + e^{-z}) = [log(1 + e^0.6), log(1 + e^-0.6)] = [1.037488, 0.437488].
    """
    pw, rw, pl, rl = T([0.5, 0.2]), T([0.4, 0.3]), T([0.3, 0.4]), T([0.5, 0.2])
    expected = T([math.log(1 + math.exp(0.6)), math.log(1 + math.exp(-0.6))])
    assert torch.allclose(dpo_loss(pw, rw, pl, rl, beta=2.0), expected, atol=1e-6)
    assert torch.allclose(seppo_loss(pw, rw, pl, rl, beta=2.0, criterion="none"), expected, atol=1e-6)
    assert torch.allclose(expected, T([1.037488, 0.437488]), atol=1e-6)


def test_beta_is_literal() -> None:
    """Δw-Δl = 0.001, beta=2500 -> z = -2.5, ℓ = log(1 + e^2.5) = 2.578890 (no hidden 0.5)."""
    loss = dpo_loss(T([0.001]), T([0.0]), T([0.0]), T([0.0]), beta=2500.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(2.5)), abs=1e-5)


def test_anchor_sign_values_and_ties() -> None:
    """e_θ(x_w) = [0.1, 0.3, 0.2], e_ref(x_w) = [0.2, 0.2, 0.2]: first fits better, second worse, third ties (+1)."""
    pw, rw = T([0.1, 0.3, 0.2]), T([0.2, 0.2, 0.2])
    assert anchor_sign(pw, rw, "sign").tolist() == [1.0, -1.0, 1.0]
    assert anchor_sign(pw, rw, "indicator").tolist() == [1.0, 0.0, 1.0]
    assert anchor_sign(pw, rw, "sft_mse").tolist() == [1.0, 0.0, 1.0]
    assert anchor_sign(pw, rw, "none").tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown criterion 'bogus'.*sign"):
        anchor_sign(pw, rw, "bogus")


def test_seppo_sign_flips_reference_term() -> None:
    """pw=.3 > rw=.2 so s=-1. pr=.5, rr=.4: Δw=.1, Δr=.1, Δw - sΔr = .2, z=-β·.2=-0.2 (β=1).

    ℓ(-0.2) = log(1 + e^0.2) = 0.798139; with criterion none: Δw-Δr = 0 -> log 2 = 0.693147.
    """
    args = (T([0.3]), T([0.2]), T([0.5]), T([0.4]))
    assert seppo_loss(*args, beta=1.0, criterion="sign").item() == pytest.approx(0.798139, abs=1e-6)
    assert seppo_loss(*args, beta=1.0, criterion="none").item() == pytest.approx(math.log(2), abs=1e-6)
    # indicator: s=0 -> z = -β Δw = -0.1 -> log(1 + e^0.1) = 0.744397
    assert seppo_loss(*args, beta=1.0, criterion="indicator").item() == pytest.approx(0.744397, abs=1e-6)
    # sft_mse: the flipped sample's loss is e_θ(x_w) = 0.3
    assert seppo_loss(*args, beta=1.0, criterion="sft_mse").item() == pytest.approx(0.3, abs=1e-6)


def _grad_wrt_ref_sample(criterion: str, pw: float) -> float:
    policy_err_r = T([0.5], requires_grad=True)
    loss = seppo_loss(T([pw]), T([0.2]), policy_err_r, T([0.4]), beta=1.0, criterion=criterion).sum()
    loss.backward()
    return float(policy_err_r.grad.item())  # type: ignore[union-attr]


def test_sign_semantics_of_gradient_on_reference_sample() -> None:
    """dℓ/d e_θ(x_r) = -(1-σ(z))·β·s: s=+1 -> negative (descent raises the error on x_r),
    s=-1 -> positive (descent lowers it), indicator s=0 -> exactly zero.

    With pw=.1 <= rw=.2 (s=+1): z = -(−0.1 − 0.1) = 0.2, grad = -(1-σ(0.2)) = -0.450166.
    With pw=.3 (s=-1): z = -(0.1 + 0.1) = -0.2, grad = +(1-σ(-0.2)) = +0.549834.
    """
    assert _grad_wrt_ref_sample("sign", 0.1) == pytest.approx(-0.450166, abs=1e-6)
    assert _grad_wrt_ref_sample("sign", 0.3) == pytest.approx(0.549834, abs=1e-6)
    assert _grad_wrt_ref_sample("indicator", 0.3) == 0.0
    assert _grad_wrt_ref_sample("sft_mse", 0.3) == 0.0


def test_criterion_carries_no_gradient() -> None:
    """s is computed under no grad; d loss / d e_θ(x_w) = β(1-σ(z)) with s held constant.

    pw=.3, rw=.2, pr=.5, rr=.4, β=1, sign: z = -0.2, dℓ/dpw = 1-σ(-0.2) = 0.549834.
    """
    pw = T([0.3], requires_grad=True)
    terms = seppo_terms(pw, T([0.2]), T([0.5]), T([0.4]), beta=1.0, criterion="sign")
    assert not terms.s.requires_grad
    assert not anchor_sign(pw, T([0.2]), "sign").requires_grad
    terms.loss.sum().backward()
    assert pw.grad.item() == pytest.approx(0.549834, abs=1e-6)  # type: ignore[union-attr]


def test_sft_and_metrics() -> None:
    """implicit acc of logits [0.5, -0.1, 0.0, 2.0] = 2/4 (0 is not > 0); flip rate of s [1,-1,0,1] = 2/4."""
    assert torch.equal(sft_loss(T([0.1, 0.2])), T([0.1, 0.2]))
    assert implicit_accuracy(T([0.5, -0.1, 0.0, 2.0])).item() == 0.5
    assert flip_rate(T([1.0, -1.0, 0.0, 1.0])).item() == 0.5


def test_beta_must_be_positive() -> None:
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(T([0.1]), T([0.1]), T([0.1]), T([0.1]), beta=0.0)
