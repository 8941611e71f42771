"""Bootstrap, win-rate and t-interval statistics on synthetic scores with known answers (tables, not scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seppo_lib.evaluation.stats import WinRate, bootstrap_mean_ci, mean_ci_t, t_cdf, t_quantile, win_rate


def test_candidate_always_better_wins_with_degenerate_ci() -> None:
    base = np.linspace(0.0, 1.0, 50)
    assert win_rate(base + 0.1, base, n_boot=200, seed=0) == WinRate(rate=1.0, lo=1.0, hi=1.0, n=50)
    assert win_rate(base - 0.1, base, n_boot=200, seed=0) == WinRate(rate=0.0, lo=0.0, hi=0.0, n=50)


def test_ties_count_half() -> None:
    """Outcomes win, tie, tie, loss -> (1 + 0.5 + 0.5 + 0) / 4 = 0.5; all ties -> exactly 0.5."""
    assert win_rate([2, 1, 1, 0], [1, 1, 1, 1], n_boot=100).rate == 0.5
    assert win_rate([1.0] * 10, [1.0] * 10, n_boot=100) == WinRate(0.5, 0.5, 0.5, 10)


def test_iid_equal_distributions_cover_half() -> None:
    rng = np.random.default_rng(1)
    result = win_rate(rng.normal(size=500), rng.normal(size=500), n_boot=1000, seed=2)
    assert result.lo < 0.5 < result.hi and result.n == 500
    assert result.hi - result.lo < 0.1  # ±1.96·sqrt(0.25/500) ≈ ±0.044


def test_binomial_p07_rate_and_ci() -> None:
    """Wins with p = 0.7 over n = 2000 prompts: rate ≈ 0.7, CI half-width ≈ 1.96·sqrt(0.21/2000) = 0.020."""
    rng = np.random.default_rng(3)
    wins = rng.random(2000) < 0.7
    result = win_rate(wins.astype(float), np.full(2000, 0.5), n_boot=2000, seed=4)
    assert abs(result.rate - 0.7) < 0.03
    assert result.lo <= 0.7 <= result.hi
    assert abs((result.hi - result.lo) / 2 - 0.0201) < 0.003


def test_bootstrap_coverage_is_near_nominal() -> None:
    """Over 300 samples of 100 Exp(1) values, the 90% interval should cover the true mean 1 ~90% of the time."""
    rng = np.random.default_rng(5)
    covered = [lo <= 1.0 <= hi for lo, hi in (bootstrap_mean_ci(rng.exponential(size=100), 500, 0.1, seed=i)[1:] for i in range(300))]
    assert 0.83 <= np.mean(covered) <= 0.95


def test_bootstrap_is_reproducible_and_seed_dependent() -> None:
    values = np.random.default_rng(6).normal(size=64)
    first = bootstrap_mean_ci(values, n_boot=300, seed=7)
    assert bootstrap_mean_ci(values, n_boot=300, seed=7) == first
    assert bootstrap_mean_ci(values, n_boot=300, seed=8) != first
    assert first[0] == pytest.approx(values.mean())
    assert first[1] < first[0] < first[2]


def test_single_value_is_its_own_interval() -> None:
    assert bootstrap_mean_ci([0.25], n_boot=10) == (0.25, 0.25, 0.25)


def test_bootstrap_chunking_handles_large_inputs() -> None:
    """More indices than one chunk (4e6): 50 resamples of 100_000 values still give mean-centred bounds."""
    values = np.random.default_rng(9).normal(loc=3.0, size=100_000)
    mean, lo, hi = bootstrap_mean_ci(values, n_boot=50, seed=0)
    assert lo < mean < hi and hi - lo < 0.03


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_mean_ci([], 10), "non-empty"),
        (lambda: bootstrap_mean_ci([1.0, math.nan], 10), "NaN or inf at index 1"),
        (lambda: bootstrap_mean_ci([1.0], 0), "n_boot"),
        (lambda: bootstrap_mean_ci([1.0], 10, alpha=1.5), "alpha"),
        (lambda: win_rate([1.0, 2.0], [1.0], 10), "differ in length"),
        (lambda: mean_ci_t([1.0]), "at least 2"),
    ],
)
def test_bad_inputs(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_t_interval_on_hand_computed_numbers() -> None:
    """[1..5]: mean 3, s = sqrt(2.5), se = sqrt(0.5) = 0.70711, t(0.975, 4) = 2.776445 -> 3 ± 1.963243."""
    mean, lo, hi = mean_ci_t([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert (lo, hi) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-6)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [(0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 10, 2.228139),
     (0.975, 30, 2.042272), (0.995, 5, 4.032143), (0.95, 20, 1.724718), (0.975, 100000, 1.959988)],
)
def test_t_quantile_matches_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-6)
    assert t_cdf(expected, df) == pytest.approx(p, abs=1e-6)
