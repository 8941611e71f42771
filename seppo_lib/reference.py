"""Reference selection from the checkpoint bank (pure, seeded).

At the start of round k the bank holds θ_0..θ_{k-1}. The schedule of a round (one
reference id per optimizer update) is a pure function of (bank ids at round start,
strategy, resample mode, U, seed, round), so it is known before the round starts and is
identical in every process that computes it.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("uniform", "latest", "initial")
RESAMPLE = ("round", "step")


def round_rng(seed: int, round_idx: int, stream: int) -> np.random.Generator:
    """An independent generator per (run seed, round, purpose)."""
    return np.random.default_rng(np.random.SeedSequence([seed, round_idx, stream]))


def select_reference(bank_ids: list[str], strategy: str, rng: np.random.Generator) -> str:
    """One draw: `initial` -> θ_0, `latest` -> θ_{k-1}, `uniform` -> any of θ_0..θ_{k-1}."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown reference strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if not bank_ids:
        raise ValueError("the checkpoint bank is empty: θ_0 must be committed before selecting a reference")
    if strategy == "initial":
        return bank_ids[0]
    if strategy == "latest":
        return bank_ids[-1]
    return bank_ids[int(rng.integers(len(bank_ids)))]


def reference_schedule(
    bank_ids: list[str], strategy: str, resample: str, updates: int, seed: int, round_idx: int
) -> list[str]:
    """The reference checkpoint id of each of the round's `updates` optimizer updates."""
    if resample not in RESAMPLE:
        raise ValueError(f"unknown reference_resample {resample!r}; allowed: {', '.join(RESAMPLE)}")
    rng = round_rng(seed, round_idx, stream=1)
    if resample == "round":
        return [select_reference(bank_ids, strategy, rng)] * updates
    return [select_reference(bank_ids, strategy, rng) for _ in range(updates)]
