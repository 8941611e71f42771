"""Component sample_reference -> seppo_lib.steps.sample_reference.run (one shard)."""

from kfp.dsl import Dataset, Input, Output

from components._common import seppo_component


@seppo_component
def sample_reference(
    config_json: str,
    dataset: Input[Dataset],
    round_idx: int,
    shard: int,
    n_shards: int,
    references: Output[Dataset],
) -> None:
    """Round k's reference latents for this shard's slots, from checkpoints drawn from the bank."""
    from seppo_lib.config import SeppoConfig
    from seppo_lib.data.prepare import dir_md5
    from seppo_lib.identity import bind
    from seppo_lib.steps import sample_reference as step

    cfg = bind(SeppoConfig.from_json(config_json), dataset.path)  # the run's resolved inputs, never re-resolved
    meta = step.run(cfg, dataset.path, round_idx, references.path, shard, n_shards)
    references.metadata.update({
        "round": round_idx,
        "shard": shard,
        "n_shards": n_shards,
        "samples": meta["samples"],
        "ckpt_ids": meta["ckpt_ids"],
        "md5": dir_md5(references.path, exclude=()),
        "config_hash": cfg.config_hash(),
        "run_id": cfg.run_id,
    })
