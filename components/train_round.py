"""Component train_round -> seppo_lib.steps.train_round.run.

The weights stay in the checkpoint bank; the `model` artifact is a pointer to them
(checkpoint.json: bank_uri, run_id, checkpoint, round) plus the run's resolved config
(resolved_config.json, which evaluate and register bind to).
"""

from typing import List

from kfp.dsl import Dataset, Input, Model, Output

from components._common import seppo_component


@seppo_component
def train_round(
    config_json: str,
    dataset: Input[Dataset],
    round_idx: int,
    kfp_run_id: str,
    model: Output[Model],
    references: Input[List[Dataset]] = None,
) -> None:
    """Round k: U updates on (winner, reference sample) pairs, then θ_k is committed to the bank."""
    import json
    import os
    import subprocess
    import sys

    from seppo_lib.config import SeppoConfig
    from seppo_lib.identity import bind, write_resolved
    from seppo_lib.steps import train_round as step

    os.environ.setdefault("KFP_RUN_ID", kfp_run_id)
    cfg = bind(SeppoConfig.from_json(config_json), dataset.path)  # the run's resolved inputs, never re-resolved
    ref_dirs = [r.path for r in references] if references else None
    if cfg.train.num_processes > 1:  # one process per GPU; the step call below then finds θ_k committed
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={cfg.train.num_processes}",
                  "-m", "seppo_lib.cli", "train-round", "--config-json", cfg.to_json(), "--round", str(round_idx), "--data", dataset.path]
        subprocess.run(launch + (["--refs", *ref_dirs] if ref_dirs else []), check=True)
    result = step.run(cfg, dataset.path, round_idx, ref_dirs)
    pointer = {"bank_uri": result["bank_uri"], "run_id": cfg.run_id, "checkpoint": result["checkpoint"], "round": round_idx}
    os.makedirs(model.path, exist_ok=True)
    with open(os.path.join(model.path, "checkpoint.json"), "w") as f:
        json.dump(pointer, f, indent=1)
    write_resolved(cfg, model.path)
    model.metadata.update({**pointer, "step": result["step"], "skipped": result["skipped"], "config_hash": cfg.config_hash()})
    model.metadata.update({f"train_{k}": float(v) for k, v in result["metrics"].items()})
