"""The tuning search's grid, selection rule and table (pure functions; no training)."""

from __future__ import annotations

import pytest

from seppo_lib.bench.methods import METHODS, TUNED, method_overrides
from seppo_lib.bench.tune import choose, grid, point_overrides, tuning_table


def test_grid_is_the_same_search_for_every_method() -> None:
    """SFT has no β: 2 LRs -> 2 points; the β methods get every (LR, β): 2 x 3 = 6 points."""
    lrs, betas = (1e-5, 1e-4), (500.0, 2000.0, 5000.0)
    assert grid("sft", lrs, betas) == [{"lr": 1e-5}, {"lr": 1e-4}]
    points = grid("seppo-sign-uniform", lrs, betas)
    assert len(points) == 6 and points[0] == {"lr": 1e-5, "beta": 500.0} and points[-1] == {"lr": 1e-4, "beta": 5000.0}
    assert grid("dpo", lrs, betas) == grid("spin", lrs, betas) == points
    assert point_overrides({"lr": 1e-4, "beta": 500.0}) == ("train.lr=0.0001", "train.beta=500.0")


def _row(method: str, acc: float, lr: float, beta: float | None = None) -> dict:
    point = {"lr": lr} if beta is None else {"lr": lr, "beta": beta}
    return {"method": method, "point": point, "test_all": acc, "train_all": 0.5, "test_first_by_round": [0.1, acc],
            "final_flip_rate": None if beta is None else 0.25, "run_id": "x", "train_seconds": 1.0}


def test_choose_highest_accuracy_then_smaller_lr_then_smaller_beta() -> None:
    rows = [_row("dpo", 0.30, 1e-4, 500.0), _row("dpo", 0.40, 3e-4, 5000.0), _row("dpo", 0.40, 3e-4, 2000.0),
            _row("dpo", 0.40, 1e-3, 500.0)]
    # 0.40 three times: the smallest LR (3e-4) wins, then the smaller beta (2000)
    assert choose(rows)["point"] == {"lr": 3e-4, "beta": 2000.0}
    assert choose([_row("sft", 0.2, 1e-4), _row("sft", 0.25, 3e-5)])["point"] == {"lr": 3e-5}


def test_table_bolds_the_choice() -> None:
    rows = [_row("sft", 0.2, 1e-4), _row("sft", 0.25, 3e-5), _row("dpo", 0.3, 1e-4, 500.0)]
    doc = {"base": {"test_all": 0.2, "train_all": 0.3}, "rows": rows,
           "chosen": {"sft": {"lr": 3e-5}, "dpo": {"lr": 1e-4, "beta": 500.0}}}
    table = tuning_table(doc)
    assert "| **sft** | 3e-05 | - | **0.250** | 0.500 | 0.10 → 0.25 | - |" in table
    assert "| sft | 0.0001 | - | 0.200 |" in table
    assert "| **dpo** | 0.0001 | 500 | **0.300** |" in table and "0.25 |" in table


@pytest.mark.parametrize("name", ["seppo-indicator-uniform", "seppo-none-uniform", "seppo-sign-latest", "seppo-sign-initial"])
def test_ablations_share_the_values_tuned_for_seppo_sign_uniform(name: str) -> None:
    assert set(TUNED) == {"sft", "dpo", "spin", "seppo-sign-uniform"}
    assert method_overrides(name) == [*METHODS[name], *TUNED["seppo-sign-uniform"]]
    assert method_overrides(name, tuned=False) == list(METHODS[name])
    assert method_overrides("dpo") == [*METHODS["dpo"], *TUNED["dpo"]]
