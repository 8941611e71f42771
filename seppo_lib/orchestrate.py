"""In-process orchestration of a whole run: prepare -> (sample -> train) x K.

Used by `seppo train` and the tests; the KFP pipeline wires the same steps. The config is
resolved first (`seppo_lib.identity`): a run whose identity already has every round in the bank
is a no-op ("already trained: ..."), a partly trained one resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seppo_lib.config import SeppoConfig
from seppo_lib.data.shards import DATASET_JSON
from seppo_lib.identity import already_trained_line, resolve
from seppo_lib.methods import method_spec
from seppo_lib.steps import prepare_data, sample_reference, train_round
from seppo_lib.steps.common import open_bank, run_dir
from seppo_lib.tracking import RunLogger

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    data_dir: Path
    bank_uri: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    already_trained: str | None = None  # the "already trained: <run id> (...)" line of a no-op run

    @property
    def final_checkpoint(self) -> str:
        return self.rounds[-1]["checkpoint"]


def round_dir(cfg: SeppoConfig, round_idx: int) -> Path:
    return run_dir(cfg) / "rounds" / f"round-{round_idx:03d}"


def ensure_prepared(cfg: SeppoConfig) -> Path:
    data_dir = run_dir(cfg) / "data"
    if not (data_dir / DATASET_JSON).is_file() or open_bank(cfg, require_initial=False).entry_for_round(0) is None:
        prepare_data.run(cfg, data_dir)
    return data_dir


def run_rounds(
    cfg: SeppoConfig,
    run_logger: RunLogger | None = None,
    *,
    first: int = 1,
    last: int | None = None,
) -> RunSummary:
    """Run rounds first..last (default: all); committed rounds are skipped, so reruns resume."""
    cfg = resolve(cfg)
    last = cfg.train.n_rounds if last is None else last
    done = committed_rounds(cfg, first, last)
    if done is not None:
        line = already_trained_line(cfg)
        logger.info(line)
        return RunSummary(cfg.run_id, run_dir(cfg) / "data", open_bank(cfg, require_initial=False).uri, done, line)
    data_dir = ensure_prepared(cfg)
    summary = RunSummary(cfg.run_id, data_dir, open_bank(cfg).uri)
    for k in range(first, last + 1):
        refs: list[str | Path] = []
        if method_spec(cfg.train.method).needs_samples and open_bank(cfg).entry_for_round(k, include_removed=True) is None:
            for shard in range(cfg.sampling.n_shards):
                out = round_dir(cfg, k) / f"refs-{shard:03d}"
                sample_reference.run(cfg, data_dir, k, out, shard, cfg.sampling.n_shards)
                refs.append(out)
        summary.rounds.append(train_round.run(cfg, data_dir, k, refs or None, run_logger))
    return summary


def committed_rounds(cfg: SeppoConfig, first: int, last: int) -> list[dict[str, Any]] | None:
    """The round results of rounds first..last when every one is committed (nothing to train), else None."""
    bank = open_bank(cfg, require_initial=False)
    entries = [bank.entry_for_round(k, include_removed=True) for k in range(first, last + 1)]
    if bank.entry_for_round(0) is None or any(e is None for e in entries):
        return None
    return [{"round": k, "checkpoint": e.id, "step": e.step, "skipped": True, "bank_uri": bank.uri, "metrics": {}}
            for k, e in zip(range(first, last + 1), entries, strict=True) if e is not None]  # fmt: skip
