"""Step sample_reference: the round's reference samples for one shard of its slots."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seppo_lib.bank import INITIAL, CheckpointBank
from seppo_lib.config import SeppoConfig
from seppo_lib.data.shards import LatentDataset
from seppo_lib.identity import resolve
from seppo_lib.lora import AdapterSwap, inject_adapter
from seppo_lib.models import load_unet
from seppo_lib.progress import Progress
from seppo_lib.sampling import prepare_sampler, sample_latents, sample_seed
from seppo_lib.steps.common import device, open_bank
from seppo_lib.training.references import plan_round, shard_slots, write_references

logger = logging.getLogger(__name__)


def run(cfg: SeppoConfig, data_dir: str | Path, round_idx: int, output_dir: str | Path, shard: int = 0, n_shards: int = 1) -> dict[str, Any]:
    """Sample reference latents for this shard's slots of round `round_idx`.

    Each checkpoint in the round's schedule is loaded once; each slot's noise comes from
    sample_seed(seed, round, slot), so the result does not depend on shard or batch size.
    """
    cfg = resolve(cfg)
    bank = open_bank(cfg)
    dataset = LatentDataset(data_dir)
    plan = plan_round(cfg, bank, round_idx, len(dataset))
    if not plan.needs_samples:
        logger.info("method %s uses no reference samples; nothing to do", cfg.train.method)
        return {"round": round_idx, "shard": shard, "samples": 0, "ckpt_ids": []}
    slots = shard_slots(len(plan.rows), shard, n_shards)
    slot_refs = [plan.slot_ref(int(j)) for j in slots]
    latents = torch.empty(len(slots), *dataset.latent_shape)
    dev = device()
    s = cfg.sampling
    bar: Progress[None] = Progress(total=len(slots), desc=f"sample round {round_idx} shard {shard}/{n_shards}", unit="img")
    sampler_for = _samplers(cfg, bank, dev, plan.family.denoiser_folder)
    for ckpt_id in dict.fromkeys(slot_refs):
        pick = [i for i, r in enumerate(slot_refs) if r == ckpt_id]
        unet = sampler_for(ckpt_id)
        cond = dataset.get(plan.rows[slots[pick]]).cond
        out = sample_latents(
            unet,
            plan.noise_scheduler.config,
            cond,
            dataset.uncond,
            [sample_seed(cfg.train.seed, round_idx, int(slots[i])) for i in pick],
            dataset.latent_shape,
            scheduler=s.scheduler,
            steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale,
            eta=s.eta,
            batch_size=s.batch_size,
            on_batch=bar.update,
        )
        latents[pick] = out
    bar.close()
    if s.decode_roundtrip:
        latents = _decode_roundtrip(cfg, latents, dev)
    write_references(output_dir, round_idx, slots, latents, slot_refs)
    used = sorted(set(slot_refs))
    logger.info("round %d shard %d: %d reference samples from %s", round_idx, shard, len(slots), ", ".join(used))
    return {"round": round_idx, "shard": shard, "samples": len(slots), "ckpt_ids": used}


def _samplers(cfg: SeppoConfig, bank: CheckpointBank, dev: torch.device, folder: str = "unet") -> Callable[[str], torch.nn.Module]:
    """checkpoint id -> its sampling UNet: each checkpoint's UNet, or (model.trainable=lora) one prepared θ_0 UNet
    whose injected adapter is swapped in place per checkpoint (θ_0 = the zero adapter), never reloading the base."""
    if cfg.model.trainable != "lora":
        return lambda ckpt_id: prepare_sampler(load_unet(bank.fetch(ckpt_id) / folder), cfg.sampling, dev)
    base = load_unet(bank.fetch(INITIAL) / folder)
    inject_adapter(base, cfg.model.lora)
    model = prepare_sampler(base, cfg.sampling, dev)
    swap = AdapterSwap(base, bank)

    def use(ckpt_id: str) -> torch.nn.Module:
        swap.use(ckpt_id)
        return model

    return use


def _decode_roundtrip(cfg: SeppoConfig, latents: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """Decode reference latents to pixels and re-encode them (sampling.decode_roundtrip)."""
    from seppo_lib.export import registry_uri
    from seppo_lib.models import load_model

    uri = cfg.model.pretrained
    model = load_model(uri, cfg.bank.cache_dir, with_text=False, tracking_uri=registry_uri(cfg, uri)).to(dev)
    out = [model.encode_images(model.decode_latents(chunk.to(dev)) * 2 - 1).cpu() for chunk in latents.split(cfg.sampling.batch_size)]
    return torch.cat(out) if out else latents
