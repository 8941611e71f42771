"""Component prepare_data -> seppo_lib.steps.prepare_data.run."""

from kfp.dsl import Dataset, Output

from components._common import seppo_component


@seppo_component
def prepare_data(config_json: str, kfp_run_id: str, dataset: Output[Dataset]) -> None:
    """Validate every source row, write latent + text-embedding shards to `dataset`, commit θ_0."""
    import os

    from seppo_lib.config import SeppoConfig
    from seppo_lib.steps import prepare_data as step

    os.environ.setdefault("KFP_RUN_ID", kfp_run_id)
    cfg = SeppoConfig.from_json(config_json)
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
        "run_id": cfg.run_id,
        "bank_uri": meta["bank_uri"],
    })
