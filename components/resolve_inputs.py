"""Component resolve_inputs -> seppo_lib.identity.resolve (CPU, never cached).

Pins the submit-time parameters: `data_rev` (a DVC branch, tag or SHA; "" = data.dvc_rev) becomes
the commit SHA it points at now, `base_model` (e.g. models:/NAME@champion; "" = model.pretrained)
the exact registry version or content hash. Its outputs are parameters of prepare_data (outside
any ParallelFor), so prepare_data's cache key is the resolved SHA and base model, never a branch
name; every later step binds to the resolved config the dataset artifact carries.
"""

from typing import NamedTuple

from components._common import seppo_component


@seppo_component
def resolve_inputs(
    config_json: str, data_rev: str, base_model: str
) -> NamedTuple("ResolvedInputs", [("resolved_config", str), ("run_id", str), ("data_version", str), ("base_model", str)]):
    """The config with its data revision and base model pinned (resolved_config), its run id and versions."""
    from collections import namedtuple

    from seppo_lib.config import SeppoConfig
    from seppo_lib.identity import resolve

    cfg = resolve(SeppoConfig.from_json(config_json), data_rev=data_rev, base_model=base_model)
    resolved = namedtuple("ResolvedInputs", ["resolved_config", "run_id", "data_version", "base_model"])
    return resolved(cfg.to_json(), cfg.run_id, cfg.resolved.data_version, cfg.resolved.base_model)
