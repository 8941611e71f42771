"""The evaluate step's MLflow child run: scores with their CIs, win rates, the gate decision, the report.

`tracked_evaluation(precheck)` wraps the step function (`seppo_lib.steps.evaluate.run`) in `step_tracking`:
the child run `evaluate` of the pipeline's run tree (`cfg.run_id`) is open while the step samples
and scores, spooled when MLflow is unreachable. When the step returns, the run gets
`evaluation_metrics(doc)` as metrics, `gate_tags(doc)` as tags and the report folder as artifacts
under `eval/`; when it raises, the run and the pipeline's parent run end FAILED. With
`tracking.enabled: false` nothing is logged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec

from seppo_lib.config import SeppoConfig
from seppo_lib.tracking.base import RunLogger
from seppo_lib.tracking.steps import step_tracking

P = ParamSpec("P")
REPORT_ARTIFACT_PATH = "eval"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def evaluation_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """metrics.json flattened: `<scorer>_<candidate|champion>_<mean|ci_lo|ci_hi>`, `<scorer>_win_rate[_lo|_hi]`,
    set-level `<name>_<candidate|champion>` (video: fvd / fid) and the gate's two scores; missing values are left out."""
    out: dict[str, float | None] = {}
    for name, summary in doc["scorers"].items():
        for role in ("candidate", "champion"):
            for stat in ("mean", "ci_lo", "ci_hi"):
                out[f"{name}_{role}_{stat}"] = _number((summary.get(role) or {}).get(stat))
        wins = summary.get("win_rate") or {}
        out.update({f"{name}_win_rate": _number(wins.get("rate")), f"{name}_win_rate_lo": _number(wins.get("lo")),
                    f"{name}_win_rate_hi": _number(wins.get("hi"))})  # fmt: skip
    for name, values in (doc.get("set_metrics") or {}).items():
        out.update({f"{name}_candidate": _number(values.get("candidate")), f"{name}_champion": _number(values.get("champion"))})
    gate = doc["gate"]
    out.update({"gate_candidate": _number(gate.get("candidate")), "gate_champion": _number(gate.get("champion"))})
    return {k: v for k, v in out.items() if v is not None}


def gate_tags(doc: dict[str, Any]) -> dict[str, str]:
    """The gate decision (`seppo.gate.*`, the keys of the registered version's tags) and what was compared."""
    from seppo_lib.registry import GATE as GATE_TAG  # mlflow: only when tracking is on

    gate = doc["gate"]
    return {
        f"{GATE_TAG}metric": str(gate["metric"]), f"{GATE_TAG}direction": str(gate["direction"]),
        f"{GATE_TAG}min_margin": repr(float(gate["min_margin"])), f"{GATE_TAG}passes": str(bool(gate["passes"])).lower(),
        f"{GATE_TAG}candidate_score": repr(float(gate["candidate"])), f"{GATE_TAG}champion_score": repr(float(gate["champion"])),
        "seppo.eval.candidate": str(doc["candidate"]), "seppo.eval.champion": str(doc["champion"]),
        "seppo.eval.n_prompts": str(doc["n_prompts"]),
    }  # fmt: skip


def log_evaluation(tracked: RunLogger, doc: dict[str, Any], report_dir: str | Path) -> None:
    """Metrics, gate tags and the report folder (metrics.json, per_prompt.csv, plots, grid) of one evaluation."""
    tracked.log_metrics(evaluation_metrics(doc), step=0)
    tracked.set_tags(gate_tags(doc))
    tracked.log_artifact(Path(report_dir), REPORT_ARTIFACT_PATH)


def tracked_evaluation(
    precheck: Callable[[SeppoConfig], None],
) -> Callable[[Callable[P, dict[str, Any]]], Callable[P, dict[str, Any]]]:
    """Decorate the evaluate step `run(cfg, candidate, output_dir, ...)` (see the module doc). `precheck(cfg)`
    runs first, outside the MLflow run: a config error (which validate_config already rejects before a
    pipeline's run tree exists) fails in milliseconds without opening MLflow."""

    def decorate(step: Callable[P, dict[str, Any]]) -> Callable[P, dict[str, Any]]:
        signature = inspect.signature(step)

        @functools.wraps(step)
        def run(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
            arguments = signature.bind(*args, **kwargs).arguments
            cfg, output_dir = arguments["cfg"], arguments["output_dir"]
            precheck(cfg)
            with step_tracking(cfg, "evaluate", {"seppo.eval.candidate": str(arguments["candidate"])}) as tracked:
                doc = step(*args, **kwargs)
                if cfg.tracking.enabled:
                    log_evaluation(tracked, doc, output_dir)
            return doc

        return run

    return decorate
