"""Step train_round: U updates of round k, then θ_k is committed to the bank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seppo_lib.config import SeppoConfig
from seppo_lib.data.shards import LatentDataset
from seppo_lib.steps.common import open_bank
from seppo_lib.tracking import RunLogger
from seppo_lib.training.references import ReferenceSet
from seppo_lib.training.trainer import train_round


def run(
    cfg: SeppoConfig,
    data_dir: str | Path,
    round_idx: int,
    reference_dirs: list[str | Path] | None = None,
    run_logger: RunLogger | None = None,
) -> dict[str, Any]:
    """Train round `round_idx`; returns the committed checkpoint and the round's metric means."""
    bank = open_bank(cfg)
    refs = ReferenceSet(reference_dirs) if reference_dirs else None
    result = train_round(cfg, LatentDataset(data_dir), bank, round_idx, refs, run_logger)
    means = {}
    if result.metrics:
        keys = result.metrics[0].keys()
        means = {k: sum(m[k] for m in result.metrics) / len(result.metrics) for k in keys}
    return {
        "round": round_idx,
        "checkpoint": result.entry.id,
        "step": result.entry.step,
        "skipped": result.skipped,
        "bank_uri": bank.uri,
        "metrics": means,
    }
