"""The shipped world base models as `builtin:` model URIs (seppo_lib.model_uris)."""

from __future__ import annotations

from pathlib import Path

from seppo_lib.errors import ModelError
from seppo_lib.model_uris import BuiltinModel, register_builtin

BUILTIN_WORLD_BASE = Path(__file__).resolve().parent / "base_model"
BUILTIN_WORLD_VIDEO_BASE = Path(__file__).resolve().parent / "video_base_model"


def _world_base(uri: str, cache_dir: Path) -> Path:
    if uri != "builtin:world-base":
        raise ModelError(f"unknown built-in model {uri!r}; did you mean builtin:world-base?")
    if not (BUILTIN_WORLD_BASE / "unet").is_dir():
        raise ModelError("the built-in world base model is missing; run `seppo world pretrain`")
    return BUILTIN_WORLD_BASE


def _world_video_base(uri: str, cache_dir: Path) -> Path:
    if uri != "builtin:world-video-base":
        raise ModelError(f"unknown built-in model {uri!r}; did you mean builtin:world-video-base?")
    if not (BUILTIN_WORLD_VIDEO_BASE / "unet").is_dir():
        raise ModelError(
            "the built-in video world base model is missing; run "
            f"`python -m seppo_lib.world.video_pretrain --out {BUILTIN_WORLD_VIDEO_BASE}`"
        )
    return BUILTIN_WORLD_VIDEO_BASE


register_builtin(BuiltinModel("world-base", "builtin:world-base", _world_base))
register_builtin(BuiltinModel("world-video-base", "builtin:world-video-base", _world_video_base))
