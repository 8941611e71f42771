"""Registries of what a world plugs into the core: data sources, prompt sets, scorers and the video world.

The core names these only through here and never imports `seppo_lib.world`: the first lookup (or registration)
loads the plugins once per process: the built-in world (`BUILTIN_PLUGINS`: `seppo_lib.world.registration`), then
every installed `seppo.plugins` entry point (a module, imported, or a function, called). A user's plugin registers
the same way the built-in world does (docs/plugins.md):

    from seppo_lib import plugins

    plugins.prompt_sets.register("builtin:my-prompts", plugins.PromptSet(lambda: ["a cat", "a dog"]))

- `data_sources`: `builtin:<name>` of `data.source` -> `DataSource` (generated training data);
- `prompt_sets`: `builtin:<name>` of `eval.prompts` -> `PromptSet`;
- `scorers`: image scorer names of `eval.scorers` that need no model weights -> `ScorerPlugin` (the weight-based
  scorers pickscore, clip, ... are the core's own: `seppo_lib.evaluation.scorers`);
- `video_worlds`: the ground truth behind `world_motion`, the reference clips and `world_video_accuracy`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from seppo_lib.errors import ConfigError, DataError, SeppoError

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "seppo.plugins"
#: Modules whose import registers the built-in pieces (loaded before the entry points).
BUILTIN_PLUGINS: tuple[str, ...] = ("seppo_lib.world.registration",)
VIDEO_WORLD = "builtin:world-video"

T = TypeVar("T")


class PluginError(ConfigError):
    """A plugin failed to load or registered a name twice."""


@dataclass(frozen=True)
class SourceOptions:
    """The config settings a generated source may depend on (data.max_rows, paired data for a method that needs pairs, data.num_frames /
    data.frame_stride)."""

    max_rows: int | None
    paired: bool
    num_frames: int
    frame_stride: int


@dataclass(frozen=True)
class DataSource:
    """A generated `data.source`.

    params: the generator's arguments for these options; with the bytes of `code` (files under `code_dir`) they are
      the data version (`seppo_lib.data.sources.builtin_source_version`): the same version, the same data.
    materialize: (params, scratch folder of the run, bank.cache_dir) -> a local folder or parquet file, generated on
      first use.
    video: the source holds clips (evaluation then takes the config for a video model).
    """

    params: Callable[[SourceOptions], dict[str, object]]
    materialize: Callable[[dict[str, object], Path, Path], Path]
    code_dir: Path
    code: tuple[str, ...]
    video: bool = False


@dataclass(frozen=True)
class PromptSet:
    """A named evaluation prompt set: `prompts()` -> the prompts in order; `video`: prompts for a video model."""

    prompts: Callable[[], list[str]]
    video: bool = False


@dataclass(frozen=True)
class ScorerPlugin:
    """An image scorer: `build(path, device, batch_size)` -> an object with `name` and
    `score(images, prompts) -> list[float]` (`seppo_lib.evaluation.scorers.Scorer`); `path` is
    eval.scorer_paths.<name> (None when unset)."""

    build: Callable[[str | None, str, int], Any]


@dataclass(frozen=True)
class VideoWorld:
    """A synthetic video world's ground truth.

    parse: prompt text -> parsed prompt (DataError when the text is not one of the world's prompts);
    score_clips: ((F, H, W, 3) uint8 clips, parsed prompts) -> per clip, 0/1 checks including "all";
    render_clip: (parsed prompt, size, frames, seed) -> the ground-truth clip as RGB PIL frames;
    choose_prompts: (split "train"/"test", n, seed) -> at most n prompt texts of the split, seeded.
    """

    parse: Callable[[str], Any]
    score_clips: Callable[[list[Any], list[Any]], list[dict[str, float]]]
    render_clip: Callable[[Any, int, int, int], list[Any]]
    choose_prompts: Callable[[str, int, int], list[str]]


class Registry(Generic[T]):
    """name -> record of one kind, in registration order; every access loads the plugins first."""

    def __init__(self, kind: str, error: type[SeppoError]) -> None:
        self.kind, self.error = kind, error
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        load_plugins()
        if name in self._items and not replace:
            raise PluginError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The record of `name`; a one-line `error` naming the registered ones otherwise."""
        load_plugins()
        if name not in self._items:
            raise self.error(f"unknown {self.kind} {name!r}; use one of {', '.join(self._items) or '(none registered)'}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        load_plugins()
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._items


data_sources: Registry[DataSource] = Registry("built-in data source", DataError)
prompt_sets: Registry[PromptSet] = Registry("built-in prompt set", DataError)
scorers: Registry[ScorerPlugin] = Registry("scorer", ConfigError)
video_worlds: Registry[VideoWorld] = Registry("video world", DataError)

_state = {"loaded": False}


def load_plugins(modules: Sequence[str] = BUILTIN_PLUGINS) -> None:
    """Import the built-in registrations, then load every `seppo.plugins` entry point; once per process."""
    if _state["loaded"]:
        return
    _state["loaded"] = True  # first: the registrations below call back into the registries
    for module in modules:
        importlib.import_module(module)
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = point.load()
            if callable(loaded):
                loaded()
        except SeppoError:
            raise
        except Exception as err:  # noqa: BLE001 - a broken plugin gets one line naming it
            raise PluginError(
                f"plugin {point.name} ({point.value}) of {PLUGIN_GROUP} failed to load: {type(err).__name__}: {err}"
            ) from None
        logger.debug("loaded plugin %s (%s)", point.name, point.value)
