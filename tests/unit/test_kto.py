"""Diffusion-KTO's loss on hand-computed numbers (the arithmetic is in `kto_terms`' docstring)."""

from __future__ import annotations

import pytest
import torch

from seppo_lib.config import load_config
from seppo_lib.losses import kto_terms
from seppo_lib.methods import StepErrors, method_spec

T = torch.tensor
DESIRABLE = T([True, True, False, False])


def test_kto_hand_numbers() -> None:
    """β=2, Δ = [-1, .5, 0, -.5]: z_ref = 2·0.25 = 0.5, r = [2, -1, 0, 1], margins [1.5, -1.5, .5, -.5]."""
    terms = kto_terms(T([1.0, 1.5, 2.0, 1.5]), T([2.0, 1.0, 2.0, 2.0]), DESIRABLE, beta=2.0)
    assert torch.allclose(terms.loss, T([0.182426, 0.817574, 0.377541, 0.622459]), atol=1e-6)
    assert torch.allclose(terms.margin, T([1.5, -1.5, 0.5, -0.5]))
    assert terms.kl.item() == pytest.approx(0.25)


def test_kto_reference_point_is_clamped_at_zero() -> None:
    """β=1, Δ = [.5, 1, 1.5, 1]: mean(-Δ) = -1 -> z_ref = 0; r = [-.5, -1, -1.5, -1], margins ±r."""
    terms = kto_terms(T([1.5, 2.0, 2.5, 2.0]), T([1.0, 1.0, 1.0, 1.0]), DESIRABLE, beta=1.0)
    assert terms.kl.item() == 0.0
    assert torch.allclose(terms.margin, T([-0.5, -1.0, 1.5, 1.0]))
    assert torch.allclose(terms.loss, T([0.622459, 0.731059, 0.182426, 0.268941]), atol=1e-6)


def test_kto_reference_point_carries_no_gradient() -> None:
    """d(1 - σ(m))/de_θ = σ(m)(1 - σ(m))·sign·β with z_ref held fixed: for the numbers above
    0.149146·2 = 0.298293 (desirable, m = ±1.5) and -0.235004·2 = -0.470007 (undesirable, m = ±0.5)."""
    policy = T([1.0, 1.5, 2.0, 1.5], requires_grad=True)
    kto_terms(policy, T([2.0, 1.0, 2.0, 2.0]), DESIRABLE, beta=2.0).loss.sum().backward()
    assert policy.grad is not None
    assert torch.allclose(policy.grad, T([0.298293, 0.298293, -0.470007, -0.470007]), atol=1e-6)


def test_kto_at_the_reference_is_one_half() -> None:
    """Policy = reference (the first update): every Δ = 0, z_ref = 0, every loss 1 - σ(0) = 0.5."""
    err = T([0.3, 0.7, 0.1, 0.9])
    terms = kto_terms(err, err.clone(), DESIRABLE, beta=1000.0)
    assert torch.equal(terms.loss, torch.full((4,), 0.5))


def test_kto_beta_must_be_positive() -> None:
    with pytest.raises(ValueError, match="beta must be > 0"):
        kto_terms(T([1.0]), T([1.0]), T([True]), beta=0.0)


def test_kto_method_reads_a_pair_as_two_labelled_samples() -> None:
    """The record's loss labels the winner desirable and the data loser undesirable: the pairs
    (pw, rw) = ([1, 1.5], [2, 1]), (pp, rp) = ([2, 1.5], [2, 2]) are the 4 samples above."""
    spec = method_spec("kto")
    assert (spec.partner, spec.default_reference, spec.needs_pairs) == ("data_loser", "initial", True)
    errors = StepErrors(T([1.0, 1.5]), T([2.0, 1.0]), T([2.0, 1.5]), T([2.0, 2.0]))
    terms = spec.loss(errors, load_config("tiny", ["train.method=kto", "train.beta=2"]).train)
    assert torch.allclose(terms.loss, T([0.182426, 0.817574, 0.377541, 0.622459]), atol=1e-6)
    assert terms.logged["kl_ref"].item() == pytest.approx(0.25)
    assert terms.logged["implicit_acc"].item() == pytest.approx(0.5)
