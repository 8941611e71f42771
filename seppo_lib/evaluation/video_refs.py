"""Reference clips of a video evaluation: what PSNR, SSIM, FVD and FID compare the samples with.

Two sources, both made exactly like `prepare_data` makes training clips (`data.num_frames`
frames every `data.frame_stride`-th, short side resized bicubic to `data.resolution`, center
crop), held as 8-bit clips:

- **the built-in video world** (default): sample k (prompt i, seed s) is compared with the
  world's deterministic ground-truth render `render_clip(prompt_i, seed=s)`, drawn at
  `RENDER_SIZE` px (or `data.resolution` if larger), the size the `builtin:world-video`
  training clips are drawn at. The render is *one* correct clip: a sample may be correct with
  another start, size or speed, so PSNR / SSIM measure closeness to the world's clips, while
  `world_motion` checks correctness. Prompts must parse as video-world prompts.
- **a folder** (`eval.scorer_paths.reference_clips`: local, file:// or s3://) in the video data
  layout (`metadata.jsonl` lines {"file_name", "caption"}, GIFs, frame folders, or MP4 / WebM
  with PyAV): each prompt is matched with the first clip whose caption equals it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seppo_lib import plugins
from seppo_lib.config import SeppoConfig
from seppo_lib.errors import DataError
from seppo_lib.evaluation.generate import EvalSample
from seppo_lib.evaluation.scorer_choices import REFERENCE_KEY

logger = logging.getLogger(__name__)

#: Render size of the video world's reference clips (= steps.prepare_data.WORLD_SIZE, tested).
RENDER_SIZE = 32
WORLD_SOURCE = "builtin:world-video ground-truth renders"


@dataclass(frozen=True)
class References:
    """uint8 reference clips (N, 3, F, H, W), row k for plan entry k, and which rows form the reference set."""

    clips: Tensor
    set_rows: list[int]  # the reference set of FVD / FID (each distinct reference once)
    source: str

    def reference_set(self) -> Tensor:
        return self.clips[self.set_rows]


def to_uint8(pixels: Tensor) -> Tensor:
    """Pixels in [-1, 1] (`preprocess_clip`) -> uint8, same layout."""
    return ((pixels.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def parse_world_prompts(plan: Sequence[EvalSample]) -> list[Any]:
    """The video-world prompt of every plan entry; a one-line DataError names the first that is not one."""
    parse = plugins.video_worlds.get(plugins.VIDEO_WORLD).parse
    parsed = []
    for e in plan:
        try:
            parsed.append(parse(e.prompt))
        except DataError as err:
            raise DataError(
                f"eval.prompts: prompt {e.prompt_index} ({err}); world_motion and the world's reference clips need "
                f"video-world prompts (builtin:world-video-test), or set eval.scorer_paths.{REFERENCE_KEY} for psnr/ssim/fvd/fid"
            ) from None
    return parsed


def world_references(cfg: SeppoConfig, plan: Sequence[EvalSample]) -> References:
    """The video world's ground-truth clip of every plan entry, seeded by the entry's seed."""
    from seppo_lib.data.prepare import preprocess_clip
    from seppo_lib.data.video import frames_needed

    render_clip = plugins.video_worlds.get(plugins.VIDEO_WORLD).render_clip
    d = cfg.data
    size, frames = max(RENDER_SIZE, d.resolution), frames_needed(d.num_frames, d.frame_stride)
    clips = []
    for prompt, e in zip(parse_world_prompts(plan), plan, strict=True):
        frames_of_clip = render_clip(prompt, size, max(2, frames), e.seed)[:: d.frame_stride][: d.num_frames]
        clips.append(to_uint8(preprocess_clip(frames_of_clip, d.resolution)))
    return References(torch.stack(clips), list(range(len(plan))), WORLD_SOURCE)


def folder_references(cfg: SeppoConfig, plan: Sequence[EvalSample], root: Path, shown: str) -> References:
    """Reference clips from a video folder, matched to prompts by caption (first match)."""
    from seppo_lib.data.prepare import preprocess_clip
    from seppo_lib.data.video import read_clip

    by_caption = _captions(root, shown)
    per_prompt: dict[int, Tensor] = {}
    for e in plan:
        if e.prompt_index in per_prompt:
            continue
        name = by_caption.get(e.prompt.strip())
        if name is None:
            raise DataError(
                f"{shown}: no reference clip has the caption of prompt {e.prompt_index} {e.prompt!r} (matched by caption)"
            )
        try:
            clip = read_clip(root / name, cfg.data.num_frames, cfg.data.frame_stride)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{shown}/{name}: cannot read the reference clip ({type(err).__name__}: {err})") from None
        per_prompt[e.prompt_index] = to_uint8(preprocess_clip(clip, cfg.data.resolution))
    clips = torch.stack([per_prompt[e.prompt_index] for e in plan])
    rows = [k for k, e in enumerate(plan) if e.sample == 0]
    logger.info("reference clips: %d from %s", len(rows), shown)
    return References(clips, rows, shown)


def _captions(root: Path, shown: str) -> dict[str, str]:
    """caption -> file_name of a video folder's metadata.jsonl (first occurrence wins)."""
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise DataError(f"{shown} has no metadata.jsonl; reference clips need lines {{\"file_name\": ..., \"caption\": ...}}")
    out: dict[str, str] = {}
    for number, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, caption = str(row["file_name"]), str(row["caption"]).strip()
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{shown}/metadata.jsonl: line {number} is not {{\"file_name\": ..., \"caption\": ...}}") from None
        out.setdefault(caption, name)
    return out


def build_references(cfg: SeppoConfig, plan: Sequence[EvalSample]) -> References:
    """Reference clips from eval.scorer_paths.reference_clips when set, else the video world's renders."""
    location = cfg.eval.scorer_paths.get(REFERENCE_KEY)
    if not location:
        return world_references(cfg, plan)
    from seppo_lib.evaluation.scorers.base import resolve_location

    local = location.removeprefix("file://")
    if not local.startswith("s3://") and not Path(local).expanduser().is_dir():
        raise DataError(
            f"eval.scorer_paths.{REFERENCE_KEY}={location!r} is not a folder; point it at a folder of clips with metadata.jsonl"
        )
    root = resolve_location(REFERENCE_KEY, location, cache_dir=Path(cfg.bank.cache_dir) / "scorers", storage=cfg.storage)
    if not root.is_dir():
        raise DataError(f"eval.scorer_paths.{REFERENCE_KEY}={location!r} is not a folder of clips with metadata.jsonl")
    return folder_references(cfg, plan, root, location)
