"""One training round: U optimizer updates on (winner, partner) pairs, then a bank commit.

Methods share one loop (ALGORITHM.md); their records (`seppo_lib.methods`) say what differs:
`sft` uses winners only; `dpo` and `kto` pair winners with the dataset's losers against the
frozen θ_0; `spin` and `seppo` pair winners with reference samples from the bank (spin = latest
reference, no anchor criterion).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seppo_lib.bank import INITIAL, BankEntry, CheckpointBank, checkpoint_id
from seppo_lib.config import ConfigError, LoraSettings, SeppoConfig
from seppo_lib.data.shards import LatentDataset
from seppo_lib.diffusion import slot_draws, slot_seed, speed_up
from seppo_lib.errors import CheckpointError, DataError, TrainingError
from seppo_lib.lora import AdapterSwap, adapter_parameters, inject_adapter, is_adapter_checkpoint, read_adapter, save_adapter
from seppo_lib.lora import load_adapter_ as load_adapter
from seppo_lib.methods import method_spec
from seppo_lib.families import family_for
from seppo_lib.models import load_unet
from seppo_lib.progress import Progress
from seppo_lib.tracking import NullLogger, RunLogger
from seppo_lib.weight_swap import FullSwap, WeightSwap
from seppo_lib.training.references import ReferenceSet, RoundPlan, plan_round
from seppo_lib.training.state import load_training_state, save_training_state
from seppo_lib.training.step import StepInputs, UpdateMetrics, compute_loss

logger = logging.getLogger(__name__)


@dataclass
class RoundResult:
    entry: BankEntry
    skipped: bool
    metrics: list[dict[str, float]]


def _motion_parameters(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = [p for n, p in unet.named_parameters() if "motion_modules" in n]
    if not params:
        raise CheckpointError(f"model.trainable=motion but {type(unet).__name__} has no motion_modules")
    return params


#: model.trainable -> the parameters that train: all, only AnimateDiff motion modules, or the LoRA adapter's
TRAINABLE = {
    "full": lambda unet: list(unet.parameters()),
    "motion": _motion_parameters,
    "lora": lambda unet: list(adapter_parameters(unet).values()),
}


def trainable_parameters(unet: torch.nn.Module, mode: str) -> list[torch.nn.Parameter]:
    """Parameters that train (`TRAINABLE[mode]`)."""
    return TRAINABLE[mode](unet)


ADAMW_IMPL = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}  # train.adamw_impl


def build_optimizer(cfg: SeppoConfig, params: list[torch.nn.Parameter]) -> tuple[torch.optim.Optimizer, object]:
    from diffusers.optimization import get_scheduler

    t = cfg.train
    opt = torch.optim.AdamW(
        params, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay, **ADAMW_IMPL[t.adamw_impl]
    )
    name = "constant_with_warmup" if t.lr_scheduler == "constant" else t.lr_scheduler
    sched = get_scheduler(name, opt, num_warmup_steps=t.warmup_steps, num_training_steps=t.n_rounds * t.updates_per_round)
    return opt, sched


class ReferenceModel:
    """A frozen denoiser whose weights are swapped in place from bank checkpoints (`seppo_lib.weight_swap`).

    The last `cache_size` checkpoints' weights stay in host memory, so alternating between
    references (reference_resample=step) never rereads a file. With `lora` the denoiser is the base
    (θ_0) with an injected adapter, and only the adapter's tensors are swapped (`AdapterSwap`).
    """

    def __init__(
        self, template_dir: Path, bank: CheckpointBank, device: torch.device, cache_size: int = 4, *,
        channels_last: bool = False, compile: bool = False, lora: LoraSettings | None = None,
    ) -> None:  # fmt: skip
        unet = load_unet(template_dir)
        if lora is not None:
            inject_adapter(unet, lora)
        unet = unet.to(device).requires_grad_(False).eval()
        # template_dir.name: the denoiser folder of every checkpoint
        self.swap: WeightSwap = AdapterSwap(unet, bank) if lora is not None else FullSwap(unet, bank, template_dir.name, cache_size)
        self.unet = speed_up(unet, channels_last=channels_last, compile=compile)

    def use(self, ckpt_id: str) -> torch.nn.Module:
        self.swap.use(ckpt_id)
        return self.unet


def train_round(
    cfg: SeppoConfig,
    dataset: LatentDataset,
    bank: CheckpointBank,
    round_idx: int,
    references: ReferenceSet | None,
    run_logger: RunLogger | None = None,
) -> RoundResult:
    """Run round `round_idx` (1-based) and commit θ_round; idempotent if already committed."""
    from accelerate import Accelerator

    done = bank.entry_for_round(round_idx, include_removed=True)
    if done is not None:
        gone = " (its files were removed by gc)" if done.removed else ""
        logger.info("round %d already committed as %s%s; nothing to do", round_idx, done.id, gone)
        return RoundResult(done, skipped=True, metrics=[])
    parent = bank.entry_for_round(round_idx - 1)
    if parent is None:
        raise CheckpointError(f"round {round_idx - 1} is not committed in {bank.uri}; run the rounds in order")
    plan = plan_round(cfg, bank, round_idx, len(dataset))
    if method_spec(cfg.train.method).needs_pairs and not dataset.paired:
        raise DataError(f"train.method={cfg.train.method} needs paired data (a loser per row); prepare a Pick-a-Pic parquet or a paired folder")
    if plan.needs_samples:
        if references is None:
            raise DataError(f"round {round_idx} of method {cfg.train.method} needs reference samples; run sample_reference first")
        references.check(plan)

    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available())
    if accelerator.num_processes != cfg.train.num_processes:
        raise ConfigError(
            f"train.num_processes={cfg.train.num_processes} but accelerate launched {accelerator.num_processes} processes; set them equal"
        )
    parent_dir = bank.fetch(parent.id)
    lora = cfg.model.lora if cfg.model.trainable == "lora" else None
    folder = plan.family.denoiser_folder  # "unet", or "transformer" (sd3)
    unet_dir = bank.fetch(INITIAL) / folder if lora else parent_dir / folder  # lora: θ_0's UNet + the parent's adapter
    unet = load_unet(unet_dir)
    if lora is not None:
        _adapt(unet, lora, cfg.train.seed, parent.id, parent_dir)
    unet = speed_up(unet, channels_last=cfg.train.channels_last)
    if cfg.train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.requires_grad_(False)
    params = trainable_parameters(unet, cfg.model.trainable)
    for p in params:
        p.requires_grad_(True)
    optimizer, lr_scheduler = build_optimizer(cfg, params)
    progress = {"global_step": 0, "samples_seen": 0}
    if (parent_dir / "state").is_dir():
        progress = load_training_state(parent_dir / "state", optimizer, lr_scheduler)
    expected_seen = (round_idx - 1) * cfg.samples_per_round
    if progress["samples_seen"] != expected_seen:
        raise CheckpointError(f"{parent.id} saw {progress['samples_seen']} samples, round {round_idx} expects {expected_seen}")
    unet, optimizer = accelerator.prepare(unet, optimizer)
    unet = speed_up(unet, compile=cfg.train.compile)
    unet.train()
    fast = {"channels_last": cfg.train.channels_last, "compile": cfg.train.compile}
    ref = ReferenceModel(unet_dir, bank, accelerator.device, lora=lora, **fast) if plan.ref_ids else None

    metrics = _run_updates(cfg, accelerator, unet, optimizer, lr_scheduler, ref, dataset, plan, references, run_logger or NullLogger(), progress)
    progress["samples_seen"] = expected_seen + cfg.samples_per_round
    if accelerator.is_main_process:
        base_model = cfg.resolved.base_model if cfg.resolved else None
        _commit(accelerator.unwrap_model(unet), optimizer, lr_scheduler, bank, round_idx, progress, parent.id, lora, base_model)
    accelerator.wait_for_everyone()
    entry = bank.entry_for_round(round_idx)
    if entry is None:
        raise CheckpointError(f"round {round_idx} finished but its checkpoint is not in {bank.uri}")
    return RoundResult(entry, skipped=False, metrics=metrics)


def _adapt(unet: torch.nn.Module, lora: LoraSettings, seed: int, parent_id: str, parent_dir: Path) -> None:
    """Inject the adapter into the base UNet and load the parent's (round 1: the fresh adapter, B = 0, so θ_0 exactly)."""
    inject_adapter(unet, lora, seed)
    if parent_id == INITIAL:
        return
    if not is_adapter_checkpoint(parent_dir):
        raise CheckpointError(f"model.trainable=lora but checkpoint {parent_id} holds no adapter/; it is not from a lora run")
    load_adapter(unet, read_adapter(parent_dir)[0])


def _run_updates(
    cfg: SeppoConfig,
    accelerator,  # type: ignore[no-untyped-def]
    unet: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,  # type: ignore[no-untyped-def]
    ref: ReferenceModel | None,
    dataset: LatentDataset,
    plan: RoundPlan,
    references: ReferenceSet | None,
    run_logger: RunLogger,
    progress: dict[str, int],
) -> list[dict[str, float]]:
    t = cfg.train
    history = []
    bar = Progress(range(t.updates_per_round), desc=f"round {plan.round_idx} ({t.method})", unit="update",
                   disable=not accelerator.is_main_process)  # fmt: skip
    for u in bar:
        where = f"round {plan.round_idx} update {u + 1}"
        ref_id = plan.ref_ids[u] if plan.ref_ids else None
        ref_unet = ref.use(ref_id) if ref and ref_id else None
        totals = _accumulate(cfg, accelerator, unet, ref_unet, dataset, plan, references, u)
        grad_norm = accelerator.clip_grad_norm_(unet.parameters(), t.max_grad_norm)
        _ensure_finite(accelerator, where, loss=torch.tensor(totals.loss).isfinite(), grad_norm=torch.as_tensor(grad_norm).isfinite())
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        _ensure_finite(accelerator, where, weight=torch.stack([p.detach().isfinite().all() for p in unet.parameters()]).all())
        progress["global_step"] += 1
        row = totals.as_dict()
        row.update(grad_norm=float(grad_norm), lr=float(lr_scheduler.get_last_lr()[0]), round=float(plan.round_idx))
        if ref_id is not None:
            row["ref_ckpt"] = float(plan.bank_ids.index(ref_id))
        run_logger.log_metrics(row, step=progress["global_step"])
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
    return history


def _accumulate(
    cfg: SeppoConfig,
    accelerator,  # type: ignore[no-untyped-def]
    unet: torch.nn.Module,
    ref_unet: torch.nn.Module | None,
    dataset: LatentDataset,
    plan: RoundPlan,
    references: ReferenceSet | None,
    update: int,
) -> UpdateMetrics:
    """Gradients of one update summed over its micro-batches (all-reduced once, on the last one).

    Policy and reference forwards both run under the accelerator's autocast, so they compute
    in the same precision (at the first update the policy is the reference: every Δ is 0).
    """
    t = cfg.train
    totals = UpdateMetrics.zeros()
    for micro in range(t.grad_accum):
        start = ((update * t.grad_accum + micro) * t.num_processes + accelerator.process_index) * t.batch_size
        slots = np.arange(start, start + t.batch_size)
        inputs = _step_inputs(cfg, dataset, plan, references, slots)
        sync = contextlib.nullcontext() if micro == t.grad_accum - 1 else accelerator.no_sync(unet)
        with sync:
            with accelerator.autocast():
                loss, m = compute_loss(cfg, plan.noise_scheduler, unet, ref_unet, inputs, accelerator.device)
            accelerator.backward(loss / t.grad_accum)
        totals = totals + m.scaled(1.0 / t.grad_accum)
    return totals


def _ensure_finite(accelerator, where: str, **finite: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    """Raise TrainingError (in every process alike) if any named flag is False in any process."""
    bad = torch.stack([~flag.to(accelerator.device) for flag in finite.values()]).float()
    bad = accelerator.reduce(bad, reduction="sum")
    names = [name for name, count in zip(finite, bad.tolist(), strict=True) if count > 0]
    if names:
        raise TrainingError(
            f"{where}: non-finite {names[0]}; training stopped and nothing was committed (lower train.lr or train.beta, check the data)"
        )


def _step_inputs(
    cfg: SeppoConfig,
    dataset: LatentDataset,
    plan: RoundPlan,
    references: ReferenceSet | None,
    slots: np.ndarray,
) -> StepInputs:
    batch = dataset.get(plan.rows[slots])
    x_w = batch.latents_w
    partner = None
    if method_spec(cfg.train.method).partner == "data_loser":
        partner = batch.latents_l
    elif plan.needs_samples and references is not None:
        partner = references.latents_for(slots)
    seeds = [slot_seed(cfg.train.seed, plan.round_idx, int(j)) for j in slots]
    flip_prob = 0.5 if cfg.data.random_flip else 0.0
    num_train_timesteps = int(plan.noise_scheduler.config.num_train_timesteps)
    draws = slot_draws(seeds, tuple(x_w.shape[1:]), num_train_timesteps, cfg.data.caption_dropout, flip_prob,
                       lambda g: plan.family.draw_timestep(g, plan.noise_scheduler))  # fmt: skip
    cond = batch.cond.where(draws.drop, dataset.uncond)
    x_w = torch.where(_bcast(draws.flip, x_w), x_w.flip(-1), x_w)
    if partner is not None:
        partner = torch.where(_bcast(draws.flip, partner), partner.flip(-1), partner)
    return StepInputs(x_w=x_w, x_p=partner, cond=cond, timesteps=draws.noise.timesteps, noise=draws.noise.noise)


def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _commit(
    unet: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,  # type: ignore[no-untyped-def]
    bank: CheckpointBank,
    round_idx: int,
    progress: dict[str, int],
    parent_id: str,
    lora: LoraSettings | None = None,
    base_model: str | None = None,
) -> BankEntry:
    """Commit θ_round: the UNet (or, with `lora`, the adapter only, on the bank's θ_0) and the training state."""
    with tempfile.TemporaryDirectory() as tmp:
        if lora is None:
            unet.save_pretrained(Path(tmp) / family_for(unet).denoiser_folder, safe_serialization=True)
        else:
            save_adapter(unet, tmp, lora, base_model)
        save_training_state(Path(tmp) / "state", optimizer, lr_scheduler, dict(progress))
        step = progress["global_step"]
        return bank.commit(tmp, checkpoint_id(step), round_idx=round_idx, step=step, parent=parent_id)
