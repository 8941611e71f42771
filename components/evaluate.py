"""Component evaluate -> seppo_lib.steps.evaluate.run.

Returns gate_passes as the component's single output parameter (`Output`): kfp.local 2.17
cannot resolve a named (NamedTuple) output inside a dsl.If condition, a plain return can.
"""

from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components._common import seppo_component


@seppo_component
def evaluate(
    config_json: str,
    model: Input[Model],
    kfp_run_id: str,
    metrics: Output[Metrics],
    report: Output[Artifact],
) -> bool:
    """Sample and score the candidate against the registry champion (else the base model); True if the gate passes."""
    import hashlib
    import json
    import os
    import tempfile

    from seppo_lib.config import SeppoConfig
    from seppo_lib.steps import evaluate as step

    os.environ.setdefault("KFP_RUN_ID", kfp_run_id)
    cfg = SeppoConfig.from_json(config_json)
    with open(os.path.join(model.path, "checkpoint.json")) as f:
        pointer = json.load(f)
    champion, champion_ref = None, None
    with tempfile.TemporaryDirectory() as scratch:
        if cfg.tracking.enabled:  # the current champion's folder, when the registry has one
            from seppo_lib.pyfunc_model import model_folder
            from seppo_lib.registry import RegistryError, download
            from seppo_lib.steps.register import model_name
            from seppo_lib.tracking.mlflow_logger import resolve_tracking_uri

            champion_ref = f"models:/{model_name(cfg)}@champion"
            try:
                fetched = download(champion_ref, os.path.join(scratch, "champion"), tracking_uri=resolve_tracking_uri(cfg))
                champion = str(model_folder(fetched))
            except RegistryError:
                champion, champion_ref = None, None  # nothing registered yet: the base model
        result = step.run(cfg, f"bank:{pointer['checkpoint']}", report.path, champion=champion)
    for scorer, summary in result["scorers"].items():
        metrics.log_metric(f"{scorer}_candidate_mean", float(summary["candidate"]["mean"]))
        metrics.log_metric(f"{scorer}_champion_mean", float(summary["champion"]["mean"]))
        metrics.log_metric(f"{scorer}_win_rate", float(summary["win_rate"]["rate"]))
    for name, values in (result.get("set_metrics") or {}).items():  # video: fvd / fid, set-level
        metrics.log_metric(f"{name}_candidate", float(values["candidate"]))
        metrics.log_metric(f"{name}_champion", float(values["champion"]))
    gate = result["gate"]
    with open(os.path.join(report.path, "metrics.json"), "rb") as f:
        metrics_md5 = hashlib.md5(f.read()).hexdigest()
    report.metadata.update({
        "candidate": result["candidate"], "champion": champion_ref or result["champion"], "checkpoint": pointer["checkpoint"],
        "gate_passes": bool(gate["passes"]), "gate_metric": gate["metric"], "n_prompts": result["n_prompts"],
        "metrics_md5": metrics_md5, "config_hash": result["config_hash"], "run_id": cfg.run_id,
    })
    return bool(gate["passes"])
