"""One resident denoiser whose tensors are replaced in place per bank checkpoint (reference models, samplers).

A swap never reloads the module: it copies a checkpoint's tensors into it, so compiled graphs, memory
formats and devices stay as they are. The last `cache_size` checkpoints' tensors stay in host memory,
so alternating between references (`bank.reference_resample=step`) never rereads a file. What a
checkpoint's tensors are and how they are applied is the subclass's: the full denoiser state dict
(`FullSwap`) or a LoRA adapter (`seppo_lib.lora.AdapterSwap`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any

import torch


class WeightSwap(ABC):
    """LRU-cached, in-place swaps of `module`'s tensors to bank checkpoints (subclasses: `read`, `apply`)."""

    def __init__(self, module: torch.nn.Module, bank: Any, cache_size: int) -> None:
        self.module, self.bank, self.cache_size = module, bank, cache_size
        self.cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.current: str | None = None

    @abstractmethod
    def read(self, ckpt_id: str) -> dict[str, torch.Tensor]:
        """The tensors of checkpoint `ckpt_id`, as `apply` takes them."""

    @abstractmethod
    def apply(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy `tensors` into the module in place."""

    def tensors(self, ckpt_id: str) -> dict[str, torch.Tensor]:
        """`ckpt_id`'s tensors, from the cache or read (and cached, evicting the least recently used)."""
        if ckpt_id in self.cache:
            self.cache.move_to_end(ckpt_id)
            return self.cache[ckpt_id]
        tensors = self.read(ckpt_id)
        self.cache[ckpt_id] = tensors
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return tensors

    def use(self, ckpt_id: str) -> torch.nn.Module:
        """`module` holding `ckpt_id`'s weights (a no-op when it already does)."""
        if ckpt_id != self.current:
            self.apply(self.tensors(ckpt_id))
            self.current = ckpt_id
        return self.module


class FullSwap(WeightSwap):
    """Every tensor of the denoiser, from each checkpoint's `<folder>/diffusion_pytorch_model.safetensors`."""

    def __init__(self, module: torch.nn.Module, bank: Any, folder: str, cache_size: int = 4) -> None:
        super().__init__(module, bank, cache_size)
        self.folder = folder

    def read(self, ckpt_id: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.bank.fetch(ckpt_id) / self.folder / "diffusion_pytorch_model.safetensors"))

    def apply(self, tensors: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(tensors, strict=True)
