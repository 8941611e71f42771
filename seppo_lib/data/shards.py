"""Precomputed latent shards (written by prepare_data, read by sampling and training).

A prepared dataset directory holds:

    dataset.json              row count, shard list, latent shape, paired flag, report, md5s
    uncond.safetensors        {"emb": (1, L, D), "cond.<key>": (1, ...)*} the "" caption's conditioning
                              (CFG, caption dropout)
    shard-00000.safetensors   {"latents_w": (n, ...), "latents_l": (n, ...)?, "text_emb": (n, L, D),
                               "cond.<key>": (n, ...)*}
    shard-00000.json          {"captions": [...], "row_ids": [...]}

The conditioning is a families.Conditioning flattened by `to_flat`: its "hidden" tensor under the
legacy "text_emb" ("emb" in uncond), any other key (SDXL "pooled", "time_ids") as "cond.<key>"; a
shard written before families (only "text_emb") reads as {"hidden": text_emb}. The VAE and text
encoder therefore never run in the training loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from seppo_lib.errors import DataError
from seppo_lib.families import Conditioning

DATASET_JSON = "dataset.json"
SHARD_HIDDEN, UNCOND_HIDDEN = "text_emb", "emb"  # where Conditioning.to_flat puts "hidden"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_shard(out_dir: Path, index: int, tensors: dict[str, Tensor], captions: list[str], row_ids: list[str]) -> str:
    name = shard_name(index)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / f"{name}.safetensors"))
    (out_dir / f"{name}.json").write_text(json.dumps({"captions": captions, "row_ids": row_ids}))
    return name


@dataclass(frozen=True)
class Batch:
    latents_w: Tensor
    latents_l: Tensor | None
    cond: Conditioning

    @property
    def text_emb(self) -> Tensor:
        return self.cond.hidden


class LatentDataset:
    """Random access to the rows of a prepared dataset directory (lazy, per shard)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_file = self.root / DATASET_JSON
        if not meta_file.is_file():
            raise DataError(f"{self.root} is not a prepared dataset (no {DATASET_JSON}); run `seppo prepare` first")
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        self.shards: list[str] = self.meta["shards"]
        self.sizes = np.array(self.meta["shard_sizes"], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self._handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def paired(self) -> bool:
        return bool(self.meta["paired"])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["latent_shape"])

    @cached_property
    def uncond(self) -> Conditioning:
        """The conditioning of the "" caption (one row)."""
        with safe_open(str(self.root / "uncond.safetensors"), "pt") as f:
            return Conditioning.from_flat({k: f.get_tensor(k) for k in f.keys()}, UNCOND_HIDDEN)

    @cached_property
    def captions(self) -> list[str]:
        out: list[str] = []
        for name in self.shards:
            out.extend(json.loads((self.root / f"{name}.json").read_text())["captions"])
        return out

    def _handle(self, name: str) -> Any:
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.root / f"{name}.safetensors"), "pt")
        return self._handles[name]

    def _rows(self, key: str, indices: np.ndarray) -> Tensor:
        shard_of = np.searchsorted(self.starts, indices, side="right") - 1
        parts = []
        for idx, shard in zip(indices.tolist(), shard_of.tolist(), strict=True):
            local = idx - int(self.starts[shard])
            parts.append(self._handle(self.shards[shard]).get_slice(key)[local : local + 1])
        return torch.cat(parts)

    def get(self, indices: np.ndarray | list[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range 0..{len(self) - 1}")
        return Batch(
            latents_w=self._rows("latents_w", idx),
            latents_l=self._rows("latents_l", idx) if self.paired else None,
            cond=Conditioning.from_flat({k: self._rows(k, idx) for k in self._cond_keys}, SHARD_HIDDEN),
        )

    @cached_property
    def _cond_keys(self) -> list[str]:
        """The conditioning tensors of the shards (all shards hold the same keys)."""
        keys = self._handle(self.shards[0]).keys()
        return [k for k in keys if k == SHARD_HIDDEN or k.startswith("cond.")]


def round_indices(n_rows: int, seed: int, round_idx: int, per_round: int) -> np.ndarray:
    """Dataset rows consumed by round `round_idx` (1-based), in order.

    Global positions [(k-1)·S, k·S) map through a seeded permutation per epoch, so the
    order depends only on (seed, round) and any process computes the same rows.
    """
    if n_rows <= 0:
        raise DataError("the prepared dataset has no rows")
    positions = np.arange((round_idx - 1) * per_round, round_idx * per_round, dtype=np.int64)
    epochs = positions // n_rows
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng(np.random.SeedSequence([seed, int(epoch), 7])).permutation(n_rows)
        mask = epochs == epoch
        out[mask] = perm[positions[mask] % n_rows]
    return out
