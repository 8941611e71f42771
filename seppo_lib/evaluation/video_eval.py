"""The evaluate step for text-to-video models: sample clips, score them per clip and as sets, report.

Candidate and champion are sampled with `video_metrics.sample_clips` on the same prompts and
per-sample seeds (`eval_plan`) at `data.resolution` x `data.num_frames`, kept as 8-bit clips.

Scorers (`eval.scorers`, see `scorer_choices`):

- per clip, through the same statistics as images (bootstrap CI, paired win rate, gate):
  ``world_motion`` (the video world's ground-truth check "all"; per-attribute means are
  reported too), ``psnr`` (dB, capped at `PSNR_CAP_DB` so identical clips keep statistics
  finite) and ``ssim`` against the reference clips (`video_refs`);
- set-level, lower is better, no per-prompt statistics: ``fvd`` / ``fid`` (Fréchet distance of
  VideoMAE clip features / image-model frame features, `eval.scorer_paths.fvd` / ``.fid``)
  between each model's clips and the reference set, in metrics.json's "set_metrics".

Files: metrics.json, per_prompt.csv (one row per clip), grid.gif (per row: candidate,
champion and, when there are references, the reference clip; rows = the first rows of
per_prompt.csv), hist_<scorer>.png (accuracy_<scorer>.png for a 0/1 scorer) per per-clip scorer, training_curves.png with a history.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seppo_lib.config import ConfigError, SeppoConfig
from seppo_lib.evaluation.generate import EvalSample, sample_model
from seppo_lib.evaluation.plots import GRID_ROWS
from seppo_lib.evaluation.report import build_metrics, finish_report, start_report
from seppo_lib.evaluation.scorer_choices import CLIP_SCORERS, REFERENCE_SCORERS, SET_SCORERS
from seppo_lib.evaluation.video_metrics import (
    FeatureExtractor,
    embed,
    frechet_distance,
    psnr,
    sample_clips,
    ssim,
    summarize,
    world_scores,
    write_grid,
)
from seppo_lib.evaluation.video_refs import References, build_references, parse_world_prompts
from seppo_lib.models import DiffusionModel
from seppo_lib.progress import Progress

logger = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0
SCORE_BATCH = 16  # clips per PSNR / SSIM / world-scorer call
GRID_PIXELS = 128  # grid.gif cells are upscaled (nearest) to at least this many pixels
WORLD_MIN_SIZE = 20  # the motion scorer is validated from 20 px (docs/video.md)
Scores = dict[str, list[float]]
ModelRef = tuple[str, str, Path]  # (role, URI, local folder)


def generate_clips(
    model: DiffusionModel, cfg: SeppoConfig, plan: list[EvalSample], on_batch: Callable[[int], None] | None = None
) -> Tensor:
    """One uint8 clip (3, F, H, W) per plan entry, `sampling.batch_size` entries per call."""
    d, out = cfg.data, []
    for start in range(0, len(plan), cfg.sampling.batch_size):
        chunk = plan[start : start + cfg.sampling.batch_size]
        clips = sample_clips(
            model, [e.prompt for e in chunk], [e.seed for e in chunk], cfg.sampling,
            resolution=d.resolution, frames=d.num_frames, max_tokens=d.max_caption_tokens,
        )  # fmt: skip
        out.append((clips.clamp(0, 1) * 255).round().to(torch.uint8))
        if on_batch:
            on_batch(len(chunk))
    return torch.cat(out)


def build_extractors(cfg: SeppoConfig, device: str) -> dict[str, FeatureExtractor]:
    """The FVD / FID feature extractors of eval.scorers (checked for the right kind before any sampling)."""
    from seppo_lib.evaluation.scorers.base import resolve_location

    out = {}
    for name in (n for n in cfg.eval.scorers if n in SET_SCORERS):
        location = cfg.eval.scorer_paths.get(name)
        path = resolve_location(name, location, cache_dir=Path(cfg.bank.cache_dir) / "scorers", storage=cfg.storage)
        extractor = FeatureExtractor(path, device=device)
        if extractor.kind != ("video" if name == "fvd" else "image"):
            what = "an image model (embeds frames)" if extractor.kind == "image" else "a video model (embeds clips)"
            model = "a VideoMAE model" if name == "fvd" else "an image model (CLIP vision, ViT, DINOv2, SigLIP)"
            raise ConfigError(f"eval.scorer_paths.{name}={location!r} is {what}; {name} needs {model}")
        if extractor.num_frames and extractor.num_frames != cfg.data.num_frames:
            raise ConfigError(
                f"eval.scorer_paths.{name}={location!r} embeds {extractor.num_frames}-frame clips but data.num_frames="
                f"{cfg.data.num_frames}; use an extractor for {cfg.data.num_frames} frames or change data.num_frames"
            )
        out[name] = extractor
    return out


def per_clip_scores(
    clips: Tensor, plan: Sequence[EvalSample], refs: References | None, names: Sequence[str]
) -> tuple[Scores, list[dict[str, float]]]:
    """Per-clip scores of `names` (world_motion, psnr, ssim) and the world scorer's per-attribute checks."""
    if refs is None and {"psnr", "ssim"} & set(names):
        raise ValueError("psnr and ssim need reference clips; pass refs")
    scores: Scores = {name: [] for name in names}
    details: list[dict[str, float]] = []
    for start in range(0, len(plan), SCORE_BATCH):
        x = clips[start : start + SCORE_BATCH].float() / 255
        if "world_motion" in scores:
            found = world_scores(x, [e.prompt for e in plan[start : start + len(x)]])
            details += found
            scores["world_motion"] += [d["all"] for d in found]
        if refs is not None:
            r = refs.clips[start : start + len(x)].float() / 255
            if "psnr" in scores:
                scores["psnr"] += psnr(x, r).clamp(max=PSNR_CAP_DB).tolist()
            if "ssim" in scores:
                scores["ssim"] += ssim(x, r).tolist()
    return scores, details


def set_level(
    extractors: dict[str, FeatureExtractor], clips: Sequence[Tensor], refs: References, paths: dict[str, str]
) -> dict[str, Any]:
    """FVD / FID of candidate and champion clips against the reference set (lower is better)."""
    reference = refs.reference_set()
    out = {}
    for name, extractor in extractors.items():
        ref_features = embed(extractor, reference)
        cand, champ = (frechet_distance(embed(extractor, c), ref_features) for c in clips)
        out[name] = {
            "candidate": cand, "champion": champ, "direction": "lower", "n_clips": len(clips[0]),
            "n_reference": len(reference), "extractor": paths[name],
        }  # fmt: skip
    return out


def _check_plan(cfg: SeppoConfig, plan: Sequence[EvalSample]) -> None:
    names = set(cfg.eval.scorers)
    if names & set(SET_SCORERS) and len(plan) < 2:
        raise ConfigError(
            f"fvd / fid need at least 2 clips per model, got {len(plan)}; raise eval.max_prompts or eval.images_per_prompt"
        )
    if "world_motion" in names:
        parse_world_prompts(plan)
        if cfg.data.resolution < WORLD_MIN_SIZE:
            logger.warning(
                "world_motion at %d px: the motion scorer is validated from %d px, so smaller clips score ~0 "
                "(set data.resolution >= %d for meaningful world_motion scores)",
                cfg.data.resolution, WORLD_MIN_SIZE, WORLD_MIN_SIZE,
            )  # fmt: skip


def evaluate_video(
    cfg: SeppoConfig,
    plan: list[EvalSample],
    models: Sequence[ModelRef],
    output_dir: str | Path,
    history: list[tuple[int, dict[str, float]]] | None,
    device: torch.device,
) -> dict[str, Any]:
    """Sample and score candidate and champion (`models`, in that order); write the report; return metrics.json."""
    _check_plan(cfg, plan)
    refs = build_references(cfg, plan) if set(cfg.eval.scorers) & set(REFERENCE_SCORERS) else None
    extractors = build_extractors(cfg, str(device))
    bar: Progress[None] = Progress(total=2 * len(plan), desc="evaluate", unit="clip")
    clips = []
    for role, uri, folder in models:
        bar.set_description(f"evaluate: sample {role}")
        clips.append(sample_model(uri, str(folder), cfg, plan, device, bar.update, generate=generate_clips))
    bar.close()
    names = [n for n in cfg.eval.scorers if n in CLIP_SCORERS]
    (cand, cand_details), (champ, champ_details) = (per_clip_scores(c, plan, refs, names) for c in clips)
    sets = set_level(extractors, clips, refs, cfg.eval.scorer_paths) if extractors and refs is not None else None
    metrics = build_metrics(
        candidate_uri=models[0][1], champion_uri=models[1][1], candidate=cand, champion=champ,
        n_prompts=plan[-1].prompt_index + 1, images_per_prompt=cfg.eval.images_per_prompt,
        gate=(cfg.eval.gate_metric, cfg.registry.gate_direction, cfg.registry.min_margin),
        n_boot=cfg.eval.bootstrap, seed=cfg.eval.seed, config_hash=cfg.config_hash(), set_metrics=sets,
    )  # fmt: skip
    metrics["video"] = _video_block(cfg, refs, cand_details, champ_details)
    write_video_report(output_dir, metrics, plan, clips, refs, (cand, champ), history)
    return metrics


def _video_block(
    cfg: SeppoConfig, refs: References | None, cand: list[dict[str, float]], champ: list[dict[str, float]]
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "frames": cfg.data.num_frames, "frame_stride": cfg.data.frame_stride, "resolution": cfg.data.resolution,
        "reference_clips": refs.source if refs is not None else None,
        "grid_columns": ["candidate", "champion"] + (["reference"] if refs is not None else []),
    }  # fmt: skip
    if cand:
        block["world_motion_attributes"] = {"candidate": summarize(cand), "champion": summarize(champ)}
    return block


def write_video_report(
    output_dir: str | Path,
    metrics: dict[str, Any],
    plan: Sequence[EvalSample],
    clips: Sequence[Tensor],
    refs: References | None,
    scores: tuple[Scores, Scores],
    history: list[tuple[int, dict[str, float]]] | None = None,
) -> list[Path]:
    """metrics.json, per_prompt.csv, grid.gif, hist_<scorer>.png or accuracy_<scorer>.png (and training_curves.png); returns the files."""
    out, files = start_report(output_dir, metrics, plan, scores)
    rows = min(GRID_ROWS, len(plan))
    columns = [clips[0][:rows], clips[1][:rows]] + ([refs.clips[:rows]] if refs is not None else [])
    tiles = torch.stack(columns, dim=1).flatten(0, 1).float() / 255  # row-major: candidate, champion[, reference]
    side = clips[0].shape[-1]
    files.append(write_grid(tiles, out / "grid.gif", ncols=len(columns), scale=max(1, math.ceil(GRID_PIXELS / side))))
    return finish_report(out, files, scores, history)
