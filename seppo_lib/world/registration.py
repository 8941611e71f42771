"""The built-in worlds' pieces in the core's registries (`seppo_lib.plugins`): loaded on the first lookup.

- data sources `builtin:world` (exact renders), `builtin:world-video` (clips) and `builtin:world-pickapic`
  (Pick-a-Pic-like pairs of base-model generations, `seppo_lib.world.pickapic`);
- prompt sets `builtin:world-test` / `-train` and `builtin:world-video-test` / `-train`;
- the image scorer `world` (ground truth, no weights) and the video world behind `world_motion`.

Every world module is imported inside the functions: importing this module loads none of them, so training
code that looks up a data source never loads a scorer (`"seppo_lib.world.scorer" not in sys.modules`).
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seppo_lib import plugins
from seppo_lib.data.sources import WORLD_SEED, WORLD_SIZE
from seppo_lib.errors import ConfigError
from seppo_lib.plugins import DataSource, PromptSet, ScorerPlugin, SourceOptions, VideoWorld

if TYPE_CHECKING:
    from PIL import Image

WORLD = Path(__file__).resolve().parent
RENDER = ("grammar.py", "render.py")


# ---- data sources ---------------------------------------------------------------------


def _world_params(o: SourceOptions) -> dict[str, object]:
    return {"split": "train", "n": o.max_rows, "seed": WORLD_SEED, "paired": o.paired, "size": WORLD_SIZE}


def _video_params(o: SourceOptions) -> dict[str, object]:
    from seppo_lib.data.video import frames_needed

    frames = max(2, frames_needed(o.num_frames, o.frame_stride))
    return {"split": "train", "n": o.max_rows, "seed": WORLD_SEED, "size": WORLD_SIZE, "frames": frames}


def _pickapic_params(o: SourceOptions) -> dict[str, object]:
    """Every training prompt, whatever the options: data.max_rows keeps the first labelled rows."""
    return {"split": "train", "seed": WORLD_SEED, "size": WORLD_SIZE}


def _generated_once(folder: Path, generate: Any, params: dict[str, object]) -> Path:
    if not (folder / "metadata.jsonl").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        generate(folder, **params)
    return folder


def _world(params: dict[str, object], scratch: Path, cache_dir: Path) -> Path:
    from seppo_lib.world.generate import generate_dataset

    return _generated_once(scratch / "world-train", generate_dataset, params)


def _world_video(params: dict[str, object], scratch: Path, cache_dir: Path) -> Path:
    from seppo_lib.world.video import generate_video_dataset

    return _generated_once(scratch / f"world-video-train-f{params['frames']}", generate_video_dataset, params)


def _world_pickapic(params: dict[str, object], scratch: Path, cache_dir: Path) -> Path:
    """The parquet folder under `<bank.cache_dir>/builtin-data/` (generated once: ~30 min on 2 CPU cores)."""
    from seppo_lib.world.pickapic import materialize

    return materialize(params, cache_dir)


# ---- the ground-truth scorers ---------------------------------------------------------


class WorldScorer:
    """1.0 when the image shows exactly what its world prompt says, else 0.0 (the "all" check).

    Prompts must be world-grammar captions (e.g. "two red circles"); the per-attribute checks
    are available from :meth:`score_details`.
    """

    name = "world"

    def score_details(self, images: list[Image.Image], prompts: list[str]) -> list[dict[str, float]]:
        """Every check of the world scorer per image (keys include "all")."""
        from seppo_lib.evaluation.scorers.base import check_pairs
        from seppo_lib.world.grammar import parse
        from seppo_lib.world.scorer import score_image

        check_pairs(images, prompts)
        return [
            {key: float(value) for key, value in score_image(image, parse(prompt)).items()}
            for image, prompt in zip(images, prompts, strict=True)
        ]

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float]:
        return [details["all"] for details in self.score_details(images, prompts)]


def _world_scorer(path: str | None, device: str, batch_size: int) -> WorldScorer:
    if path:
        raise ConfigError("the world scorer takes no weights; remove eval.scorer_paths.world")
    return WorldScorer()


def _image_prompts(split: str) -> list[str]:
    from seppo_lib.world.grammar import split_prompts

    return [prompt.text for prompt in split_prompts(split)]  # type: ignore[arg-type]


def _video_prompts(split: str) -> list[str]:
    from seppo_lib.world.video import motion_split

    return [prompt.text for prompt in motion_split(split)]  # type: ignore[arg-type]


def _parse_motion(text: str) -> Any:
    from seppo_lib.world.video import parse_motion

    return parse_motion(text)


def _score_clips(clips: list[Any], prompts: list[Any]) -> list[dict[str, float]]:
    from seppo_lib.world.motion_scorer import score_clips

    return score_clips(clips, prompts)


def _render_clip(prompt: Any, size: int, frames: int, seed: int) -> list[Any]:
    from seppo_lib.world.video import render_clip

    return render_clip(prompt, size, frames, seed)


def _choose_motion_prompts(split: str, n: int, seed: int) -> list[str]:
    """At most `n` prompts of the split (all of a smaller split), in a seeded order."""
    from seppo_lib.world.video import choose_motion_prompts, motion_split

    n = min(n, len(motion_split(split)))  # type: ignore[arg-type]
    return [p.text for p in choose_motion_prompts(split, n, seed)]  # type: ignore[arg-type]


def register() -> None:
    """Register every built-in world piece (this module's import does it once)."""
    plugins.data_sources.register("builtin:world", DataSource(_world_params, _world, WORLD, ("generate.py", *RENDER)))
    plugins.data_sources.register(
        "builtin:world-video", DataSource(_video_params, _world_video, WORLD, ("video.py", *RENDER), video=True)
    )
    # base-model generations labelled by a simulated annotator: the weights make the images
    pickapic_code = ("pickapic.py", "generate.py", *RENDER, "scorer.py",
                     "base_model/unet/diffusion_pytorch_model.safetensors", "base_model/scheduler/scheduler_config.json")  # fmt: skip
    plugins.data_sources.register("builtin:world-pickapic", DataSource(_pickapic_params, _world_pickapic, WORLD, pickapic_code))
    for split in ("test", "train"):
        plugins.prompt_sets.register(f"builtin:world-{split}", PromptSet(partial(_image_prompts, split)))
    for split in ("test", "train"):
        plugins.prompt_sets.register(f"builtin:world-video-{split}", PromptSet(partial(_video_prompts, split), video=True))
    plugins.scorers.register("world", ScorerPlugin(_world_scorer))
    plugins.video_worlds.register(plugins.VIDEO_WORLD, VideoWorld(_parse_motion, _score_clips, _render_clip, _choose_motion_prompts))


register()
