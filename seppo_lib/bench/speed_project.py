"""The project's side of `seppo bench speed`: the steps users run, timed (never a copy).

A round is `steps.sample_reference.run` then `steps.train_round.run`, exactly what
`orchestrate.run_rounds` calls (one shard, tracking off). The per-update time comes from the
trainer's own per-update `log_metrics` calls (`UpdateClock`), so it covers everything an update
does (batch assembly, reference swap, forwards, backward, clip, optimizer, finite checks).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seppo_lib.bench.speed_measure import Phase, UpdateClock, flop_count, fresh_accelerate, timed
from seppo_lib.bench.speed_models import BenchModel, Workload
from seppo_lib.config import SeppoConfig, load_config

logger = logging.getLogger(__name__)


@dataclass
class RoundTiming:
    """One timed round: sampling and training phases, the per-update gaps, FLOPs when counted."""

    round_idx: int
    sample: Phase
    train: Phase
    updates: list[float]
    sample_flops: int = 0
    train_flops: int = 0
    compiles: int = 0

    @property
    def seconds(self) -> float:
        return self.sample.seconds + self.train.seconds

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> RoundTiming:
        """The timing `as_dict` wrote (FLOPs are kept per side, not per round)."""
        return cls(row["round"], Phase(row["sample_s"], row["sample_peak_bytes"]), Phase(row["train_s"], row["train_peak_bytes"]),
                   list(row["update_s"]), compiles=row.get("compiles", 0))  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {"round": self.round_idx, "sample_s": self.sample.seconds, "train_s": self.train.seconds,
                "round_s": self.seconds, "update_s": self.updates, "sample_peak_bytes": self.sample.peak_bytes,
                "train_peak_bytes": self.train.peak_bytes, "compiles": self.compiles}  # fmt: skip


def project_config(model: BenchModel, work: Path, w: Workload, precision: str, overrides: tuple[str, ...] = ()) -> SeppoConfig:
    """SePPO (sign criterion, uniform reference) on the built-in world with the workload's shapes.

    `bank.run_id` is fixed, so ablation switches (which change the config hash) continue the same
    bank and data: every variant trains the next round of one run."""
    mixed = "no" if precision == "fp32" else precision
    base = [
        f"name=bench-{model.name}", f"workdir={work / 'project'}", f"model.pretrained={model.uri(work)}",
        "data.source=builtin:world", f"data.resolution={w.resolution}", f"data.max_rows={max(w.pairs, 8)}",
        f"data.shard_size={max(w.pairs, 8)}", f"data.max_caption_tokens={w.caption_tokens}", "data.caption_dropout=0.1",
        "train.method=seppo", "train.criterion=sign", "train.beta=500", "train.lr=1e-5", "train.n_rounds=1000",
        f"train.updates_per_round={w.updates}", f"train.batch_size={w.batch_size}", f"train.mixed_precision='{mixed}'",
        f"bank.uri={work / 'project' / 'bank'}", f"bank.cache_dir={work / 'project' / 'cache'}",
        f"bank.run_id=bench-{model.name}", "bank.reference=uniform", "sampling.scheduler=ddim",
        f"sampling.num_inference_steps={w.steps}", f"sampling.guidance_scale={w.guidance}", "sampling.eta=0",
        f"sampling.batch_size={w.sample_batch}", f"sampling.precision={precision}", "tracking.enabled=false",
    ]  # fmt: skip
    return load_config(None, [*base, *overrides])


def prepare(cfg: SeppoConfig) -> Path:
    """The prepared dataset of the bench run (prepare_data, once) and θ_0 in its bank."""
    from seppo_lib.orchestrate import ensure_prepared

    return ensure_prepared(cfg)


def next_round(cfg: SeppoConfig) -> int:
    from seppo_lib.steps.common import open_bank

    return max(e.round for e in open_bank(cfg).entries()) + 1


def project_round(cfg: SeppoConfig, data_dir: Path, device: str, *, count_flops: bool = False, train: bool = True) -> RoundTiming:
    """Run the bank's next round with the real steps; its timing (FLOPs counted when asked: slower).
    `train=False` samples only (the round is not committed, so the next call samples it again)."""
    from seppo_lib.bench.speed_measure import compiles
    from seppo_lib.orchestrate import round_dir
    from seppo_lib.steps import sample_reference, train_round

    fresh_accelerate()
    k = next_round(cfg)
    refs = round_dir(cfg, k) / "refs-000"
    clock = UpdateClock(device)
    before = compiles()
    flops = {"sample": 0, "train": 0}

    def sample() -> None:
        if not count_flops:
            sample_reference.run(cfg, data_dir, k, refs, 0, 1)
            return
        with flop_count() as total:
            sample_reference.run(cfg, data_dir, k, refs, 0, 1)
        flops["sample"] = total()

    def train_step() -> None:
        if not count_flops:
            train_round.run(cfg, data_dir, k, [refs], clock)
            return
        with flop_count() as total:
            train_round.run(cfg, data_dir, k, [refs], clock)
        flops["train"] = total()

    _, sample_phase = timed(device, sample)
    _, train_phase = timed(device, train_step) if train else (None, Phase(0.0, 0))
    shutil.rmtree(refs, ignore_errors=True)
    return RoundTiming(k, sample_phase, train_phase, clock.intervals(), flops["sample"], flops["train"], compiles() - before)
