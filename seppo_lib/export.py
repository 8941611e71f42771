"""Assemble a complete, loadable model folder from a bank checkpoint and its base model.

A bank checkpoint holds only the trained UNet (plus training state); the frozen parts
(scheduler, text encoder, tokenizer, VAE, seppo_model.json) come from the base model.
The exported folder is what evaluation loads and what the registry stores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from seppo_lib.errors import CheckpointError
from seppo_lib.models import resolve_model_dir

FROZEN_PARTS = ("scheduler", "text_encoder", "tokenizer", "vae", "seppo_model.json")


def export_model(checkpoint_dir: str | Path, base_model: str, dest: str | Path, cache_dir: str | Path, lineage: dict[str, str] | None = None) -> Path:
    """Write `dest` = checkpoint's unet/ + the base model's frozen parts (+ lineage.json)."""
    checkpoint_dir, dest = Path(checkpoint_dir), Path(dest)
    if not (checkpoint_dir / "unet" / "config.json").is_file():
        raise CheckpointError(f"{checkpoint_dir} has no unet/ checkpoint to export")
    base = resolve_model_dir(base_model, cache_dir)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(checkpoint_dir / "unet", tmp / "unet")
    for part in FROZEN_PARTS:
        src = base / part
        if src.is_dir():
            shutil.copytree(src, tmp / part)
        elif src.is_file():
            shutil.copy(src, tmp / part)
    (tmp / "lineage.json").write_text(json.dumps({"base_model": base_model, **(lineage or {})}, indent=1, sort_keys=True))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def resolve_model_uri(cfg, uri: str) -> Path:  # type: ignore[no-untyped-def]
    """A loadable model folder for `uri`: `bank:<ckpt_id>` (a checkpoint of this run's bank,
    exported on its base model), or anything `load_model` accepts."""
    from seppo_lib.steps.common import open_bank, run_dir

    if uri.startswith("bank:"):
        ckpt_id = uri[len("bank:"):]
        ckpt_dir = open_bank(cfg).fetch(ckpt_id)
        dest = run_dir(cfg) / "exports" / ckpt_id
        if not (dest / "lineage.json").is_file():
            lineage = {"bank_uri": open_bank(cfg).uri, "checkpoint": ckpt_id, "config_hash": cfg.config_hash()}
            export_model(ckpt_dir, cfg.model.pretrained, dest, cfg.bank.cache_dir, lineage)
        return dest
    return resolve_model_dir(uri, cfg.bank.cache_dir)
