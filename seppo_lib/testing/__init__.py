"""Test support shipped with the library: tiny random models (`builtin:tiny-random[:variant]`, sd3 included)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from seppo_lib.errors import ModelError
from seppo_lib.model_uris import BuiltinModel, register_builtin
from seppo_lib.testing.tiny_models import VARIANTS, build_tiny_model, register_variant
from seppo_lib.testing.tiny_sd3 import write_tiny_sd3

register_variant("sd3", write_tiny_sd3)  # builtin:tiny-random:sd3 (SD3Transformer2DModel, flow matching)

NAME = "tiny-random"
BUILDER_FILES = ("tiny_models.py", "tiny_sd3.py")  # the code the tiny models' weights are a function of


def tiny_variant(uri: str) -> str:
    """'builtin:tiny-random[:variant]' -> the variant (default pixel); ModelError for an unknown one."""
    parts = uri.split(":")
    variant = parts[2] if len(parts) == 3 else "pixel"
    if parts[:2] != ["builtin", NAME] or len(parts) > 3 or variant not in VARIANTS:
        raise ModelError(f"unknown built-in model {uri!r}; known variants: builtin:{NAME}[:{'|'.join(VARIANTS)}]")
    return variant


def _resolve(uri: str, cache_dir: Path) -> Path:
    variant = tiny_variant(uri)
    dest = cache_dir / f"tiny-random-{variant}"
    if not any((dest / d / "config.json").is_file() for d in ("unet", "transformer")):
        build_tiny_model(dest, variant=variant)
    return dest


def _version(uri: str) -> str:
    """The builder's code identifies a tiny model (its weights are a function of it and the seed)."""
    sources = b"".join(Path(__file__).with_name(name).read_bytes() for name in BUILDER_FILES)
    code = hashlib.sha256(sources).hexdigest()[:16]
    return f"builder:tiny-random:{tiny_variant(uri)}@{code}"


register_builtin(BuiltinModel(NAME, f"builtin:{NAME}[:{'|'.join(VARIANTS)}]", _resolve, _version))

__all__ = ["VARIANTS", "build_tiny_model", "tiny_variant"]
