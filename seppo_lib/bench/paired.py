"""Paired statistics of the quality benchmark: differences on the same prompts, sample seeds and training seeds.

Every model of a benchmark is sampled on the same held-out prompts with the same sample seeds,
and the run of every method with training seed ``s`` shares that seed's data order and sampler
noise. A comparison of method A with a comparator B (SFT, or the base model) therefore reads
one **difference table** ``D[s, i, j] = y_A[s, i, j] - y_B[s, i, j]``: training seed ``s``,
prompt ``i``, sample ``j`` (0/1 scores of the world scorer; the base model has no training seed,
its scores are the same for every ``s``). The estimate is the mean of ``D``.

**Interval: a crossed two-level bootstrap** (`paired_bootstrap`). Seeds and prompts are crossed
(every seed sees every prompt), not nested, so each replicate draws ``S`` seeds and ``P``
prompts with replacement, independently, and averages ``D`` over the selected cells (samples
stay with their prompt): Owen's "pigeonhole" bootstrap (A. B. Owen, The pigeonhole bootstrap,
Ann. Appl. Stat. 1(2), 2007), mildly conservative for crossed designs. ``scipy.stats.bootstrap``
resamples one axis (or paired samples along one axis), not two crossed factors, so this uses
numpy's Generator. Percentile interval. With 3 seeds the seed level has only 10 distinct
multisets: the interval is coarse and, like every bootstrap with few units, on the narrow side.

**Power** (`variance_components`, `detectable_difference`): the two-way random-effects model
``D[s, i, j] = δ + τ_s + π_i + (τπ)_si + ε_sij`` with method-of-moments (ANOVA) estimates of the
between-seed variance σ²_seed, the between-prompt variance σ²_prompt, the seed × prompt
interaction σ²_cell and the sample-level variance σ²_sample. The variance of the mean of a
design with S seeds, P prompts and K samples per prompt is
``σ²_seed/S + σ²_prompt/P + σ²_cell/(S·P) + σ²_sample/(S·P·K)``; the smallest true difference it
detects with probability ``power`` in a two-sided test at level ``alpha`` is
``(z_{1-alpha/2} + z_{power}) · sqrt(that variance)`` (normal approximation: with few seeds a
t-test needs more, e.g. ×1.5 at 3 seeds when σ²_seed dominates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from seppo_lib.errors import SeppoError


class PairedStatsError(SeppoError, ValueError):
    """A difference table or design that the paired statistics cannot use."""


@dataclass(frozen=True)
class PairedDiff:
    """Mean of a difference table and its (1 - alpha) crossed-bootstrap percentile interval."""

    mean: float
    lo: float
    hi: float
    seeds: int
    prompts: int
    samples: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0.0 or self.hi < 0.0


@dataclass(frozen=True)
class VarianceComponents:
    """ANOVA estimates of the difference table's variances (each clipped at 0); seed is None with one seed."""

    seed: float | None
    prompt: float
    cell: float | None
    sample: float | None

    def variance_of_mean(self, seeds: int, prompts: int, samples: int) -> float:
        """σ²_seed/S + σ²_prompt/P + σ²_cell/(S·P) + σ²_sample/(S·P·K) (a missing component counts 0)."""
        if min(seeds, prompts, samples) < 1:
            raise PairedStatsError(f"a design needs at least one seed, prompt and sample, got {seeds}, {prompts}, {samples}")
        cells = seeds * prompts
        return ((self.seed or 0.0) / seeds + self.prompt / prompts + (self.cell or 0.0) / cells
                + (self.sample or 0.0) / (cells * samples))  # fmt: skip


def difference_table(candidate: np.ndarray, comparator: np.ndarray) -> np.ndarray:
    """``candidate - comparator`` as an (S, P, K) table: candidate is (S, P, K); comparator is (S, P, K)
    (paired by training seed) or (P, K) (the base model, the same for every seed)."""
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(comparator, dtype=np.float64)
    if a.ndim != 3:
        raise PairedStatsError(f"candidate scores must be (seeds, prompts, samples), got shape {a.shape}")
    if b.shape not in (a.shape, a.shape[1:]):
        raise PairedStatsError(f"comparator scores of shape {b.shape} do not pair with candidate {a.shape}: "
                               f"use {a.shape} or {a.shape[1:]}")  # fmt: skip
    d = a - b
    if not np.isfinite(d).all():
        raise PairedStatsError("scores contain NaN or inf")
    return d


def bootstrap_replicates(diff: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> np.ndarray:
    """`n_boot` crossed seed × prompt bootstrap means of an (S, P, K) difference table.

    Replicate b draws seed counts c (multinomial, S draws over S seeds) and prompt counts w (P
    over P prompts); its value is ``c @ M @ w / (S·P)`` with M the (S, P) table of cell means
    (the mean over the K samples). Example: ``M = [[0, 1]]`` (one seed, two prompts) gives the
    values 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4; ``M[s, i] = a_s + b_i`` with a = b = (0, 1)
    (two seeds, two prompts) gives ā* + b̄*, the sum of two such independent draws: variance
    1/8 + 1/8 = 1/4 (each draw: ¼·0.25 + ½·0 + ¼·0.25), and the value 0 with probability 1/16.
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.ndim != 3 or 0 in d.shape:
        raise PairedStatsError(f"a difference table is (seeds, prompts, samples) with none empty, got shape {d.shape}")
    if n_boot < 1:
        raise PairedStatsError(f"n_boot must be >= 1, got {n_boot}")
    s, p, _ = d.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(s, np.full(s, 1.0 / s), size=n_boot)
    prompt_counts = rng.multinomial(p, np.full(p, 1.0 / p), size=n_boot)
    return np.einsum("bs,sp,bp->b", seed_counts, d.mean(axis=2), prompt_counts) / (s * p)


def paired_bootstrap(diff: np.ndarray, n_boot: int = 10_000, alpha: float = 0.05, seed: int = 0) -> PairedDiff:
    """Mean of an (S, P, K) difference table and the alpha/2, 1 - alpha/2 quantiles of its
    `bootstrap_replicates` (M = [[0, 1]]: mean 0.5, 95% interval [0, 1])."""
    if not 0.0 < alpha < 1.0:
        raise PairedStatsError(f"alpha must be in (0, 1), got {alpha}")
    replicates = bootstrap_replicates(diff, n_boot, seed)
    lo, hi = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    s, p, k = np.shape(diff)
    return PairedDiff(float(np.mean(diff)), float(lo), float(hi), s, p, k)


def variance_components(diff: np.ndarray) -> VarianceComponents:
    """Method-of-moments estimates for ``D[s, i, j] = δ + τ_s + π_i + (τπ)_si + ε_sij`` (balanced, crossed).

    With M the cell means, the mean squares are
    MS_seed = P·K·Σ_s (M̄_s − M̄)²/(S−1), MS_prompt = S·K·Σ_i (M̄_i − M̄)²/(P−1),
    MS_cell = K·Σ_si (M_si − M̄_s − M̄_i + M̄)²/((S−1)(P−1)), MS_sample = Σ (D_sij − M_si)²/(S·P·(K−1)),
    and σ²_sample = MS_sample, σ²_cell = (MS_cell − MS_sample)/K, σ²_seed = (MS_seed − MS_cell)/(P·K),
    σ²_prompt = (MS_prompt − MS_cell)/(S·K), each clipped at 0. With one seed the interaction cannot be
    told from the prompt term: σ²_prompt = (MS_prompt − MS_sample)/K and seed / cell are None; with
    one sample σ²_sample is None (it stays in σ²_cell).
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.ndim != 3 or d.shape[1] < 2:
        raise PairedStatsError(f"variance components need a (seeds, prompts >= 2, samples) table, got shape {d.shape}")
    s, p, k = d.shape
    m = d.mean(axis=2)
    grand, seed_means, prompt_means = m.mean(), m.mean(axis=1), m.mean(axis=0)
    ms_sample = float(((d - m[..., None]) ** 2).sum() / (s * p * (k - 1))) if k > 1 else None
    ms_prompt = s * k * float(((prompt_means - grand) ** 2).sum()) / (p - 1)
    if s == 1:
        floor = ms_sample if ms_sample is not None else 0.0
        return VarianceComponents(None, max(0.0, (ms_prompt - floor) / k), None, ms_sample)
    ms_seed = p * k * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    resid = m - seed_means[:, None] - prompt_means[None, :] + grand
    ms_cell = k * float((resid**2).sum()) / ((s - 1) * (p - 1))
    cell = max(0.0, (ms_cell - (ms_sample or 0.0)) / k)
    return VarianceComponents(
        seed=max(0.0, (ms_seed - ms_cell) / (p * k)), prompt=max(0.0, (ms_prompt - ms_cell) / (s * k)), cell=cell, sample=ms_sample,
    )


def detectable_difference(
    components: VarianceComponents, seeds: int, prompts: int, samples: int, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest true difference a design detects with probability `power` (two-sided, level `alpha`):
    (z_{1-alpha/2} + z_{power}) · sqrt(variance_of_mean); at alpha 0.05 and power 0.8 the factor is
    1.95996 + 0.84162 = 2.80158. NaN when the seed variance is unknown (one seed) and seeds > 1 are asked."""
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise PairedStatsError(f"need 0 < alpha < 1 and 0 < power < 1, got alpha={alpha}, power={power}")
    if components.seed is None and seeds > 1:
        return math.nan
    factor = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return factor * math.sqrt(components.variance_of_mean(seeds, prompts, samples))


def score_table(per_image: Sequence[Sequence[float]], samples: int) -> np.ndarray:
    """(S, P, K) scores from one flat per-image list per seed (image j of prompt i at index i·K + j)."""
    rows = [np.asarray(r, dtype=np.float64) for r in per_image]
    if not rows or samples < 1 or any(r.size != rows[0].size or r.size % samples for r in rows):
        raise PairedStatsError(f"per-image scores must be equally long multiples of {samples} samples per prompt")
    return np.stack([r.reshape(-1, samples) for r in rows])
