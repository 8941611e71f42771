"""A model trained with clip_sample=True keeps its x0 clipping under DPM-Solver (the world models)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from seppo_lib.families.base import FAMILIES

WORLD_SCHEDULER = Path(__file__).resolve().parents[2] / "seppo_lib" / "world" / "base_model" / "scheduler" / "scheduler_config.json"


def test_dpmsolver_thresholds_exactly_like_the_clip_of_a_clipping_model() -> None:
    """clip_sample=True -> DPM-Solver's dynamic thresholding with sample_max_value 1: s = clamp(q, 1, 1) = 1,
    so x0 -> clamp(x0, -1, 1) / 1, which is DDIM's clip: e.g. (-3, -0.5, 0.2, 2) -> (-1, -0.5, 0.2, 1)."""
    config = json.loads(WORLD_SCHEDULER.read_text())
    assert config["clip_sample"] is True
    sched = FAMILIES["sd"].sampling_scheduler("dpmsolver", config)
    assert sched.config.thresholding and sched.config.sample_max_value == 1.0
    x0 = torch.tensor([-3.0, -0.5, 0.2, 2.0]).reshape(1, 1, 2, 2)
    assert torch.equal(sched._threshold_sample(x0), torch.tensor([-1.0, -0.5, 0.2, 1.0]).reshape(1, 1, 2, 2))


def test_a_model_without_clipping_samples_dpmsolver_unthresholded() -> None:
    config = {**json.loads(WORLD_SCHEDULER.read_text()), "clip_sample": False}
    assert not FAMILIES["sd"].sampling_scheduler("dpmsolver", config).config.thresholding
    assert FAMILIES["sd"].sampling_scheduler("ddim", json.loads(WORLD_SCHEDULER.read_text())).config.clip_sample
