"""The `builtin:<name>[:<variant>]` model URIs: a registry of resolvers (core knows none by name).

A provider module registers its models on import with `register_builtin`: the world
(seppo_lib/world/builtin.py: `builtin:world-base`, `builtin:world-video-base`) and the testing
module (seppo_lib/testing: `builtin:tiny-random[:variant]`). PROVIDERS lists those modules; they are
imported on the first look-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seppo_lib.errors import ModelError

PREFIX = "builtin:"
PROVIDERS = ("seppo_lib.world.builtin", "seppo_lib.testing")


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model name: `resolve(uri, cache_dir)` gives its folder; `version(uri)` an identity
    string for content that is built rather than shipped (None: hash the folder)."""

    name: str
    usage: str  # how the URI is written, for error messages, e.g. "builtin:tiny-random[:pixel|vae]"
    resolve: Callable[[str, Path], Path]
    version: Callable[[str], str | None] = lambda uri: None


BUILTINS: dict[str, BuiltinModel] = {}


def register_builtin(model: BuiltinModel) -> BuiltinModel:
    BUILTINS[model.name] = model
    return model


def builtin_model(uri: str) -> BuiltinModel:
    """The registered model of a `builtin:` URI; ModelError naming the known ones."""
    for module in PROVIDERS:
        importlib.import_module(module)
    name = uri.removeprefix(PREFIX).split(":", 1)[0]
    if not uri.startswith(PREFIX) or name not in BUILTINS:
        raise ModelError(f"unknown built-in model {uri!r}; known: {', '.join(m.usage for m in BUILTINS.values())}")
    return BUILTINS[name]


def resolve_builtin(uri: str, cache_dir: str | Path) -> Path:
    return builtin_model(uri).resolve(uri, Path(cache_dir))
