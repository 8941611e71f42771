"""The evaluation report: summary statistics, the promotion gate and the files of an evaluation.

Scores arrive per image, in `eval_plan` order (prompt-major, `images_per_prompt` per prompt).
Statistics resample prompts: the images of one prompt are averaged first, then the mean, median,
percentile-bootstrap CI and the paired win rate are computed over prompts.

Files written by :func:`write_report` into the output folder:

- ``metrics.json``: see :func:`build_metrics`.
- ``per_prompt.csv``: one row per image: prompt_index, prompt, sample, seed, then
  ``<scorer>_candidate`` and ``<scorer>_champion`` for every scorer.
- ``grid.png``: candidate vs reference (the base model or the champion) on the same prompt and
  seed (``plots.write_grid``): the first image of up to `GRID_ROWS` prompts (see :func:`grid_samples`).
- ``accuracy_<scorer>.png`` for a 0/1 scorer: both models' accuracy bars with metrics.json's 95% CIs;
  ``hist_<scorer>.png`` for a continuous scorer: per-image score histograms.
- ``training_curves.png``: loss, implicit_acc, flip_rate and the winner-error gap err_gap_w vs step
  (only with a history; ``plots.plot_training_curves``).

The run's ``report.md`` / ``report.html`` are built from this folder by
:func:`seppo_lib.evaluation.run_report.write_run_report`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from seppo_lib.evaluation.generate import EvalSample
from seppo_lib.evaluation.plots import GRID_ROWS, plot_scores, plot_training_curves, write_grid
from seppo_lib.evaluation.stats import bootstrap_mean_ci, win_rate

logger = logging.getLogger(__name__)

Direction = Literal["higher", "lower"]
Scores = dict[str, list[float]]


def per_prompt_means(scores: Sequence[float], images_per_prompt: int) -> np.ndarray:
    """Average consecutive groups of `images_per_prompt` scores (one value per prompt)."""
    x = np.asarray(scores, dtype=np.float64)
    if images_per_prompt < 1 or x.size == 0 or x.size % images_per_prompt:
        raise ValueError(f"{x.size} scores do not split into prompts of {images_per_prompt} images")
    return x.reshape(-1, images_per_prompt).mean(axis=1)


def summarize(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """{"mean", "median", "ci_lo", "ci_hi"} of per-prompt values (percentile bootstrap CI)."""
    mean, lo, hi = bootstrap_mean_ci(values, n_boot=n_boot, seed=seed)
    return {"mean": mean, "median": float(np.median(values)), "ci_lo": lo, "ci_hi": hi}


def scorer_summary(
    candidate: Sequence[float], champion: Sequence[float], images_per_prompt: int, n_boot: int, seed: int
) -> dict[str, Any]:
    """Candidate and champion summaries and the paired per-prompt win rate of one scorer."""
    cand = per_prompt_means(candidate, images_per_prompt)
    champ = per_prompt_means(champion, images_per_prompt)
    if cand.size != champ.size:
        raise ValueError(f"candidate has {cand.size} prompts but champion {champ.size}; score the same plan")
    wins = win_rate(cand, champ, n_boot=n_boot, seed=seed)
    return {
        "candidate": summarize(cand, n_boot, seed),
        "champion": summarize(champ, n_boot, seed),
        "win_rate": {"rate": wins.rate, "lo": wins.lo, "hi": wins.hi, "n": wins.n},
    }


def gate_passes(candidate: float, champion: float, direction: Direction, min_margin: float) -> bool:
    """True when the candidate is strictly better than the champion by at least `min_margin`.

    improvement = candidate - champion ("higher") or champion - candidate ("lower"); the margin
    comparison tolerates float rounding (0.30 - 0.25 meets a 0.05 margin). A tie never passes.
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"gate direction must be 'higher' or 'lower', got {direction!r}")
    if math.isnan(candidate) or math.isnan(champion):
        return False
    improvement = candidate - champion if direction == "higher" else champion - candidate
    enough = improvement >= min_margin or math.isclose(improvement, min_margin, rel_tol=1e-9, abs_tol=1e-12)
    return improvement > 0 and enough


def gate_decision(
    scorers: dict[str, Any], metric: str, direction: Direction, min_margin: float, set_metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The "gate" block of metrics.json: means of a per-sample `metric`, or the values of a set-level one."""
    if metric in scorers:
        cand, champ = scorers[metric]["candidate"]["mean"], scorers[metric]["champion"]["mean"]
    elif set_metrics and metric in set_metrics:
        cand, champ = set_metrics[metric]["candidate"], set_metrics[metric]["champion"]
    else:
        scored = [*scorers, *(set_metrics or {})]
        raise ValueError(f"gate metric {metric!r} is not among the scored metrics ({', '.join(scored)})")
    return {
        "metric": metric,
        "direction": direction,
        "min_margin": float(min_margin),
        "candidate": float(cand),
        "champion": float(champ),
        "passes": gate_passes(cand, champ, direction, min_margin),
    }


def build_metrics(
    *,
    candidate_uri: str,
    champion_uri: str,
    candidate: Scores,
    champion: Scores,
    n_prompts: int,
    images_per_prompt: int,
    gate: tuple[str, Direction, float],
    n_boot: int,
    seed: int,
    config_hash: str,
    set_metrics: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The metrics.json document. `gate` = (metric, direction, min_margin).

    `set_metrics` (video: FVD / FID) are set-level numbers {name: {"candidate", "champion", ...}}
    with no per-prompt statistics; they appear as "set_metrics" and may be the gate metric.
    """
    if set(candidate) != set(champion):
        raise ValueError(f"candidate scorers {sorted(candidate)} differ from champion scorers {sorted(champion)}")
    scorers = {
        name: scorer_summary(candidate[name], champion[name], images_per_prompt, n_boot, seed) for name in candidate
    }
    for name, summary in scorers.items():
        if summary["win_rate"]["n"] != n_prompts:
            raise ValueError(f"{name}: {summary['win_rate']['n']} prompts scored but n_prompts={n_prompts}")
    doc = {
        "candidate": candidate_uri,
        "champion": champion_uri,
        "n_prompts": n_prompts,
        "images_per_prompt": images_per_prompt,
        "scorers": scorers,
        "gate": gate_decision(scorers, *gate, set_metrics=set_metrics),
        "config_hash": config_hash,
    }
    if set_metrics is not None:
        doc["set_metrics"] = set_metrics
    return doc


def write_per_prompt_csv(path: str | Path, plan: Sequence[EvalSample], candidate: Scores, champion: Scores) -> Path:
    """One row per image with both models' scores for every scorer."""
    path = Path(path)
    names = list(candidate)
    for name in names:
        if len(candidate[name]) != len(plan) or len(champion[name]) != len(plan):
            raise ValueError(f"{name}: need {len(plan)} scores per model, got {len(candidate[name])} and {len(champion[name])}")
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt_index", "prompt", "sample", "seed", *(f"{n}_{m}" for n in names for m in ("candidate", "champion"))])
        for i, e in enumerate(plan):
            writer.writerow([e.prompt_index, e.prompt, e.sample, e.seed, *(v for n in names for v in (candidate[n][i], champion[n][i]))])
    return path


def grid_samples(plan: Sequence[EvalSample], n_rows: int = GRID_ROWS) -> list[int]:
    """Plan indices of the grid rows: the first image of each prompt, then the second of each, ...
    (as many distinct prompts as possible), at most `n_rows`."""
    return sorted(range(len(plan)), key=lambda i: (plan[i].sample, plan[i].prompt_index))[:n_rows]


def write_report(
    output_dir: str | Path,
    metrics: dict[str, Any],
    plan: Sequence[EvalSample],
    images: tuple[Sequence[Image.Image], Sequence[Image.Image]],
    scores: tuple[Scores, Scores],
    history: list[tuple[int, dict[str, float]]] | None = None,
    reference_label: str = "reference",
) -> list[Path]:
    """Write metrics.json, per_prompt.csv, grid.png, accuracy_/hist_<scorer>.png (and training_curves.png).

    images and scores are (candidate, reference) pairs in `plan` order. `reference_label` names the
    reference model in the grid and the plots ("base model", "champion v3"). Returns the files written.
    """
    out, files = start_report(output_dir, metrics, plan, scores)
    cand_scores, champ_scores = scores
    rows = grid_samples(plan)
    files.append(
        write_grid(
            out / "grid.png",
            [images[0][i] for i in rows],
            [images[1][i] for i in rows],
            [f"{plan[i].prompt}\nimage {plan[i].sample}, seed {plan[i].seed}" for i in rows],
            [_score_line(cand_scores, i) for i in rows],
            [_score_line(champ_scores, i) for i in rows],
            titles=(("candidate", metrics["candidate"]), (reference_label, metrics["champion"])),
        )
    )
    return finish_report(out, files, scores, history, reference_label)


def start_report(
    output_dir: str | Path, metrics: dict[str, Any], plan: Sequence[EvalSample], scores: tuple[Scores, Scores]
) -> tuple[Path, list[Path]]:
    """Create the report folder and write metrics.json and per_prompt.csv (image and video reports)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = out / "metrics.json"
    metrics_file.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out, [metrics_file, write_per_prompt_csv(out / "per_prompt.csv", plan, *scores)]


def finish_report(
    out: Path,
    files: list[Path],
    scores: tuple[Scores, Scores],
    history: list[tuple[int, dict[str, float]]] | None,
    reference_label: str = "reference",
) -> list[Path]:
    """Add the per-scorer plots (when there are per-sample scores; the CIs are those of the
    metrics.json that :func:`start_report` wrote into `out`) and the training curves; log the files."""
    if scores[0]:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        files += plot_scores(out, scores, metrics, ("candidate", reference_label))
    if history:
        curves = plot_training_curves(out / "training_curves.png", history)
        if curves is not None:
            files.append(curves)
    logger.info("evaluation report: %s", ", ".join(p.name for p in files))
    return files


def _score_line(scores: Scores, index: int) -> str:
    return ", ".join(f"{name} {values[index]:.3g}" for name, values in scores.items())
