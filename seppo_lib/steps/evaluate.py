"""Step evaluate: sample candidate and champion on the same prompts and seeds, score, report.

The champion defaults to the base model `model.pretrained` (the pipeline passes the registry
champion's folder when there is one). Both models are sampled with `cfg.sampling` on
`eval.prompts`; the report (metrics.json, per_prompt.csv, grid.png, hist_<scorer>.png and,
with a training history, training_curves.png) goes to `output_dir`. See
`seppo_lib.evaluation.report` for the files and docs/metrics.md for the statistics and the gate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seppo_lib.config import ConfigError, SeppoConfig
from seppo_lib.evaluation.generate import eval_plan, sample_model
from seppo_lib.evaluation.prompts import load_prompts
from seppo_lib.evaluation.report import build_metrics, write_report
from seppo_lib.evaluation.scorers import build_scorers
from seppo_lib.export import resolve_model_uri
from seppo_lib.steps.common import device

logger = logging.getLogger(__name__)


def check_gate_metric(cfg: SeppoConfig) -> None:
    """Raise a one-line ConfigError unless eval.gate_metric is one of eval.scorers."""
    metric, scorers = cfg.eval.gate_metric, cfg.eval.scorers
    if metric not in scorers:
        raise ConfigError(
            f"eval.gate_metric={metric!r} is not one of eval.scorers ({', '.join(scorers) or 'none'}); "
            f"set eval.gate_metric to one of them or add {metric!r} to eval.scorers"
        )


def run(
    cfg: SeppoConfig,
    candidate: str,
    output_dir: str | Path,
    champion: str | None = None,
    history: list[tuple[int, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """Evaluate `candidate` against `champion` (default: the base model); returns metrics.json's content."""
    check_gate_metric(cfg)
    champion_uri = champion or cfg.model.pretrained
    prompts = load_prompts(cfg.eval.prompts, cfg.eval.max_prompts)
    plan = eval_plan(prompts, cfg.eval.images_per_prompt, cfg.eval.seed)
    dev = device()
    scorers = build_scorers(cfg.eval, str(dev), cache_dir=Path(cfg.bank.cache_dir) / "scorers", storage=cfg.storage)
    folders = [(role, uri, resolve_model_uri(cfg, uri)) for role, uri in (("candidate", candidate), ("champion", champion_uri))]
    bar = tqdm(total=2 * len(plan), desc="evaluate", unit="img", disable=None)
    images = []
    for role, uri, folder in folders:
        bar.set_description(f"evaluate: sample {role}")
        images.append(sample_model(uri, str(folder), cfg, plan, dev, bar.update))
    bar.close()
    texts = [e.prompt for e in plan]
    cand_scores, champ_scores = ({name: s.score(imgs, texts) for name, s in scorers.items()} for imgs in images)
    metrics = build_metrics(
        candidate_uri=candidate,
        champion_uri=champion_uri,
        candidate=cand_scores,
        champion=champ_scores,
        n_prompts=len(prompts),
        images_per_prompt=cfg.eval.images_per_prompt,
        gate=(cfg.eval.gate_metric, cfg.registry.gate_direction, cfg.registry.min_margin),
        n_boot=cfg.eval.bootstrap,
        seed=cfg.eval.seed,
        config_hash=cfg.config_hash(),
    )
    write_report(output_dir, metrics, plan, (images[0], images[1]), (cand_scores, champ_scores), history)
    gate = metrics["gate"]
    logger.info(
        "%s %s: candidate %.4g vs champion %.4g -> gate %s",
        gate["metric"], gate["direction"], gate["candidate"], gate["champion"], "passes" if gate["passes"] else "fails",
    )
    return metrics
