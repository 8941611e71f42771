"""Which scorers fit which models: the cheap eval-config checks shared by validate_config and evaluate.

Imports neither torch nor a model, so the validate_config step can run them in milliseconds.

- Image models: :func:`image_scorers`, per image: the registered ones (``seppo_lib.plugins.scorers``: the
  built-in world's ``world``) and :data:`MODEL_SCORERS`.
- Video models (a video UNet, ``data.format: video`` or a video ``builtin:`` source such as ``builtin:world-video``):
  :data:`CLIP_SCORERS` (per clip: ``world_motion``, ``psnr``, ``ssim``) and :data:`SET_SCORERS`
  (set-level Fréchet distances ``fvd``, ``fid``; lower is better). ``psnr``/``ssim``/``fvd``/``fid``
  compare with *reference clips*: the video world's ground-truth renders of the prompts, or the
  clips of the folder in ``eval.scorer_paths.reference_clips`` matched to prompts by caption.
"""

from __future__ import annotations

import json
from pathlib import Path

from seppo_lib import plugins
from seppo_lib.config import ConfigError, SeppoConfig

#: Image scorers with model weights (seppo_lib.evaluation.scorers builds them).
MODEL_SCORERS: tuple[str, ...] = ("pickscore", "clip", "aesthetic", "hpsv2", "imagereward")
CLIP_SCORERS: tuple[str, ...] = ("world_motion", "psnr", "ssim")
SET_SCORERS: tuple[str, ...] = ("fvd", "fid")
VIDEO_SCORERS: tuple[str, ...] = CLIP_SCORERS + SET_SCORERS
#: The better direction of every video scorer (registry.gate_direction must agree when it gates).
VIDEO_DIRECTION: dict[str, str] = {"world_motion": "higher", "psnr": "higher", "ssim": "higher", "fvd": "lower", "fid": "lower"}
#: Video scorers that compare with reference clips.
REFERENCE_SCORERS: tuple[str, ...] = ("psnr", "ssim", "fvd", "fid")
#: eval.scorer_paths key of a user folder of reference clips (video only; not a scorer).
REFERENCE_KEY = "reference_clips"
VIDEO_MODELS = ("builtin:tiny-random:video", "builtin:tiny-random:motion", "builtin:world-video-base")


def image_scorers() -> tuple[str, ...]:
    """Every image scorer name: the registered ones, then the weight-based ones."""
    return (*plugins.scorers.names(), *MODEL_SCORERS)


def config_is_video(cfg: SeppoConfig) -> bool:
    """True when the config trains a video model: data.format video, a video builtin: source, or a video UNet."""
    source = cfg.data.source
    builtin = source.startswith("builtin:") and source in plugins.data_sources
    if cfg.data.format == "video" or (builtin and plugins.data_sources.get(source).video):
        return True
    model = cfg.model.pretrained
    if model in VIDEO_MODELS:
        return True
    unet = Path(model.removeprefix("file://")).expanduser() / "unet" / "config.json"
    return "://" not in model.removeprefix("file://") and unet.is_file() and unet_config_is_video(unet)


def unet_config_is_video(config_file: Path) -> bool:
    """True when a UNet config.json names a video UNet (anything but UNet2DConditionModel)."""
    try:
        name = json.loads(config_file.read_text()).get("_class_name", "")
    except (OSError, ValueError):
        return False  # unreadable: loading the model reports it
    return bool(name) and name != "UNet2DConditionModel"


def check_eval_config(cfg: SeppoConfig, video: bool) -> None:
    """One-line ConfigError unless eval.* fits an image (`video` False) or video model."""
    scorers, metric = cfg.eval.scorers, cfg.eval.gate_metric
    image = image_scorers()
    valid, other, kind = (VIDEO_SCORERS, image, "video") if video else (image, VIDEO_SCORERS, "image")
    for name in scorers:
        if name in other:
            raise ConfigError(
                f"eval.scorers has {name!r}, {'an image' if video else 'a video'} scorer, but this is "
                f"{'a video' if video else 'an image'} model; {kind} scorers: {', '.join(valid)}"
            )
        if name not in valid:
            raise ConfigError(f"unknown scorer {name!r} in eval.scorers; {kind} scorers: {', '.join(valid)}")
    if metric not in scorers:
        raise ConfigError(
            f"eval.gate_metric={metric!r} is not one of eval.scorers ({', '.join(scorers) or 'none'}); "
            f"set eval.gate_metric to one of them or add {metric!r} to eval.scorers"
        )
    _check_prompts(cfg, video)
    if video:
        _check_video(cfg)


def _check_prompts(cfg: SeppoConfig, video: bool) -> None:
    sets = plugins.prompt_sets
    if cfg.eval.prompts not in sets or sets.get(cfg.eval.prompts).video == video:
        return
    world = "video" if sets.get(cfg.eval.prompts).video else "image"
    fits = [name for name in sets.names() if sets.get(name).video == video]
    raise ConfigError(
        f"eval.prompts={cfg.eval.prompts!r} are {world}-world prompts, but this is {'a video' if video else 'an image'} model; "
        f"use {' or '.join(fits)} or a prompt file"
    )


def _check_video(cfg: SeppoConfig) -> None:
    ev, direction = cfg.eval, cfg.registry.gate_direction
    if VIDEO_DIRECTION[ev.gate_metric] != direction:
        raise ConfigError(
            f"eval.gate_metric={ev.gate_metric} is {VIDEO_DIRECTION[ev.gate_metric]}-is-better but "
            f"registry.gate_direction={direction}; set registry.gate_direction={VIDEO_DIRECTION[ev.gate_metric]}"
        )
    allowed = [n for n in SET_SCORERS if n in ev.scorers] + ([REFERENCE_KEY] if set(REFERENCE_SCORERS) & set(ev.scorers) else [])
    for key in ev.scorer_paths:
        if key not in allowed:
            raise ConfigError(
                f"eval.scorer_paths.{key} is not used with scorers {', '.join(ev.scorers)}; video scorer paths: "
                f"fvd / fid (a feature extractor folder, with that scorer listed), {REFERENCE_KEY} (with psnr, ssim, fvd or fid)"
            )
    if "world_motion" in ev.scorers and cfg.data.num_frames < 2:
        raise ConfigError(f"world_motion checks motion and needs data.num_frames >= 2, got {cfg.data.num_frames}")
    for name in SET_SCORERS:
        if name in ev.scorers and not ev.scorer_paths.get(name):
            model = "a VideoMAE model" if name == "fvd" else "a CLIP vision / ViT / DINOv2 / SigLIP model"
            raise ConfigError(
                f"the {name} scorer needs a local feature extractor: set eval.scorer_paths.{name} to {model} folder "
                "(config.json + model.safetensors; see docs/metrics.md)"
            )
