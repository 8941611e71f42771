"""Step evaluate: sample candidate and champion on the same prompts and seeds, score, report.

The champion defaults to the base model `model.pretrained` (the pipeline passes the registry
champion's folder when there is one). Both models are sampled with `cfg.sampling` on
`eval.prompts` with the same per-sample seeds (`eval_plan`).

- **Image models**: images at `data.resolution`, scored by the image scorers of `eval.scorers`
  (`seppo_lib.evaluation.scorers`); report: metrics.json, per_prompt.csv, grid.png,
  hist_<scorer>.png and, with a training history, training_curves.png
  (`seppo_lib.evaluation.report`).
- **Video models** (a video UNet, `data.format: video` or `data.source: builtin:world-video`):
  clips at `data.resolution` x `data.num_frames`, scored per clip by `world_motion`, `psnr`,
  `ssim` and as sets by `fvd` / `fid` against reference clips; the same metrics.json (plus
  "set_metrics" and "video") and per_prompt.csv, grid.gif instead of grid.png
  (`seppo_lib.evaluation.video_eval`).

Both end with the run report, report.md + report.html (`seppo_lib.evaluation.run_report`), in the
evaluation folder and, for a checkpoint of this run (`bank:`), in `<workdir>/<run id>/`; its training
history (and training_curves.png) is `history` when given, else this run's train_round runs in MLflow.

With tracking on, the step is the MLflow child run `evaluate` of the run tree: its metrics, CIs,
win rates, gate tags and the evaluation folder (`seppo_lib.tracking.evaluation`); a step that
raises ends that run and the pipeline's parent run FAILED.

Image scorers on a video model (or the reverse) stop the step before anything is sampled with
a one-line ConfigError. See docs/metrics.md for the statistics and the gate, docs/video.md for
the video scorers and what the reference clips are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from seppo_lib.config import SeppoConfig
from seppo_lib.evaluation.generate import EvalSample, eval_plan, sample_model
from seppo_lib.evaluation.prompts import load_prompts
from seppo_lib.evaluation.report import build_metrics, write_report
from seppo_lib.evaluation.run_report import publish_run_report, run_facts
from seppo_lib.evaluation.scorer_choices import check_eval_config, config_is_video, unet_config_is_video
from seppo_lib.evaluation.scorers import Scorer, build_scorers
from seppo_lib.export import resolve_model_uri
from seppo_lib.identity import resolve
from seppo_lib.progress import Progress
from seppo_lib.steps.common import device
from seppo_lib.tracking.evaluation import tracked_evaluation

logger = logging.getLogger(__name__)

ModelRef = tuple[str, str, Path]  # (role, URI, local folder)


def check_gate_metric(cfg: SeppoConfig, video: bool | None = None) -> None:
    """One-line ConfigError unless eval.scorers fit the model kind (from the config when `video` is None)
    and eval.gate_metric is one of them."""
    check_eval_config(cfg, config_is_video(cfg) if video is None else video)


@tracked_evaluation(check_gate_metric)  # MLflow child run `evaluate`: metrics, CIs, gate tags, the report folder
def run(
    cfg: SeppoConfig,
    candidate: str,
    output_dir: str | Path,
    champion: str | None = None,
    history: list[tuple[int, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """Evaluate `candidate` against `champion` (default: the base model); returns metrics.json's content.

    Model URIs: `bank:<ckpt>`, folders, s3://, builtin:, `models:/NAME@ALIAS` / `models:/NAME/VERSION`.
    """
    check_gate_metric(cfg)
    cfg = resolve(cfg)  # the base model (the default champion) is the run's pinned one
    facts = run_facts(cfg, candidate, history)  # the given history, else this run's training rounds in MLflow
    history = facts.history
    champion_uri = champion or cfg.model.pretrained
    prompts = load_prompts(cfg.eval.prompts, cfg.eval.max_prompts)
    plan = eval_plan(prompts, cfg.eval.images_per_prompt, cfg.eval.seed)
    models = [(role, uri, resolve_model_uri(cfg, uri)) for role, uri in (("candidate", candidate), ("champion", champion_uri))]
    if config_is_video(cfg) or unet_config_is_video(models[0][2] / "unet" / "config.json"):
        from seppo_lib.evaluation.video_eval import evaluate_video

        check_gate_metric(cfg, video=True)
        metrics = evaluate_video(cfg, plan, models, output_dir, history, device())
    else:
        metrics = _evaluate_images(cfg, plan, models, output_dir, history)
    publish_run_report(cfg, candidate, output_dir, facts)  # report.md + report.html (seppo_lib.evaluation.run_report)
    gate = metrics["gate"]
    logger.info(
        "%s %s: candidate %.4g vs champion %.4g -> gate %s",
        gate["metric"], gate["direction"], gate["candidate"], gate["champion"], "passes" if gate["passes"] else "fails",
    )
    return metrics


def _score(
    scorers: dict[str, Scorer], images: list[list[Image.Image]], texts: list[str]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-image scores of candidate and champion (`images`, in that order) by every scorer."""
    scores: list[dict[str, list[float]]] = [{}, {}]
    with Progress[None](total=2 * len(scorers), desc="evaluate: score", unit="scorer") as bar:
        for per_model, imgs in zip(scores, images, strict=True):
            for name, scorer in scorers.items():
                per_model[name] = scorer.score(imgs, texts)
                bar.update()
    return scores[0], scores[1]


def reference_label(cfg: SeppoConfig, champion_uri: str) -> str:
    """What the grid's and plots' reference column is: the base model, or the registry champion."""
    return f"base model ({cfg.model.pretrained})" if champion_uri == cfg.model.pretrained else "champion"


def _evaluate_images(
    cfg: SeppoConfig,
    plan: list[EvalSample],
    models: Sequence[ModelRef],
    output_dir: str | Path,
    history: list[tuple[int, dict[str, float]]] | None,
) -> dict[str, Any]:
    dev: torch.device = device()
    scorers = build_scorers(cfg.eval, str(dev), cache_dir=Path(cfg.bank.cache_dir) / "scorers", storage=cfg.storage)
    bar: Progress[None] = Progress(total=2 * len(plan), desc="evaluate", unit="img")
    images = []
    for role, uri, folder in models:
        bar.set_description(f"evaluate: sample {role}")
        images.append(sample_model(uri, str(folder), cfg, plan, dev, bar.update))
    bar.close()
    cand_scores, champ_scores = _score(scorers, images, [e.prompt for e in plan])
    metrics = build_metrics(
        candidate_uri=models[0][1],
        champion_uri=models[1][1],
        candidate=cand_scores,
        champion=champ_scores,
        n_prompts=plan[-1].prompt_index + 1,
        images_per_prompt=cfg.eval.images_per_prompt,
        gate=(cfg.eval.gate_metric, cfg.registry.gate_direction, cfg.registry.min_margin),
        n_boot=cfg.eval.bootstrap,
        seed=cfg.eval.seed,
        config_hash=cfg.config_hash(),
    )
    label = reference_label(cfg, models[1][1])
    write_report(output_dir, metrics, plan, (images[0], images[1]), (cand_scores, champ_scores), history, label)
    return metrics
