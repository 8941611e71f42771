"""Bank checkpoint size of LoRA vs full fine-tuning for the SD1.5 UNet architecture (random weights, no download).

Builds SD1.5's UNet from its config (seppo_lib.bench.speed_models.SD15_UNET), writes what a full-fine-tuning
checkpoint stores for it (unet/ via save_pretrained, safetensors) and what a LoRA checkpoint stores
(adapter/ via seppo_lib.lora.save_adapter) for each rank, and prints the file sizes. Needs ~7 GB RAM and
~3.5 GB of free disk in the temporary folder; about a minute on 2 CPU cores.

    python scripts/lora_checkpoint_size.py [--ranks 4,8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    from diffusers import UNet2DConditionModel

    from seppo_lib.bench.speed_models import SD15_UNET
    from seppo_lib.config import LoraSettings
    from seppo_lib.lora import inject_adapter, save_adapter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="4,8", help="LoRA ranks (default 4,8: the diffusers LoRA scripts' and DPO script's)")
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        unet = UNet2DConditionModel(**SD15_UNET)
        unet.save_pretrained(Path(tmp) / "full" / "unet", safe_serialization=True)
        full = _size(Path(tmp) / "full")
        print(f"full fine-tuning checkpoint (unet/): {full / 2**20:,.1f} MiB")
        for rank in (int(r) for r in args.ranks.split(",")):
            inject_adapter(unet, LoraSettings(rank=rank, alpha=rank))
            out = save_adapter(unet, Path(tmp) / f"lora{rank}", LoraSettings(rank=rank, alpha=rank), None)
            size = _size(out)
            print(f"LoRA rank {rank} checkpoint (adapter/): {size / 2**20:,.2f} MiB = {size / full:.3%} of full")
            unet.delete_adapters("default")


if __name__ == "__main__":
    main()
