"""Step train_round: U updates of round k, then θ_k is committed to the bank."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seppo_lib.config import SeppoConfig
from seppo_lib.data.shards import LatentDataset
from seppo_lib.identity import resolve
from seppo_lib.steps.common import open_bank, run_dir
from seppo_lib.tracking import RunLogger
from seppo_lib.tracking.steps import step_tracking
from seppo_lib.training.references import ReferenceSet
from seppo_lib.training.trainer import train_round


def run(
    cfg: SeppoConfig,
    data_dir: str | Path,
    round_idx: int,
    reference_dirs: list[str | Path] | None = None,
    run_logger: RunLogger | None = None,
) -> dict[str, Any]:
    """Train round `round_idx`; returns the committed checkpoint and the round's metric means.

    Without `run_logger` the step logs to its own MLflow child run (tracking config).
    """
    cfg = resolve(cfg)
    if run_logger is None:
        with step_tracking(cfg, f"train_round-{round_idx}", {"seppo.round": str(round_idx)}) as tracked:
            return run(cfg, data_dir, round_idx, reference_dirs, tracked)
    bank = open_bank(cfg)
    refs = ReferenceSet(reference_dirs) if reference_dirs else None
    result = train_round(cfg, LatentDataset(data_dir), bank, round_idx, refs, run_logger)
    manifest = run_dir(cfg) / "bank-manifest.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(bank.manifest_json(), indent=1))
    run_logger.log_artifact(manifest)
    run_logger.set_tags({"seppo.checkpoint": result.entry.id, "seppo.bank_uri": bank.uri})
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
