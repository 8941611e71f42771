"""Reference selection strategies (ALGORITHM.md test 4)."""

from __future__ import annotations

import numpy as np
import pytest

from seppo_lib.reference import reference_schedule, round_rng, select_reference

IDS = ["initial", "ckpt-000030", "ckpt-000060", "ckpt-000090"]


def test_initial_and_latest() -> None:
    for k in range(1, 6):
        assert reference_schedule(IDS, "initial", "step", 10, seed=k, round_idx=k) == ["initial"] * 10
        assert reference_schedule(IDS, "latest", "step", 10, seed=k, round_idx=k) == ["ckpt-000090"] * 10


def test_uniform_is_uniform_chi_square() -> None:
    """20000 draws over 4 ids: chi-square with 3 dof; 16.27 is the 0.999 quantile."""
    rng = round_rng(0, 1, stream=1)
    n = 20000
    counts = np.bincount([IDS.index(select_reference(IDS, "uniform", rng)) for _ in range(n)], minlength=4)
    expected = n / 4
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27, counts


def test_uniform_includes_initial_and_is_reproducible() -> None:
    a = reference_schedule(IDS, "uniform", "step", 200, seed=3, round_idx=4)
    b = reference_schedule(IDS, "uniform", "step", 200, seed=3, round_idx=4)
    c = reference_schedule(IDS, "uniform", "step", 200, seed=4, round_idx=4)
    assert a == b and a != c
    assert set(a) == set(IDS)


def test_round_resampling_draws_once() -> None:
    sched = reference_schedule(IDS, "uniform", "round", 30, seed=1, round_idx=2)
    assert len(set(sched)) == 1 and len(sched) == 30


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown reference strategy 'best'"):
        reference_schedule(IDS, "best", "round", 1, 0, 1)
    with pytest.raises(ValueError, match="unknown reference_resample"):
        reference_schedule(IDS, "uniform", "epoch", 1, 0, 1)
    with pytest.raises(ValueError, match="bank is empty"):
        reference_schedule([], "uniform", "round", 1, 0, 1)
