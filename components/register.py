"""Component register -> seppo_lib.steps.register.run (after every evaluation: challenger, or champion when the gate passes)."""

from kfp.dsl import Artifact, Input, Model, Output

from components._common import seppo_component


@seppo_component
def register(
    config_json: str,
    model: Input[Model],
    report: Input[Artifact],
    kfp_run_id: str,
    registration: Output[Artifact],
) -> None:
    """Register the exported candidate in the MLflow registry with lineage tags; aliases per the gate; ends the MLflow parent run."""
    import json
    import os

    from seppo_lib.config import SeppoConfig
    from seppo_lib.steps import register as step

    os.environ.setdefault("KFP_RUN_ID", kfp_run_id)
    from seppo_lib.identity import bind

    cfg = bind(SeppoConfig.from_json(config_json), model.path)  # the run's resolved inputs (train_round wrote them)
    with open(os.path.join(model.path, "checkpoint.json")) as f:
        pointer = json.load(f)
    result = step.run(cfg, f"bank:{pointer['checkpoint']}", report.path)
    with open(registration.path, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
    registration.metadata.update({k: v for k, v in result.items() if isinstance(v, (str, int, float, bool))})
    registration.metadata.update({"checkpoint": pointer["checkpoint"], "config_hash": cfg.config_hash(), "run_id": cfg.run_id})
