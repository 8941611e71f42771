"""Component validate_config -> seppo_lib.steps.validate_config.run (no GPU, no data)."""

from typing import NamedTuple

from kfp.dsl import Artifact, Output

from components._common import seppo_component


@seppo_component
def validate_config(
    config_json: str,
    expected_shape: str,
    shared_storage: bool,
    resolved_config: Output[Artifact],
) -> NamedTuple("ValidatedConfig", [("config_json", str), ("config_hash", str)]):
    """Cheap checks (paths, URIs, MLflow scheme, compiled shape); emits the canonical config JSON (the run id is
    resolve_inputs' to name: it depends on the resolved data and base model)."""
    import json
    from collections import namedtuple

    from seppo_lib.steps import validate_config as step

    info = step.run(config_json, expect=json.loads(expected_shape) or None, shared_storage=shared_storage)
    with open(resolved_config.path, "w") as f:
        f.write(info["config_json"])
    for key in ("config_hash", "name", "method", "bank_uri", "n_rounds", "n_shards", "num_processes"):
        resolved_config.metadata[key] = info[key]
    validated = namedtuple("ValidatedConfig", ["config_json", "config_hash"])
    return validated(info["config_json"], info["config_hash"])
