"""Step register: log the evaluation, register the candidate checkpoint, gate the champion alias.

The candidate `bank:<ckpt_id>` is exported as a diffusers pipeline folder (its UNet on the base
model's frozen parts, `seppo_lib.export`), wrapped as an MLflow pyfunc model (artifact
`pipeline` = that folder, signature and input example; `seppo_lib.pyfunc_model`) and registered
as a new version of `registry.model_name` (default `seppo-<config name>`) from this step's MLflow
run, so `mlflow.pyfunc.load_model("models:/<name>@champion")` generates images. Version tags carry the lineage (config
hash, bank URI and run id, `seppo.checkpoint` = the bank checkpoint id, which `seppo bank gc`
protects), every scorer's candidate mean (`seppo.metric.<scorer>`; for video also the set-level
`fvd` / `fid` of metrics.json's "set_metrics") and the gate decision.

The champion score compared against is the one in metrics.json when the evaluation re-scored
the registry's champion (metrics.json's `champion` is not the base model `model.pretrained`
and the registry has a champion); otherwise the score recorded on the champion version is
used (see `seppo_lib.registry.register_checkpoint`). The step is the pipeline's last: it ends
the pipeline's parent MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from seppo_lib.bank_admin import CHECKPOINT_TAG
from seppo_lib.config import SeppoConfig
from seppo_lib.export import resolve_model_uri
from seppo_lib.pyfunc_model import save_pyfunc_model
from seppo_lib.registry import CHAMPION, RegistryError, list_versions, register_checkpoint
from seppo_lib.steps.common import open_bank, run_dir
from seppo_lib.tracking.steps import step_tracking

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
EVAL_ARTIFACTS = ("metrics.json", "per_prompt.csv", "*.png", "*.gif")


def model_name(cfg: SeppoConfig) -> str:
    return cfg.registry.model_name or f"seppo-{cfg.name}"


def _checkpoint_id(candidate: str) -> str:
    if not candidate.startswith("bank:") or not candidate[len("bank:"):]:
        raise RegistryError(
            f"candidate {candidate!r} is not a bank checkpoint; pass bank:<checkpoint id> (e.g. bank:ckpt-000012)"
        )
    return candidate[len("bank:"):]


def _number(value: Any, where: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RegistryError(f"{path}: {where} is {value!r}, not a number; is this the evaluate step's {METRICS_FILE}?")
    return float(value)


def load_eval_metrics(eval_dir: str | Path) -> dict[str, Any]:
    """metrics.json of the evaluate step, checked for the fields registration reads."""
    path = Path(eval_dir) / METRICS_FILE
    if not path.is_file():
        raise RegistryError(f"{path} does not exist; pass the evaluate step's output folder as eval_dir")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise RegistryError(f"{path} is not valid JSON ({err}); re-run the evaluate step") from None
    scorers = doc.get("scorers") if isinstance(doc, dict) else None
    sets = doc.get("set_metrics") or {} if isinstance(doc, dict) else {}
    if not isinstance(scorers, dict) or not isinstance(sets, dict) or not (scorers or sets) or not isinstance(doc.get("gate"), dict):
        raise RegistryError(f"{path} has no 'scorers' and 'gate' sections; is this the evaluate step's {METRICS_FILE}?")
    for name, summary in scorers.items():
        _number(((summary or {}).get("candidate") or {}).get("mean"), f"scorers.{name}.candidate.mean", path)
    for name, values in sets.items():
        _number((values or {}).get("candidate"), f"set_metrics.{name}.candidate", path)
    return doc


def scorer_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """{scorer: candidate mean, scorer_win_rate: paired win rate, set metric (fvd/fid): candidate value}
    (flattened for tags and metrics)."""
    out: dict[str, float] = {name: float(values["candidate"]) for name, values in (doc.get("set_metrics") or {}).items()}
    for name, summary in doc["scorers"].items():
        out[name] = float(summary["candidate"]["mean"])
        rate = (summary.get("win_rate") or {}).get("rate")
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate):
            out[f"{name}_win_rate"] = float(rate)
    return out


def _rescored_champion(cfg: SeppoConfig, doc: dict[str, Any], name: str, tracking_uri: str, metrics_path: Path) -> float | None:
    """The champion's gate score from metrics.json when the evaluation scored the registry champion."""
    if doc.get("champion") in (None, cfg.model.pretrained):
        return None  # compared against the base model: the champion version's recorded score decides
    try:
        versions = list_versions(name, tracking_uri=tracking_uri)
    except RegistryError:
        return None  # no registered model yet: no champion
    if not any(CHAMPION in v["aliases"] for v in versions):
        return None
    gate = doc["gate"]
    if gate.get("metric") != cfg.eval.gate_metric:
        raise RegistryError(
            f"{metrics_path}: gate metric {gate.get('metric')!r} differs from eval.gate_metric={cfg.eval.gate_metric!r}; "
            "evaluate and register with the same config"
        )
    return _number(gate.get("champion"), "gate.champion", metrics_path)


def version_tags(cfg: SeppoConfig, ckpt_id: str, doc: dict[str, Any]) -> dict[str, str]:
    """Lineage of the registered version: config, bank run and checkpoint, what it was compared with."""
    from seppo_lib.tracking.mlflow_logger import lineage_tags

    return {
        **lineage_tags(cfg.config_hash(), bank_uri=cfg.bank.uri, bank_run_id=cfg.run_id),
        CHECKPOINT_TAG: ckpt_id,
        "seppo.checkpoint_uri": f"{open_bank(cfg).uri}/{ckpt_id}",
        "seppo.config_name": cfg.name,
        "seppo.eval_champion": str(doc.get("champion")),
    }


def _eval_files(eval_dir: Path) -> list[Path]:
    return sorted({p for pattern in EVAL_ARTIFACTS for p in eval_dir.glob(pattern) if p.is_file()})


def run(cfg: SeppoConfig, candidate: str, eval_dir: str | Path) -> dict[str, Any]:
    """Register `candidate` (bank:<ckpt_id>) with the evaluation in `eval_dir`; returns the decision."""
    if not cfg.tracking.enabled:
        raise RegistryError(
            "registration needs tracking.enabled=true (the model registry is MLflow's); enable tracking to register"
        )
    from seppo_lib.tracking.mlflow_logger import MlflowLogger, ensure_reachable, resolve_tracking_uri

    ckpt_id = _checkpoint_id(candidate)
    eval_dir = Path(eval_dir)
    doc = load_eval_metrics(eval_dir)
    metrics = scorer_metrics(doc)
    if cfg.eval.gate_metric not in metrics:
        raise RegistryError(
            f"{eval_dir / METRICS_FILE} has no scorer {cfg.eval.gate_metric!r} (eval.gate_metric); "
            f"scored: {', '.join([*doc['scorers'], *(doc.get('set_metrics') or {})])}"
        )
    uri = resolve_tracking_uri(cfg)
    ensure_reachable(uri)
    name = model_name(cfg)
    mlflow_model = run_dir(cfg) / "mlflow-models" / ckpt_id
    shutil.rmtree(mlflow_model, ignore_errors=True)
    mlflow_model.parent.mkdir(parents=True, exist_ok=True)
    folder = save_pyfunc_model(resolve_model_uri(cfg, candidate), mlflow_model)
    champion_score = _rescored_champion(cfg, doc, name, uri, eval_dir / METRICS_FILE)
    tags = version_tags(cfg, ckpt_id, doc)
    with step_tracking(cfg, "register", {CHECKPOINT_TAG: ckpt_id}) as tracked:
        if not isinstance(tracked, MlflowLogger) or tracked.run_id is None:
            raise RegistryError(f"could not open an MLflow run at {uri} for registration; check the tracking server and retry")
        run_id = tracked.run_id
        tracked.log_metrics(metrics, step=0)
        for path in _eval_files(eval_dir):
            tracked.log_artifact(path, "eval")
        result = register_checkpoint(
            folder, tracking_uri=uri, model_name=name, run_id=run_id, metrics=metrics,
            gate_metric=cfg.eval.gate_metric, direction=cfg.registry.gate_direction,
            min_margin=cfg.registry.min_margin, tags=tags, champion_score=champion_score,
        )  # fmt: skip
        tracked.set_tags(
            {"seppo.registered_model": name, "seppo.registered_version": result.version, "seppo.gate.decision": result.decision}
        )
        tracked.close("FINISHED", end_parent=True)
    champion = f"v{result.champion}" if result.champion else "none"
    logger.info("%s v%s (%s): %s; champion is %s", name, result.version, ckpt_id, result.decision, champion)
    return {
        "model_name": name, "version": result.version, "decision": result.decision, "reason": result.reason,
        "champion": result.champion, "challenger": result.version, "model_uri": result.model_uri,
        "checkpoint": ckpt_id, "gate_metric": result.gate_metric, "candidate_score": result.candidate_score,
        "champion_score": result.champion_score, "mlflow_run_id": run_id,
    }  # fmt: skip
