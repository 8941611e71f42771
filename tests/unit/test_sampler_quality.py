"""The verdict rule of `seppo bench sampler` on hand-made score tables."""

from __future__ import annotations

import pytest

from seppo_lib.bench.sampler_quality import comparisons, parse_candidates, sampler_table, training_prompts
from seppo_lib.errors import ConfigError


def _doc(*scores: list[float], prompts: int, samples: int = 1, tolerance: float = 0.05) -> dict:
    rows = [{"scheduler": "ddim", "steps": 10, "eta": 1.0, "seconds": 10.0, "all": scores[0]}]
    rows += [{"scheduler": "dpmsolver", "steps": 5, "eta": 0.0, "seconds": 4.0, "all": s} for s in scores[1:]]
    return {"prompts": prompts, "samples": samples, "tolerance": tolerance, "samplers": rows}


def test_identical_scores_keep_quality_and_the_speedup_is_the_time_ratio() -> None:
    """Same 0/1 scores on 4 prompts: difference 0 in every bootstrap replicate, CI [0, 0] -> keeps; 10 s / 4 s = 2.5×."""
    rows = comparisons(_doc([1, 0, 1, 0], [1, 0, 1, 0], prompts=4))
    assert rows[1]["diff"].mean == 0 and (rows[1]["diff"].lo, rows[1]["diff"].hi) == (0, 0)
    assert rows[1]["keeps_quality"] and rows[1]["speedup"] == pytest.approx(2.5)


def test_a_worse_sampler_does_not_keep_quality() -> None:
    """All correct vs none correct: difference -1 on every prompt, the interval excludes 0."""
    rows = comparisons(_doc([1, 1, 1, 1], [0, 0, 0, 0], prompts=4))
    assert rows[1]["diff"].mean == -1 and not rows[1]["keeps_quality"]


def test_a_wide_interval_that_contains_zero_is_not_evidence_of_equality() -> None:
    """Differences +1, -1 on 2 prompts: mean 0, but the bootstrap interval is [-1, 1] (half-width 1 > 0.05)."""
    rows = comparisons(_doc([0, 1], [1, 0], prompts=2))
    assert rows[1]["diff"].mean == 0 and rows[1]["diff"].lo < 0 < rows[1]["diff"].hi
    assert not rows[1]["keeps_quality"]
    assert "| ddim 10 steps, eta 1 | 0.500 | comparator |" in sampler_table(_doc([0, 1], [1, 0], prompts=2))


def test_candidates_parse_and_bad_ones_are_one_line_errors() -> None:
    assert parse_candidates("ddim:10:1, dpmsolver:5") == (("ddim", 10, 1.0), ("dpmsolver", 5, 0.0))
    for bad in ("ddim", "ddim:x,dpmsolver:5", "ddim:10"):
        with pytest.raises(ConfigError) as err:
            parse_candidates(bad)
        assert "\n" not in str(err.value)


def test_training_prompts_are_distinct_seeded_and_bounded() -> None:
    first = training_prompts(20, seed=3)
    assert first == training_prompts(20, seed=3) and len({p.text for p in first}) == 20
    with pytest.raises(ConfigError, match="--prompts must be in 1.."):
        training_prompts(10**6, seed=0)
