"""Component evaluate -> seppo_lib.steps.evaluate.run.

Returns gate_passes as the component's output parameter (`Output`, shown with the run); the
register step that always follows reads the decision's inputs from the report's metrics.json.
The step logs the same metrics, the gate and the report folder to MLflow itself.
`report_md` (Markdown) and `report_html` (HTML, self-contained) are the run report
(`seppo_lib.evaluation.run_report`), which the KFP UI renders with the task.
"""

from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Model, Output

from components._common import seppo_component


@seppo_component
def evaluate(
    config_json: str,
    model: Input[Model],
    kfp_run_id: str,
    metrics: Output[Metrics],
    report: Output[Artifact],
    report_md: Output[Markdown],
    report_html: Output[HTML],
) -> bool:
    """Sample and score the candidate against the registry champion (else the base model); True if the gate passes."""
    import hashlib
    import json
    import os
    import shutil
    import tempfile

    from seppo_lib.config import SeppoConfig
    from seppo_lib.evaluation.run_report import REPORT_HTML, REPORT_MD
    from seppo_lib.steps import evaluate as step
    from seppo_lib.tracking.evaluation import evaluation_metrics

    os.environ.setdefault("KFP_RUN_ID", kfp_run_id)
    from seppo_lib.identity import bind

    cfg = bind(SeppoConfig.from_json(config_json), model.path)  # the run's resolved inputs (train_round wrote them)
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
    for key, value in evaluation_metrics(result).items():  # means, CIs, win rates, set-level fvd / fid (video)
        metrics.log_metric(key, value)
    for name, rendered in ((REPORT_MD, report_md), (REPORT_HTML, report_html)):  # the run report, for the KFP UI
        shutil.copyfile(os.path.join(report.path, name), rendered.path)
    gate = result["gate"]
    with open(os.path.join(report.path, "metrics.json"), "rb") as f:
        metrics_md5 = hashlib.md5(f.read()).hexdigest()
    report.metadata.update({
        "candidate": result["candidate"], "champion": champion_ref or result["champion"], "checkpoint": pointer["checkpoint"],
        "gate_passes": bool(gate["passes"]), "gate_metric": gate["metric"], "n_prompts": result["n_prompts"],
        "metrics_md5": metrics_md5, "config_hash": result["config_hash"], "run_id": cfg.run_id,
    })
    return bool(gate["passes"])
