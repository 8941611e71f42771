"""`seppo evaluate`: sample, score and compare a model against a champion (or the base model)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from seppo_lib.cli.common import add_output_arg
from seppo_lib.cli.train import add_config_args
from seppo_lib.config import SeppoConfig, load_config


def _config(args: argparse.Namespace) -> SeppoConfig:
    """Preset + overrides; --prompts and --n win over eval.prompts / eval.max_prompts overrides."""
    overrides = list(args.overrides)
    if args.prompts is not None:
        overrides.append(f"eval.prompts={json.dumps(args.prompts)}")  # JSON string = YAML double-quoted scalar
    if args.n is not None:
        overrides.append(f"eval.max_prompts={args.n}")
    return load_config(args.config, overrides)


def default_output(cfg: SeppoConfig, model: str) -> Path:
    """<workdir>/<run_id>/eval/<model URI made into a folder name>."""
    from seppo_lib.steps.common import run_dir

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_.")[-80:] or "model"
    return run_dir(cfg) / "eval" / slug


def summary_table(metrics: dict[str, Any]) -> str:
    """Mean per scorer for both models, win rate with its CI, then the gate decision."""
    header = ("scorer", "candidate", "champion", "win rate [95% CI]")
    rows = [header]
    for name, s in metrics["scorers"].items():
        w = s["win_rate"]
        rows.append(
            (name, f"{s['candidate']['mean']:.4g}", f"{s['champion']['mean']:.4g}", f"{w['rate']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}]")
        )
    for name, v in (metrics.get("set_metrics") or {}).items():
        rows.append((name, f"{v['candidate']:.4g}", f"{v['champion']:.4g}", "set-level, lower is better"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    g = metrics["gate"]
    lines.append(
        f"gate: {g['metric']} ({g['direction']} is better, margin {g['min_margin']:g}): "
        f"candidate {g['candidate']:.4g} vs champion {g['champion']:.4g} -> {'PASSES' if g['passes'] else 'FAILS'}"
    )
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    from seppo_lib.evaluation.run_report import REPORT_HTML, REPORT_MD, report_dir
    from seppo_lib.steps import evaluate

    cfg = _config(args)
    out = Path(args.out) if args.out else default_output(cfg, args.model)
    metrics = evaluate.run(cfg, args.model, out, champion=args.against)
    print(f"{metrics['candidate']} vs {metrics['champion']}: "
          f"{metrics['n_prompts']} prompts x {metrics['images_per_prompt']} {'clip' if 'video' in metrics else 'image'}(s)")
    print(summary_table(metrics))
    grid = "grid.gif" if "video" in metrics else "grid.png"
    print(f"files:  {out} (metrics.json, per_prompt.csv, {grid}, hist_<scorer>.png or accuracy_<scorer>.png)")
    where = report_dir(cfg, args.model, out)
    print(f"report: {where / REPORT_MD} and {REPORT_HTML} (config, lineage, training curves, evaluation, gate, samples)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evaluate", help="sample and score a model against a champion (default: the base model)",
        description="Sample --model and --against (default: model.pretrained) on the same prompts and seeds "
        "with the config's sampler, score both with eval.scorers, and write a report (metrics.json, "
        "per_prompt.csv, grid.png or grid.gif for video, hist_<scorer>.png or accuracy_<scorer>.png) with per-scorer means, bootstrap CIs, "
        "the paired win rate and the promotion gate (eval.gate_metric, registry.gate_direction, registry.min_margin), "
        "plus the run report report.md + report.html in the report folder and, for a bank: checkpoint of this run "
        "(with its training curves from MLflow), in <workdir>/<run id>/.",
        epilog="example: seppo evaluate --config tiny --model bank:ckpt-000012 --prompts builtin:world-test --n 16",
    )
    p.add_argument("--model", required=True, metavar="URI",
                   help="candidate: bank:<ckpt id> of this run's bank, models:/NAME@ALIAS or models:/NAME/VERSION (the "
                   "MLflow registry at tracking.mlflow_uri / MLFLOW_TRACKING_URI), a model folder, s3:// URI or builtin:<name>")
    p.add_argument("--prompts", metavar="FILE", default=None,
                   help="prompt set (.txt/.jsonl/.parquet/.tsv/.json, s3://, builtin:world-test or "
                   "builtin:world-video-test); default eval.prompts")
    p.add_argument("--against", metavar="URI", default=None,
                   help="champion to compare with (same forms as --model); default model.pretrained")
    add_output_arg(p, "report folder (default <workdir>/<run_id>/eval/<model>)", metavar="DIR")
    p.add_argument("--n", type=int, default=None, metavar="N", help="use at most N prompts (eval.max_prompts)")
    add_config_args(p)
    p.set_defaults(func=_evaluate)
