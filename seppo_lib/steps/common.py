"""What every step needs: the device, the bank of the run."""

from __future__ import annotations

from pathlib import Path

import torch

from seppo_lib.bank import CheckpointBank
from seppo_lib.config import SeppoConfig
from seppo_lib.errors import CheckpointError


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def open_bank(cfg: SeppoConfig, *, require_initial: bool = True) -> CheckpointBank:
    bank = CheckpointBank.open(cfg.bank.uri, cfg.run_id, Path(cfg.bank.cache_dir), cfg.storage)
    if require_initial and bank.entry_for_round(0) is None:
        raise CheckpointError(f"bank {bank.uri} has no θ_0 (initial); run prepare_data first")
    return bank


def run_dir(cfg: SeppoConfig) -> Path:
    """Local working directory of this run: <workdir>/<run_id>."""
    return Path(cfg.workdir) / cfg.run_id
