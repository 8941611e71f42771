"""LoRA adapters through PEFT (`model.trainable=lora`): inject, save/load adapter-only tensors, swap, merge.

The adapter is PEFT's `LoraConfig` injected with diffusers' `add_adapter` on the denoiser (a UNet, or SD3's
transformer), as diffusers' train_text_to_image_lora.py / train_diffusion_dpo.py / train_dreambooth_lora_sd3.py
do (`init_lora_weights="gaussian"`: A ~ N(0, 1/r), B = 0). The trainable parameters are the LoRA tensors only.

θ_0 is "every adapter tensor zero": with B = 0 the LoRA branch adds exactly 0 to each target layer
(x·Aᵀ·Bᵀ·α/r = 0), so the output is bit-for-bit the base's (tested), and a reference swap to θ_0 is
one in-place zero fill, like any other swap (no graph change under torch.compile). The bank's
θ_0 entry stays the base model itself; a lora checkpoint θ_k holds `adapter/` only:

    adapter/adapter_model.safetensors   PEFT state-dict keys (`get_peft_model_state_dict`), fp32
    adapter/adapter_config.json         {"lora": model.lora, "base": "initial", "base_model": resolved.base_model}

θ_k = the bank's θ_0 (`base`) + adapter_k. Every load is a strict in-place copy (same keys, shapes),
so a reference model or sampler keeps one base denoiser and never reloads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seppo_lib.config import LoraSettings
from seppo_lib.errors import CheckpointError
from seppo_lib.weight_swap import WeightSwap


ADAPTER = "default"  # PEFT adapter name
ADAPTER_DIR = "adapter"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_INFO = "adapter_config.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LoRA file name (save_lora_weights / load_lora_weights)


def peft_config(settings: LoraSettings) -> Any:
    """PEFT LoraConfig of `model.lora`, as the diffusers LoRA scripts build it."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank, lora_alpha=settings.scale_alpha, lora_dropout=settings.dropout,
        init_lora_weights="gaussian", target_modules=list(settings.target_modules),
    )  # fmt: skip


def inject_adapter(unet: torch.nn.Module, settings: LoraSettings, seed: int = 0) -> None:
    """Add the LoRA adapter to `unet` in place (A drawn from `seed`, B = 0: outputs unchanged); the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            unet.add_adapter(peft_config(settings))  # type: ignore[operator]
        except ValueError as err:
            raise CheckpointError(
                f"cannot add a LoRA adapter to {type(unet).__name__}: {str(err).splitlines()[0]} (check model.lora.target_modules)"
            ) from None


def adapter_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters by PEFT state-dict key (the module path without the adapter name)."""
    marker = f".{ADAPTER}."
    params = {n.replace(marker, "."): p for n, p in unet.named_parameters() if ".lora_" in n and marker in n}
    if not params:
        raise CheckpointError(f"{type(unet).__name__} has no LoRA adapter; inject one first (model.trainable=lora)")
    return params


def zero_adapter(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """θ_0's adapter: a zero tensor (CPU, fp32) per adapter parameter of `unet`."""
    return {k: torch.zeros(p.shape) for k, p in adapter_parameters(unet).items()}


@torch.no_grad()
def load_adapter_(unet: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy `tensors` into `unet`'s adapter in place (strict: the same keys and shapes)."""
    params = adapter_parameters(unet)
    if params.keys() != tensors.keys():
        extra, missing = sorted(tensors.keys() - params.keys()), sorted(params.keys() - tensors.keys())
        raise CheckpointError(f"adapter does not fit the model: unexpected {extra[:2]}, missing {missing[:2]} (another model.lora?)")
    for key, p in params.items():
        if tuple(tensors[key].shape) != tuple(p.shape):
            raise CheckpointError(f"adapter tensor {key} has shape {tuple(tensors[key].shape)}, the model {tuple(p.shape)}")
        p.copy_(tensors[key])


def adapter_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors (PEFT `get_peft_model_state_dict`), contiguous fp32 on CPU."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def save_adapter(unet: torch.nn.Module, out_dir: str | Path, settings: LoraSettings, base_model: str | None) -> Path:
    """Write `out_dir`/adapter/ (safetensors + JSON record of the settings and the base it applies to)."""
    from safetensors.torch import save_file

    folder = Path(out_dir) / ADAPTER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(unet), str(folder / ADAPTER_FILE))
    info = {"lora": settings.model_dump(mode="json"), "base": "initial", "base_model": base_model}
    (folder / ADAPTER_INFO).write_text(json.dumps(info, indent=1, sort_keys=True))
    return folder


def is_adapter_checkpoint(ckpt_dir: str | Path) -> bool:
    return (Path(ckpt_dir) / ADAPTER_DIR / ADAPTER_FILE).is_file()


def read_adapter(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], LoraSettings, dict[str, Any]]:
    """(tensors, settings, record) of a lora checkpoint folder."""
    from safetensors.torch import load_file

    folder = Path(ckpt_dir) / ADAPTER_DIR
    try:
        info = json.loads((folder / ADAPTER_INFO).read_text())
        tensors = load_file(str(folder / ADAPTER_FILE))
        settings = LoraSettings.model_validate(info["lora"])
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"unreadable LoRA adapter in {folder}: {str(err).splitlines()[0]}") from None
    return tensors, settings, info


class AdapterSwap(WeightSwap):
    """One base denoiser with an injected adapter whose tensors are replaced in place per bank checkpoint.

    `initial` (θ_0) is the zero adapter; others are read from the checkpoint's adapter/. The last
    `cache_size` checkpoints' tensors stay in host memory (adapters are small).
    """

    def __init__(self, unet: torch.nn.Module, bank: Any, cache_size: int = 8) -> None:
        super().__init__(unet, bank, cache_size)

    def read(self, ckpt_id: str) -> dict[str, torch.Tensor]:
        ckpt_dir = self.bank.fetch(ckpt_id)
        if ckpt_id == "initial":
            return zero_adapter(self.module)
        if is_adapter_checkpoint(ckpt_dir):
            return read_adapter(ckpt_dir)[0]
        raise CheckpointError(f"checkpoint {ckpt_id} of {self.bank.uri} holds no adapter/ (not a model.trainable=lora run?)")

    def apply(self, tensors: dict[str, torch.Tensor]) -> None:
        load_adapter_(self.module, tensors)


def merge_adapter(unet: torch.nn.Module) -> torch.nn.Module:
    """`unet` with the adapter folded into its base weights and the PEFT layers removed (in place)."""
    unet.fuse_lora()  # type: ignore[operator]
    unet.unload_lora()  # type: ignore[operator]
    return unet


def _unet_lora_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from diffusers.utils import convert_state_dict_to_diffusers

    return convert_state_dict_to_diffusers(tensors)  # type: ignore[no-any-return]


# denoiser folder -> the key format its LoRA file uses: the UNet scripts (train_text_to_image_lora.py) convert
# PEFT keys (`lora_A` -> `lora.down`); train_dreambooth_lora_sd3.py saves the transformer's PEFT keys as they are
LORA_FILE_KEYS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "unet": _unet_lora_keys,
    "transformer": dict,
}


def save_diffusers_lora(ckpt_dir: str | Path, dest: str | Path, pipeline_class: str = "StableDiffusionPipeline",
                        denoiser_folder: str = "unet") -> Path:  # fmt: skip
    """Write `dest`/pytorch_lora_weights.safetensors in diffusers' LoRA format (`pipe.load_lora_weights(dest)` reads it):
    `<pipeline_class>.save_lora_weights(<denoiser_folder>_lora_layers=...)`, e.g. unet_lora_layers (SD, SDXL) or
    transformer_lora_layers (StableDiffusion3Pipeline), keys as LORA_FILE_KEYS says."""
    import diffusers

    if denoiser_folder not in LORA_FILE_KEYS:
        raise CheckpointError(f"no diffusers LoRA file format for a {denoiser_folder}/ denoiser; known: {', '.join(LORA_FILE_KEYS)}")
    tensors, settings, _ = read_adapter(ckpt_dir)
    metadata = peft_config(settings).to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])
    getattr(diffusers, pipeline_class).save_lora_weights(
        dest, safe_serialization=True, **{f"{denoiser_folder}_lora_layers": LORA_FILE_KEYS[denoiser_folder](tensors),
                                          f"{denoiser_folder}_lora_adapter_metadata": metadata},
    )  # fmt: skip
    return Path(dest) / LORA_WEIGHTS
