"""Component prepare_data -> seppo_lib.steps.prepare_data.run.

In the pipeline `config_json` is resolve_inputs' resolved config and `kfp_run_id` is left at its
default, so KFP's cache key is the pinned data SHA and base model version (plus the rest of the
config), never a branch name or a run id: a cached dataset is reused only for the same inputs.
"""

from kfp.dsl import Dataset, Output

from components._common import seppo_component


@seppo_component
def prepare_data(config_json: str, dataset: Output[Dataset], kfp_run_id: str = "") -> None:
    """Validate every source row, write latent + text-embedding shards and the resolved config to `dataset`, commit θ_0."""
    import os

    from seppo_lib.config import SeppoConfig
    from seppo_lib.steps import prepare_data as step

    if kfp_run_id:
        os.environ.setdefault("KFP_RUN_ID", kfp_run_id)
    cfg = SeppoConfig.from_json(config_json)  # resolved (an unresolved config is resolved by the step)
    meta = step.run(cfg, dataset.path)
    report = meta["report"]
    dataset.metadata.update({
        "rows": meta["rows"],
        "rows_total": report["total"],
        "dropped": sum(report["dropped"].values()),
        "dropped_by_reason": report["dropped"],
        "shards": len(meta["shards"]),
        "source": meta["source"],
        "source_md5": meta["source_md5"],
        "output_md5": meta["output_md5"],
        "dvc_rev": meta.get("dvc_rev") or "",
        "config_hash": meta["config_hash"],
        "bank_uri": meta["bank_uri"],
        **{key.removeprefix("seppo."): value for key, value in meta["identity"].items()},  # run_id, data_version, ...
    })
