"""Paired benchmark statistics (seppo_lib.bench.paired) on hand-computed tables: the arithmetic is in each docstring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seppo_lib.bench.paired import (
    PairedStatsError,
    VarianceComponents,
    bootstrap_replicates,
    detectable_difference,
    difference_table,
    paired_bootstrap,
    score_table,
    variance_components,
)

Z = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.80} = 2.80158


def test_prompt_level_bootstrap_of_two_prompts() -> None:
    """M = [[0, 1]]: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4; 95% interval [0, 1], mean 0.5."""
    diff = np.array([[[0.0], [1.0]]])
    reps = bootstrap_replicates(diff, n_boot=40_000, seed=1)
    for value, prob in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert abs(float(np.mean(reps == value)) - prob) < 0.01
    result = paired_bootstrap(diff, n_boot=2000)
    assert (result.mean, result.lo, result.hi, result.seeds, result.prompts, result.samples) == (0.5, 0.0, 1.0, 1, 2, 1)
    assert not result.excludes_zero


def test_seeds_and_prompts_are_both_resampled() -> None:
    """M[s, i] = a_s + b_i, a = b = (0, 1): replicate = ā* + b̄*, variance 1/8 + 1/8 = 1/4 (sd 0.5), P(0) = 1/16.
    Resampling only prompts would give variance 1/8; only seeds, 1/8; neither, 0."""
    diff = np.array([[[0.0], [1.0]], [[1.0], [2.0]]])
    reps = bootstrap_replicates(diff, n_boot=40_000, seed=2)
    assert abs(float(reps.std()) - 0.5) < 0.01
    assert abs(float(np.mean(reps == 0.0)) - 1 / 16) < 0.005
    assert abs(float(reps.mean()) - 1.0) < 0.01
    seeds_only = paired_bootstrap(np.array([[[0.0]], [[1.0]]]), n_boot=2000)
    assert (seeds_only.lo, seeds_only.hi) == (0.0, 1.0)  # two seeds, one prompt: the seed level alone gives [0, 1]


def test_pairing_removes_the_shared_prompt_difficulty() -> None:
    """Candidate = comparator + 0.1 on every cell, comparator spread over [0, 1] by prompt: every difference is 0.1,
    so the interval is exactly [0.1, 0.1] and excludes 0 (an unpaired comparison of the two means could not)."""
    base = np.linspace(0.0, 0.8, 16).reshape(8, 2)  # (prompts, samples): the base model, no training seed
    candidate = np.stack([base + 0.1] * 3)  # 3 seeds
    result = paired_bootstrap(difference_table(candidate, base), n_boot=500)
    assert result.mean == pytest.approx(0.1) and result.lo == pytest.approx(0.1) and result.hi == pytest.approx(0.1)
    assert result.excludes_zero and (result.seeds, result.prompts, result.samples) == (3, 8, 2)
    sft = np.stack([base + 0.3] * 3)  # paired by seed too: candidate - sft = -0.2 everywhere
    below = paired_bootstrap(difference_table(candidate, sft), n_boot=500)
    assert below.hi == pytest.approx(-0.2) and below.excludes_zero


def test_difference_table_shapes_and_values() -> None:
    """(S=2, P=2, K=1) minus a (P, K) base: [[1, 0], [1, 1]] - [[1], [0]] -> [[[0], [0]], [[0], [1]]]."""
    cand = np.array([[[1.0], [0.0]], [[1.0], [1.0]]])
    assert difference_table(cand, np.array([[1.0], [0.0]])).tolist() == [[[0.0], [0.0]], [[0.0], [1.0]]]
    assert difference_table(cand, cand).sum() == 0.0
    with pytest.raises(PairedStatsError, match="do not pair"):
        difference_table(cand, np.zeros((3, 1)))
    with pytest.raises(PairedStatsError, match="seeds, prompts, samples"):
        difference_table(np.zeros((2, 2)), np.zeros((2, 2)))


def test_variance_components_by_hand() -> None:
    """D (S=2, P=2, K=2): cells [0, 1], [1, 1] / [0, 0], [0, 1] -> M = [[0.5, 1], [0, 0.5]], grand mean 0.5,
    seed means (0.75, 0.25), prompt means (0.25, 0.75), interaction residuals all 0.
    MS_sample = (0.25 + 0.25 + 0 + 0 + 0 + 0 + 0.25 + 0.25) / (2·2·1) = 0.25;
    MS_seed = P·K·(0.25² + 0.25²) / 1 = 4 · 0.125 = 0.5; MS_prompt = S·K·0.125 = 0.5; MS_cell = 0.
    σ²_sample = 0.25, σ²_cell = max(0, (0 − 0.25)/2) = 0, σ²_seed = (0.5 − 0)/(P·K) = 0.125, σ²_prompt = 0.125.
    Var(mean) at 2 × 2 × 2 = 0.125/2 + 0.125/2 + 0 + 0.25/8 = 0.15625, MDE = 2.80158 · 0.395285 = 1.10742;
    at 8 seeds × 32 prompts × 4 = 0.015625 + 0.00390625 + 0.000244140625 = 0.019775390625 = 0.140625², MDE 0.39397."""
    diff = np.array([[[0.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])
    comp = variance_components(diff)
    assert comp == VarianceComponents(seed=0.125, prompt=0.125, cell=0.0, sample=0.25)
    assert comp.variance_of_mean(2, 2, 2) == pytest.approx(0.15625)
    assert detectable_difference(comp, 2, 2, 2) == pytest.approx(Z * math.sqrt(0.15625)) == pytest.approx(1.10742, abs=1e-5)
    assert detectable_difference(comp, 8, 32, 4) == pytest.approx(Z * 0.140625) == pytest.approx(0.39397, abs=1e-5)


def test_interaction_and_one_seed() -> None:
    """M = [[1, 0], [0, 1]] (K = 1): no seed or prompt effect, residuals ±0.5 -> MS_cell = 4·0.25/1 = 1 = σ²_cell
    (no sample term with one sample); Var(mean) at 2 × 2 × 1 = 1/4.
    One seed, M = [[0.5, 1]] from samples [0, 1], [1, 1]: MS_sample = 0.5/2 = 0.25, MS_prompt = 1·2·(0.25² + 0.25²) = 0.25,
    σ²_prompt = (0.25 − 0.25)/2 = 0; the seed variance is unknown, so a multi-seed MDE is NaN."""
    crossed = variance_components(np.array([[[1.0], [0.0]], [[0.0], [1.0]]]))
    assert crossed == VarianceComponents(seed=0.0, prompt=0.0, cell=1.0, sample=None)
    assert crossed.variance_of_mean(2, 2, 1) == pytest.approx(0.25)
    single = variance_components(np.array([[[0.0, 1.0], [1.0, 1.0]]]))
    assert single == VarianceComponents(seed=None, prompt=0.0, cell=None, sample=0.25)
    assert detectable_difference(single, 1, 2, 2) == pytest.approx(Z * math.sqrt(0.25 / 4))
    assert math.isnan(detectable_difference(single, 5, 256, 2))


def test_score_table_and_bad_input() -> None:
    """Flat per-image lists (image j of prompt i at i·K + j) -> (S, P, K)."""
    table = score_table([[1, 0, 0, 1], [0, 0, 1, 1]], samples=2)
    assert table.shape == (2, 2, 2) and table[1, 1].tolist() == [1.0, 1.0] and table[0, 0].tolist() == [1.0, 0.0]
    with pytest.raises(PairedStatsError, match="multiples of 3"):
        score_table([[1, 0, 0, 1]], samples=3)
    with pytest.raises(PairedStatsError, match="alpha"):
        paired_bootstrap(np.zeros((1, 2, 1)), alpha=1.5)
    with pytest.raises(PairedStatsError, match="power"):
        detectable_difference(VarianceComponents(0.0, 0.0, 0.0, 0.0), 1, 1, 1, power=1.0)


def _budget_results(with_curve_scores: bool = True) -> dict:
    """base, sft and seppo over seeds 0 and 1, 4 rounds of 8 updates, a curve of 2 prompts (first samples)."""
    curves = {  # method -> seed -> round 1..4 first-sample scores of the 2 curve prompts
        "sft": {0: [[0, 1], [0, 0], [1, 0], [1, 1]], 1: [[0, 0], [0, 0], [0, 1], [0, 1]]},
        "seppo-sign-uniform": {0: [[1, 1], [1, 0], [1, 1], [1, 1]], 1: [[0, 1], [1, 1], [1, 1], [0, 0]]},
    }
    key = "first_all_per_image" if with_curve_scores else "unused"
    runs = [{"method": m, "seed": s, "config": {"train": {"n_rounds": 4, "updates_per_round": 8}},
             "rounds": [{"round": r + 1, key: scores[r]} for r in range(4)]}
            for m, by_seed in curves.items() for s, scores in by_seed.items()]  # fmt: skip
    return {"options": {"methods": ["base", "sft", "seppo-sign-uniform"]}, "base": {"first_all_per_image": [0, 1]}, "runs": runs}


def test_budgets_are_a_quarter_half_and_all_of_the_rounds() -> None:
    from seppo_lib.bench.report import budget_rounds

    assert budget_rounds(16) == [4, 8, 16] and budget_rounds(4) == [1, 2, 4] and budget_rounds(6) == [1, 3, 6]
    assert budget_rounds(2) == [1, 2] and budget_rounds(1) == [1]


def test_budget_differences_read_each_budgets_own_round() -> None:
    """Budgets 1, 2, 4 of a 4-round run (8 updates each), base first samples [0, 1]:
    round 1: sft − base = mean([0-0, 1-1], [0-0, 0-1]) = -1/4; seppo − base = mean([1, 0], [0, 0]) = 1/4;
             seppo − sft = mean([1, 0], [0, 1]) = 1/2.
    round 2: sft − base = mean([0, -1], [0, -1]) = -1/2; seppo − base = mean([1, -1], [1, 0]) = 1/4; seppo − sft = 3/4.
    round 4: sft − base = mean([1, 0], [0, 0]) = 1/4; seppo − base = mean([1, 0], [0, -1]) = 0; seppo − sft = -1/4."""
    from seppo_lib.bench.report import budget_summary, budget_table

    rows = budget_summary(_budget_results(), n_boot=200)
    got = {(r["round"], r["method"], r["vs"]): r["mean"] for r in rows}
    want = {(1, "sft", "base"): -0.25, (1, "seppo-sign-uniform", "base"): 0.25, (1, "seppo-sign-uniform", "sft"): 0.5,
            (2, "sft", "base"): -0.5, (2, "seppo-sign-uniform", "base"): 0.25, (2, "seppo-sign-uniform", "sft"): 0.75,
            (4, "sft", "base"): 0.25, (4, "seppo-sign-uniform", "base"): 0.0, (4, "seppo-sign-uniform", "sft"): -0.25}  # fmt: skip
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(v) for k, v in want.items())
    assert {r["round"]: r["updates"] for r in rows} == {1: 8, 2: 16, 4: 32}
    assert all(r["seeds"] == 2 and r["prompts"] == 2 and r["samples"] == 1 for r in rows)
    table = budget_table(rows)
    assert "| 2 | 16 | seppo-sign-uniform | sft | +0.750 |" in table and table.count("\n| ") == len(rows) + 1


def test_budgets_need_the_curves_per_image_scores() -> None:
    from seppo_lib.bench.report import budget_summary

    assert budget_summary(_budget_results(with_curve_scores=False)) == []
