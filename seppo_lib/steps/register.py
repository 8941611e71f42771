"""Step register: log the evaluation, register the candidate checkpoint, gate the champion alias.

The candidate `bank:<ckpt_id>` is exported as a diffusers pipeline folder (its UNet on the base
model's frozen parts, `seppo_lib.export`), wrapped as an MLflow pyfunc model (artifact
`pipeline` = that folder, signature and input example; `seppo_lib.pyfunc_model`) and registered
as a new version of `registry.model_name` (default `seppo-<config name>`) from this step's MLflow
run, so `mlflow.pyfunc.load_model("models:/<name>@champion")` generates images. Version tags carry the lineage (config
hash, bank URI and run id, `seppo.checkpoint` = the bank checkpoint id, which `seppo bank gc`
protects), every scorer's candidate mean (`seppo.metric.<scorer>`; for video also the set-level
`fvd` / `fid` of metrics.json's "set_metrics") and the gate decision.

Every evaluated candidate becomes a version with the alias `challenger`; `champion` moves to it
when the gate (`seppo_lib.registry.gate`) passes. The champion score compared against is the one
in metrics.json when the evaluation re-scored the registry's champion (metrics.json's `champion`
is not the base model `model.pretrained` and the registry has a champion); otherwise the score
recorded on the champion version is used. With no champion yet, the candidate must beat the base
model's score in metrics.json by the same rule (see `seppo_lib.registry.register_checkpoint`).
The step is the pipeline's last: it ends the pipeline's parent MLflow run FINISHED (FAILED when
it raises).
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
from seppo_lib.registry import CHALLENGER, CHAMPION, GATE, RegistrationResult, RegistryError, list_versions, register_checkpoint
from seppo_lib.steps.common import open_bank, run_dir
from seppo_lib.tracking.base import RunLogger
from seppo_lib.tracking.steps import step_tracking

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CHECKPOINT_URI_TAG = "seppo.checkpoint_uri"  # <bank uri>/<ckpt id>: one version per checkpoint
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


def _versions(name: str, tracking_uri: str) -> list[dict[str, Any]]:
    try:
        return list_versions(name, tracking_uri=tracking_uri)
    except RegistryError:
        return []  # no registered model yet


def _has_champion(name: str, tracking_uri: str) -> bool:
    return any(CHAMPION in v["aliases"] for v in _versions(name, tracking_uri))


def _holder(versions: list[dict[str, Any]], alias: str) -> str | None:
    return next((v["version"] for v in versions if alias in v["aliases"]), None)


def _already_registered(name: str, checkpoint_uri: str, tracking_uri: str, ckpt_id: str, run_id: str) -> dict[str, Any] | None:
    """The registration of the version made from this bank checkpoint before (a rerun of a run that
    trained nothing new: same identity, same checkpoint), or None: a checkpoint is registered once."""
    versions = _versions(name, tracking_uri)
    row = next((v for v in versions if v["tags"].get(CHECKPOINT_URI_TAG) == checkpoint_uri), None)
    if row is None:
        return None
    champion, tags = _holder(versions, CHAMPION), row["tags"]
    return {
        "model_name": name, "version": row["version"], "decision": row["decision"] or "rejected",
        "reason": f"{checkpoint_uri} is already v{row['version']}; not registered again",
        "champion": champion, "previous_champion": champion, "challenger": _holder(versions, CHALLENGER),
        "aliases": row["aliases"], "model_uri": f"models:/{name}/{row['version']}", "checkpoint": ckpt_id,
        "gate_metric": row["gate_metric"], "candidate_score": row["score"], "champion_score": None,
        "compared_with": tags.get(GATE + "compared_with", "nothing"), "mlflow_run_id": run_id, "already_registered": True,
    }  # fmt: skip


def _gate_scores(
    cfg: SeppoConfig, doc: dict[str, Any], name: str, tracking_uri: str, metrics_path: Path
) -> tuple[float | None, float | None]:
    """(re-scored champion, base model) gate scores from metrics.json: what its reference column was."""
    reference = doc.get("champion")
    is_base = reference == cfg.model.pretrained
    if reference is None or (not is_base and not _has_champion(name, tracking_uri)):
        return None, None  # scored against neither: nothing from this evaluation to compare with
    gate = doc["gate"]
    if gate.get("metric") != cfg.eval.gate_metric:
        raise RegistryError(
            f"{metrics_path}: gate metric {gate.get('metric')!r} differs from eval.gate_metric={cfg.eval.gate_metric!r}; "
            "evaluate and register with the same config"
        )
    score = _number(gate.get("champion"), "gate.champion", metrics_path)
    return (None, score) if is_base else (score, None)


def version_tags(cfg: SeppoConfig, ckpt_id: str, doc: dict[str, Any]) -> dict[str, str]:
    """Lineage of the registered version: config, bank run and checkpoint, the resolved data and base model
    versions (`seppo_lib.identity.lineage_tags`), what it was compared with."""
    from seppo_lib import identity
    from seppo_lib.tracking.mlflow_logger import lineage_tags

    return {
        **lineage_tags(cfg.config_hash(), bank_uri=cfg.bank.uri, bank_run_id=cfg.run_id),
        **identity.lineage_tags(cfg),
        CHECKPOINT_TAG: ckpt_id,
        CHECKPOINT_URI_TAG: f"{open_bank(cfg).uri}/{ckpt_id}",
        "seppo.config_name": cfg.name,
        "seppo.eval_champion": str(doc.get("champion")),
    }


def _eval_files(eval_dir: Path) -> list[Path]:
    return sorted({p for pattern in EVAL_ARTIFACTS for p in eval_dir.glob(pattern) if p.is_file()})


def run(cfg: SeppoConfig, candidate: str, eval_dir: str | Path) -> dict[str, Any]:
    """Register `candidate` (bank:<ckpt_id>) with the evaluation in `eval_dir`; returns the decision.

    A checkpoint not registered yet becomes a new version (`challenger`; `champion` too when the gate
    passes); one registered before is returned as it is (`already_registered`). Either way the call
    ends the pipeline's parent MLflow run: FINISHED, or FAILED when registration raises.
    """
    if not cfg.tracking.enabled:
        raise RegistryError(
            "registration needs tracking.enabled=true (the model registry is MLflow's); enable tracking to register"
        )
    from seppo_lib.tracking.mlflow_logger import ensure_reachable, resolve_tracking_uri

    ckpt_id = _checkpoint_id(candidate)
    uri = resolve_tracking_uri(cfg)
    ensure_reachable(uri)
    with step_tracking(cfg, "register", {CHECKPOINT_TAG: ckpt_id}) as tracked:
        out = _register(cfg, tracked, ckpt_id, Path(eval_dir), uri)
        tracked.set_tags({"seppo.registered_model": out["model_name"], "seppo.registered_version": out["version"],
                          "seppo.gate.decision": out["decision"]})  # fmt: skip
        tracked.close("FINISHED", end_parent=True)  # the pipeline's last step
    champion = f"v{out['champion']}" if out["champion"] else "none"
    logger.info("%s v%s (%s): %s; champion is %s", out["model_name"], out["version"], ckpt_id, out["reason"], champion)
    return out


def _registration(result: RegistrationResult, ckpt_id: str, run_id: str) -> dict[str, Any]:
    return {
        "model_name": result.model_name, "version": result.version, "decision": result.decision, "reason": result.reason,
        "champion": result.champion, "previous_champion": result.previous_champion, "challenger": result.version,
        "aliases": [CHALLENGER, *([CHAMPION] if result.promoted else [])], "model_uri": result.model_uri,
        "checkpoint": ckpt_id, "gate_metric": result.gate_metric, "candidate_score": result.candidate_score,
        "champion_score": result.champion_score, "compared_with": result.compared_with, "mlflow_run_id": run_id,
        "already_registered": False,
    }  # fmt: skip


def _register(cfg: SeppoConfig, tracked: RunLogger, ckpt_id: str, eval_dir: Path, uri: str) -> dict[str, Any]:
    """Export, log the evaluation into the step's run `tracked` and register (once per checkpoint)."""
    from seppo_lib.tracking.mlflow_logger import MlflowLogger

    doc = load_eval_metrics(eval_dir)
    metrics = scorer_metrics(doc)
    if cfg.eval.gate_metric not in metrics:
        raise RegistryError(
            f"{eval_dir / METRICS_FILE} has no scorer {cfg.eval.gate_metric!r} (eval.gate_metric); "
            f"scored: {', '.join([*doc['scorers'], *(doc.get('set_metrics') or {})])}"
        )
    if not isinstance(tracked, MlflowLogger) or tracked.run_id is None:
        raise RegistryError(f"could not open an MLflow run at {uri} for registration; check the tracking server and retry")
    name = model_name(cfg)
    already = _already_registered(name, f"{open_bank(cfg).uri}/{ckpt_id}", uri, ckpt_id, tracked.run_id)
    if already is not None:
        return already
    mlflow_model = run_dir(cfg) / "mlflow-models" / ckpt_id
    shutil.rmtree(mlflow_model, ignore_errors=True)
    mlflow_model.parent.mkdir(parents=True, exist_ok=True)
    folder = save_pyfunc_model(resolve_model_uri(cfg, f"bank:{ckpt_id}"), mlflow_model)
    champion_score, base_score = _gate_scores(cfg, doc, name, uri, eval_dir / METRICS_FILE)
    tracked.log_metrics(metrics, step=0)
    for path in _eval_files(eval_dir):
        tracked.log_artifact(path, "eval")
    result = register_checkpoint(
        folder, tracking_uri=uri, model_name=name, run_id=tracked.run_id, metrics=metrics,
        gate_metric=cfg.eval.gate_metric, direction=cfg.registry.gate_direction, min_margin=cfg.registry.min_margin,
        tags=version_tags(cfg, ckpt_id, doc), champion_score=champion_score, base_score=base_score,
    )  # fmt: skip
    return _registration(result, ckpt_id, tracked.run_id)
