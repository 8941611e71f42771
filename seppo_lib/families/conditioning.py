"""`Conditioning`: a batch of a model family's text conditioning tensors (contract: families/base.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from seppo_lib.errors import ModelError

HIDDEN = "hidden"
FLAT_PREFIX = "cond."


@dataclass(frozen=True, eq=False)
class Conditioning:
    """Text conditioning of a batch: {"hidden": (B, L, D), optional "pooled", "time_ids", ...}, B rows each."""

    tensors: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if HIDDEN not in self.tensors:
            raise ModelError(f"a Conditioning needs a {HIDDEN!r} tensor; got keys {sorted(self.tensors)}")
        sizes = {k: v.shape[0] for k, v in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ModelError(f"conditioning tensors disagree on the batch size: {sizes}")

    @classmethod
    def of(cls, cond: Tensor | Conditioning) -> Conditioning:
        """`cond` itself, or a bare (B, L, D) tensor as {"hidden": cond}."""
        return cond if isinstance(cond, Conditioning) else cls({HIDDEN: cond})

    @property
    def hidden(self) -> Tensor:
        return self.tensors[HIDDEN]

    def get(self, key: str) -> Tensor | None:
        return self.tensors.get(key)

    def __getitem__(self, key: str) -> Tensor:
        return self.tensors[key]

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    def _map(self, fn: Any) -> Conditioning:
        return Conditioning({k: fn(v) for k, v in self.tensors.items()})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        """On `device`; floating tensors cast to `dtype` (integer ones keep theirs)."""
        return self._map(lambda v: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else None))

    def rows(self, index: Any) -> Conditioning:
        """Rows `index` (a slice, index tensor/array or list) of every tensor."""
        return self._map(lambda v: v[index])

    def repeat(self, reps: int) -> Conditioning:
        """The whole batch `reps` times (rows 0..B-1, 0..B-1, ...), like Tensor.repeat on dim 0."""
        return self._map(lambda v: v.repeat(reps, *([1] * (v.dim() - 1))))

    def repeat_interleave(self, reps: int) -> Conditioning:
        """Each row `reps` times in a row (row 0 x reps, row 1 x reps, ...)."""
        return self._map(lambda v: v.repeat_interleave(reps, dim=0))

    def expand(self, n: int) -> Conditioning:
        """A one-row batch viewed as `n` rows."""
        if len(self) != 1:
            raise ModelError(f"expand needs a one-row conditioning, got {len(self)} rows")
        return self._map(lambda v: v.expand(n, *v.shape[1:]))

    @staticmethod
    def cat(conds: Sequence[Conditioning]) -> Conditioning:
        keys = conds[0].keys()
        if any(c.keys() != keys for c in conds):
            raise ModelError(f"cannot concatenate conditionings with different keys: {[c.keys() for c in conds]}")
        return Conditioning({k: torch.cat([c[k] for c in conds]) for k in keys})

    def where(self, mask: Tensor, other: Conditioning) -> Conditioning:
        """Row i from `other` where mask[i] (other: one row, broadcast, or B rows), else from self."""
        out = {}
        for k, v in self.tensors.items():
            alt = other[k].expand_as(v) if other[k].shape[0] == 1 else other[k]
            out[k] = torch.where(mask.view(-1, *([1] * (v.dim() - 1))), alt, v)
        return Conditioning(out)

    def to_flat(self, hidden_key: str = HIDDEN) -> dict[str, Tensor]:
        """{hidden_key: hidden, "cond.<key>": tensor for every other key} (safetensors-ready)."""
        return {(hidden_key if k == HIDDEN else FLAT_PREFIX + k): v for k, v in self.tensors.items()}

    @classmethod
    def from_flat(cls, tensors: Mapping[str, Tensor], hidden_key: str = HIDDEN) -> Conditioning:
        """Inverse of `to_flat`; keys that are neither `hidden_key` nor "cond.*" are ignored."""
        if hidden_key not in tensors:
            raise ModelError(f"no {hidden_key!r} tensor among {sorted(tensors)}")
        out = {HIDDEN: tensors[hidden_key]}
        out.update({k[len(FLAT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(FLAT_PREFIX)})
        return cls(out)
