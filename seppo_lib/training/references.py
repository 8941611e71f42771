"""A round's plan (rows, reference schedule) and the reference samples made for it.

Slot j of round k (0 <= j < S = U·B_eff) is the j-th pair the round trains on: dataset
row `rows[j]`, update `j // B_eff`, reference checkpoint `ref_ids[j // B_eff]`. Sampling
and training compute the same plan independently from (config, bank, round).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from seppo_lib.bank import CheckpointBank
from seppo_lib.config import SeppoConfig
from seppo_lib.data.shards import round_indices
from seppo_lib.errors import DataError
from seppo_lib.methods import method_spec
from seppo_lib.reference import reference_schedule

REFS_TENSORS = "references.safetensors"
REFS_JSON = "references.json"


@dataclass(frozen=True)
class RoundPlan:
    round_idx: int
    rows: np.ndarray  # (S,) dataset row per slot
    bank_ids: list[str]  # θ_0..θ_{k-1} at round start
    ref_ids: list[str]  # (U,) reference per update; [] for sft
    effective_batch: int
    needs_samples: bool
    noise_scheduler: Any
    family: Any = None  # the model family of θ_0 (families.ModelFamily): denoiser folder, noise process

    def slot_ref(self, slot: int) -> str:
        return self.ref_ids[slot // self.effective_batch]


def plan_round(cfg: SeppoConfig, bank: CheckpointBank, round_idx: int, n_rows: int) -> RoundPlan:
    from seppo_lib.families import family_for

    ids = [e.id for e in bank.entries() if e.round < round_idx]
    if not ids:
        raise DataError(f"bank {bank.uri} has no θ_0; prepare the run (seppo prepare / train) first")
    theta0 = bank.fetch(ids[0])
    family = family_for(theta0)
    strategy = cfg.reference_strategy
    ref_ids = (
        reference_schedule(ids, strategy, cfg.bank.reference_resample, cfg.train.updates_per_round, cfg.train.seed, round_idx)
        if strategy
        else []
    )
    return RoundPlan(
        round_idx=round_idx,
        rows=round_indices(n_rows, cfg.train.seed, round_idx, cfg.samples_per_round),
        bank_ids=ids,
        ref_ids=ref_ids,
        effective_batch=cfg.effective_batch,
        needs_samples=method_spec(cfg.train.method).needs_samples,
        noise_scheduler=family.load_noise_scheduler(theta0),
        family=family,
    )


def shard_slots(n_slots: int, shard: int, n_shards: int) -> np.ndarray:
    """Contiguous block of slots that worker `shard` of `n_shards` samples."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard index {shard} out of range 0..{n_shards - 1}")
    return np.array_split(np.arange(n_slots), n_shards)[shard]


def write_references(out_dir: str | Path, round_idx: int, slots: np.ndarray, latents: torch.Tensor, ckpt_ids: list[str]) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.contiguous(), "slots": torch.as_tensor(slots, dtype=torch.int64)}, str(out_dir / REFS_TENSORS))
    (out_dir / REFS_JSON).write_text(json.dumps({"round": round_idx, "slots": slots.tolist(), "ckpt_ids": ckpt_ids}))


class ReferenceSet:
    """The reference samples of one round, gathered from one or more shard directories."""

    def __init__(self, dirs: list[str | Path]) -> None:
        latents, slots, ids, rounds = [], [], [], set()
        for d in dirs:
            d = Path(d)
            if not (d / REFS_JSON).is_file():
                raise DataError(f"{d} holds no reference samples ({REFS_JSON} missing)")
            meta = json.loads((d / REFS_JSON).read_text())
            tensors = load_file(str(d / REFS_TENSORS))
            latents.append(tensors["latents"])
            slots.append(tensors["slots"])
            ids += meta["ckpt_ids"]
            rounds.add(meta["round"])
        if len(rounds) != 1:
            raise DataError(f"reference shards come from different rounds: {sorted(rounds)}")
        self.round_idx = rounds.pop()
        all_slots = torch.cat(slots)
        order = torch.argsort(all_slots)
        self.slots = all_slots[order].numpy()
        self.latents = torch.cat(latents)[order]
        self.ckpt_ids = [ids[i] for i in order.tolist()]

    def check(self, plan: RoundPlan) -> None:
        n = len(plan.rows)
        if self.round_idx != plan.round_idx:
            raise DataError(f"reference samples are for round {self.round_idx}, training round {plan.round_idx}")
        if len(self.slots) != n or not np.array_equal(self.slots, np.arange(n)):
            raise DataError(f"reference samples cover {len(np.unique(self.slots))} of the round's {n} slots (missing shards?)")
        bad = [j for j in range(n) if self.ckpt_ids[j] != plan.slot_ref(j)]
        if bad:
            raise DataError(f"slot {bad[0]} was sampled from {self.ckpt_ids[bad[0]]}, the round's schedule says {plan.slot_ref(bad[0])}")

    def latents_for(self, slots: np.ndarray) -> torch.Tensor:
        return self.latents[torch.as_tensor(slots)]
