"""Confidence intervals for evaluation: percentile bootstrap over prompts, paired win rates, t-intervals.

Prompts are the resampling unit: with several images per prompt, average them per prompt first.
Seed-level aggregates (one number per training seed) use the Student-t interval. The
bootstrap is `scipy.stats.bootstrap` (percentile method), the t distribution `scipy.stats.t`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Upper bound on random indices drawn at once (memory: 8 bytes each).
_BOOT_CHUNK = 4_000_000


@dataclass(frozen=True)
class WinRate:
    """Fraction of prompts where the candidate beats the baseline (ties count half), with its CI."""

    rate: float
    lo: float
    hi: float
    n: int


def _as_values(values: Sequence[float] | np.ndarray, what: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf at index {int(np.flatnonzero(~np.isfinite(x))[0])}")
    return x


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi): the sample mean and its (1 - alpha) percentile-bootstrap interval.

    `n_boot` resamples of len(values) drawn with replacement; lo/hi are the alpha/2 and
    1 - alpha/2 quantiles of the resampled means. Same inputs and seed give the same interval;
    a single value is its own (degenerate) interval.
    """
    x = _as_values(values)
    _check_alpha(alpha)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    result = stats.bootstrap(
        (x,), np.mean, n_resamples=n_boot, batch=max(1, _BOOT_CHUNK // x.size), vectorized=True,
        confidence_level=1 - alpha, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    lo, hi = result.confidence_interval
    return float(x.mean()), float(lo), float(hi)


def win_rate(
    candidate_scores: Sequence[float] | np.ndarray,
    baseline_scores: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> WinRate:
    """Paired win rate over prompts: 1 when candidate > baseline, 0.5 on a tie, 0 otherwise.

    Entry i of both sequences must be the same prompt. The CI is the percentile bootstrap over
    prompts of the per-prompt outcomes.
    """
    cand = _as_values(candidate_scores, "candidate_scores")
    base = _as_values(baseline_scores, "baseline_scores")
    if cand.size != base.size:
        raise ValueError(f"paired scores differ in length: {cand.size} candidate vs {base.size} baseline")
    outcomes = np.where(cand > base, 1.0, np.where(cand == base, 0.5, 0.0))
    rate, lo, hi = bootstrap_mean_ci(outcomes, n_boot=n_boot, alpha=alpha, seed=seed)
    return WinRate(rate=rate, lo=lo, hi=hi, n=int(cand.size))


def mean_ci_t(values: Sequence[float] | np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lo, hi): mean ± t_{1-alpha/2, n-1} · s / sqrt(n), s the sample std (ddof=1)."""
    x = _as_values(values)
    _check_alpha(alpha)
    if x.size < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {x.size}")
    mean = float(x.mean())
    half = t_quantile(1 - alpha / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


# ---- Student t distribution --------------------------------------------------------------


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    return float(stats.t.cdf(t, df))


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    return float(stats.t.ppf(p, df))
