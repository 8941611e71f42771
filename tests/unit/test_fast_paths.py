"""CPU guards of the speed switches (train.channels_last / adamw_impl / compile, sampling.precision /
channels_last / compile): each fast path computes what the plain fp32 path computes.

Tolerances (float32 on the tiny pixel model, β = 50): loss within 1e-5 relative, gradients within
5e-4 of their largest magnitude (channels-last convolutions sum in another order; the β-scaled
logistic amplifies that); AdamW foreach is bit-identical to the default per-tensor loop, fused within
1e-6 absolute after 3 steps; a channels-last or compiled sampler within 1e-4 absolute of the eager one;
a bf16 sampler (which changes numerics, so it is off by default) within 10% relative RMS of fp32.
The sampler's defaults leave the weights and the samples bit-identical. torch.compile takes minutes on 2 CPU
cores, so its guards are `slow`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from seppo_lib.config import SamplingConfig
from seppo_lib.diffusion import speed_up
from seppo_lib.models import load_model
from seppo_lib.sampling import prepare_sampler, sample_latents
from seppo_lib.training.step import compute_loss
from tests.helpers import random_step_inputs, tiny_config

LOSS_RTOL = 1e-5
GRAD_RTOL = 5e-4
SAMPLE_ATOL = 1e-4
NO_WARMUP = ("train.warmup_steps=0",)  # the tiny preset warms up from LR 0: its first updates would not move


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A perturbed tiny policy, its unperturbed reference, and the scheduler."""
    cache = tmp_path_factory.mktemp("cache")
    model = load_model("builtin:tiny-random", cache, with_text=False)
    ref = load_model("builtin:tiny-random", cache, with_text=False).unet.requires_grad_(False)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.003 * torch.randn_like(p))
    return model, ref


def _loss_and_grads(cfg, sched, policy, ref):  # type: ignore[no-untyped-def]
    loss, _ = compute_loss(cfg, sched, policy, ref, random_step_inputs(6, seed=1), torch.device("cpu"))
    return loss, torch.autograd.grad(loss, list(policy.parameters()))


def _assert_same_step(a, b) -> None:  # type: ignore[no-untyped-def]
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=LOSS_RTOL)
    worst = max(float((x - y).abs().max() / (y.abs().max() + 1e-12)) for x, y in zip(grads_a, grads_b, strict=True))
    assert worst < GRAD_RTOL, worst


def test_channels_last_step_equals_the_plain_step(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, ref = tiny
    cfg = tiny_config(tmp_path, tmp_path, "train.beta=50")
    plain = _loss_and_grads(cfg, model.noise_scheduler, model.unet, ref)
    fast_policy = speed_up(copy.deepcopy(model.unet), channels_last=True)
    fast_ref = speed_up(copy.deepcopy(ref), channels_last=True)
    conv = fast_policy.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    _assert_same_step(_loss_and_grads(cfg, model.noise_scheduler, fast_policy, fast_ref), plain)


def _updated(cfg, unet, grads, steps: int = 3) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    from seppo_lib.training.trainer import build_optimizer

    unet = copy.deepcopy(unet)
    optimizer, _ = build_optimizer(cfg, list(unet.parameters()))
    for k in range(steps):
        for p, g in zip(unet.parameters(), grads, strict=True):
            p.grad = g * (k + 1)
        optimizer.step()
    return [p.detach() for p in unet.parameters()]


@pytest.mark.parametrize(("impl", "atol"), [("foreach", 0.0), ("fused", 1e-6)])
def test_adamw_kernels_update_like_the_for_loop(tiny, tmp_path: Path, impl: str, atol: float) -> None:  # type: ignore[no-untyped-def]
    """The default (foreach) is bit-identical to the per-tensor loop torch used on CPU before; fused is within rounding."""
    model, ref = tiny
    cfg = tiny_config(tmp_path, tmp_path, "train.beta=50")
    _, grads = _loss_and_grads(cfg, model.noise_scheduler, model.unet, ref)
    plain = _updated(tiny_config(tmp_path, tmp_path, *NO_WARMUP, "train.adamw_impl=for-loop"), model.unet, grads)
    fast = _updated(tiny_config(tmp_path, tmp_path, *NO_WARMUP, f"train.adamw_impl={impl}"), model.unet, grads)
    moved = max(float((p - q.detach()).abs().max()) for p, q in zip(plain, model.unet.parameters(), strict=True))
    worst = max(float((p - q).abs().max()) for p, q in zip(fast, plain, strict=True))
    assert moved > 1e-4 and worst <= atol, (moved, worst)


def test_resumed_optimizer_keeps_this_runs_kernel(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A round resumes the optimizer state the previous round saved; the kernel is still the config's."""
    from seppo_lib.training.state import load_training_state, save_training_state
    from seppo_lib.training.trainer import build_optimizer

    model, _ = tiny
    params = list(copy.deepcopy(model.unet).parameters())
    saved, sched = build_optimizer(tiny_config(tmp_path, tmp_path, "train.adamw_impl=for-loop"), params)
    save_training_state(tmp_path / "state", saved, sched, {"global_step": 0, "samples_seen": 0})
    fused, fused_sched = build_optimizer(tiny_config(tmp_path, tmp_path, "train.adamw_impl=fused"), params)
    load_training_state(tmp_path / "state", fused, fused_sched)
    assert fused.param_groups[0]["fused"] is True


def test_reference_model_keeps_channels_last_through_swaps(tmp_path: Path) -> None:
    """The trainer's reference UNet is channels-last when configured and a weight swap keeps the layout and the values."""
    from seppo_lib.bank import CheckpointBank
    from seppo_lib.models import resolve_model_dir
    from seppo_lib.training.trainer import ReferenceModel

    folder = resolve_model_dir("builtin:tiny-random", tmp_path / "cache")
    bank = CheckpointBank.open(str(tmp_path / "bank"), "run", tmp_path / "bank-cache")
    bank.ensure_initial(folder)
    ref = ReferenceModel(folder / "unet", bank, torch.device("cpu"), channels_last=True)
    with torch.no_grad():
        ref.unet.conv_in.weight.zero_()
    unet = ref.use("initial")
    weight = unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and weight.abs().sum() > 0


_SCHED = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def _samples(unet: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    cond, uncond = torch.randn(3, 16, 32, generator=g), torch.randn(1, 16, 32, generator=g)
    return sample_latents(unet, _SCHED, cond, uncond, [11, 12, 13], (3, 8, 8), steps=4, guidance_scale=3.0, batch_size=2)


def test_default_sampler_settings_leave_weights_and_samples_bit_identical(tiny) -> None:  # type: ignore[no-untyped-def]
    _, ref = tiny
    unet = copy.deepcopy(ref)
    before = [p.detach().clone() for p in unet.parameters()]
    prepared = prepare_sampler(unet, SamplingConfig(), "cpu")
    assert prepared is unet and all(torch.equal(a, b) for a, b in zip(before, unet.parameters(), strict=True))
    assert torch.equal(_samples(prepared), _samples(ref))


def test_channels_last_sampler_equals_the_plain_sampler(tiny) -> None:  # type: ignore[no-untyped-def]
    _, ref = tiny
    fast = prepare_sampler(copy.deepcopy(ref), SamplingConfig(channels_last=True), "cpu")
    assert fast.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert (_samples(fast) - _samples(ref)).abs().max() < SAMPLE_ATOL


def test_bf16_sampler_runs_in_bf16_and_returns_fp32_close_to_fp32(tiny) -> None:  # type: ignore[no-untyped-def]
    """sampling.precision=bf16 changes numerics (so it is off by default); it stays near the fp32 samples."""
    _, ref = tiny
    fast = prepare_sampler(copy.deepcopy(ref), SamplingConfig(precision="bf16"), "cpu")
    assert next(fast.parameters()).dtype == torch.bfloat16
    out, plain = _samples(fast), _samples(ref)
    relative_rms = float((out - plain).pow(2).mean().sqrt() / plain.pow(2).mean().sqrt())
    assert out.dtype == torch.float32 and 0 < relative_rms < 0.1, relative_rms  # measured: 0.03


@pytest.mark.slow
def test_compiled_sampler_equals_the_eager_sampler_without_recompiles(tiny) -> None:  # type: ignore[no-untyped-def]
    from torch._dynamo.utils import counters

    _, ref = tiny
    fast = prepare_sampler(copy.deepcopy(ref), SamplingConfig(compile=True), "cpu")
    assert (_samples(fast) - _samples(ref)).abs().max() < SAMPLE_ATOL
    frames = counters["frames"]["ok"]
    fast.load_state_dict(ref.state_dict())  # a reference swap is an in-place weight copy
    _samples(fast)
    assert counters["frames"]["ok"] == frames


@pytest.mark.slow
def test_compiled_step_equals_the_eager_step(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, ref = tiny
    cfg = tiny_config(tmp_path, tmp_path, "train.beta=50")
    plain = _loss_and_grads(cfg, model.noise_scheduler, model.unet, ref)
    fast_policy = speed_up(copy.deepcopy(model.unet), compile=True)
    fast_ref = speed_up(copy.deepcopy(ref), compile=True)
    _assert_same_step(_loss_and_grads(cfg, model.noise_scheduler, fast_policy, fast_ref), plain)
