"""End to end on a tiny random model: every method, 3 rounds (ALGORITHM.md test 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.config import SeppoConfig
from seppo_lib.orchestrate import run_rounds
from seppo_lib.steps.common import open_bank
from seppo_lib.tracking import InMemoryLogger
from tests.helpers import make_image_folder, random_step_inputs, tiny_config

FAST = ["train.updates_per_round=3", "sampling.num_inference_steps=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "pairs", n=16, paired=True)


def _weights(cfg: SeppoConfig, ckpt: str) -> dict[str, torch.Tensor]:
    path = open_bank(cfg).fetch(ckpt) / "unet" / "diffusion_pytorch_model.safetensors"
    return load_file(str(path))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("method", ["sft", "dpo", "spin", "seppo"])
def test_three_rounds_per_method(method: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = tiny_config(tmp_path, data_dir, f"train.method={method}", *FAST)
    run_logger = InMemoryLogger()
    summary = run_rounds(cfg, run_logger)
    bank = open_bank(cfg)
    entries = bank.entries()
    assert [e.round for e in entries] == [0, 1, 2, 3]
    assert [e.parent for e in entries] == [None, "initial", entries[1].id, entries[2].id]
    assert summary.final_checkpoint == entries[-1].id
    # trainable parameters moved, θ_0 in the bank did not
    theta0_before = load_file(str(bank.fetch("initial") / "unet" / "diffusion_pytorch_model.safetensors"))
    assert _max_diff(_weights(cfg, entries[-1].id), theta0_before) > 1e-4
    bank.cache_dir.joinpath("initial", ".verified").unlink()
    assert _max_diff(_weights(cfg, "initial"), theta0_before) == 0.0
    # a metric row for every update with the ALGORITHM.md names
    steps = [s for s, _ in run_logger.metrics]
    assert steps == list(range(1, 3 * 3 + 1))
    names = {"loss", "grad_norm", "lr", "err_policy_w"}
    if method != "sft":
        names |= {"implicit_acc", "flip_rate", "err_ref_w", "err_policy_r", "err_ref_r", "ref_ckpt"}
    assert names <= set(run_logger.metrics[0][1])
    if method == "spin":
        assert [m["ref_ckpt"] for _, m in run_logger.metrics] == [0.0] * 3 + [1.0] * 3 + [2.0] * 3
    if method == "dpo":
        assert all(m["ref_ckpt"] == 0.0 for _, m in run_logger.metrics)


def test_reference_model_is_frozen_during_a_round(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference UNet's parameters are bit-identical before and after every update."""
    from seppo_lib.training import trainer

    seen: list[trainer.ReferenceModel] = []
    original = trainer.ReferenceModel.__init__

    def spy(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        seen.append(self)

    monkeypatch.setattr(trainer.ReferenceModel, "__init__", spy)
    cfg = tiny_config(tmp_path, data_dir, "train.method=seppo", "train.n_rounds=1", *FAST)
    run_rounds(cfg, InMemoryLogger())
    ref = seen[0]
    assert all(not p.requires_grad for p in ref.unet.parameters())
    theta0 = load_file(str(open_bank(cfg).fetch("initial") / "unet" / "diffusion_pytorch_model.safetensors"))
    assert _max_diff({k: v for k, v in ref.unet.state_dict().items()}, theta0) == 0.0


def test_resume_equals_uninterrupted(tmp_path: Path, data_dir: Path) -> None:
    """Stop after round 2, resume round 3 in a fresh call: final weights equal (<= 1e-6)."""
    full = tiny_config(tmp_path / "full", data_dir, *FAST)
    run_rounds(full, InMemoryLogger())
    part = tiny_config(tmp_path / "part", data_dir, *FAST)
    first = run_rounds(part, InMemoryLogger(), last=2)
    assert len(first.rounds) == 2
    resumed = run_rounds(part, InMemoryLogger())
    assert [r["skipped"] for r in resumed.rounds] == [True, True, False]
    a = _weights(full, open_bank(full).entry_for_round(3).id)  # type: ignore[union-attr]
    b = _weights(part, open_bank(part).entry_for_round(3).id)  # type: ignore[union-attr]
    diff = _max_diff(a, b)
    print(f"resume max abs diff: {diff:.3e}")
    assert diff <= 1e-6


def test_criterion_uses_the_losses_draw(tmp_path: Path, data_dir: Path) -> None:
    """The flip rate the step reports equals the fraction of samples whose policy error on the
    winner, recomputed from the SAME (t, eps), exceeds the reference's."""
    from seppo_lib.diffusion import NoiseDraw, make_pair_batch, model_errors
    from seppo_lib.models import load_model
    from seppo_lib.training.step import compute_loss

    cfg = tiny_config(tmp_path, data_dir, "train.method=seppo")
    model = load_model("builtin:tiny-random", cfg.bank.cache_dir, with_text=False)
    policy = model.unet
    ref = load_model("builtin:tiny-random", cfg.bank.cache_dir, with_text=False).unet
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.002 * torch.randn_like(p))
    inputs = random_step_inputs(8, seed=0)
    _, metrics = compute_loss(cfg, model.noise_scheduler, policy, ref, inputs, torch.device("cpu"))
    batch = make_pair_batch(model.noise_scheduler, inputs.x_w, inputs.x_p, inputs.cond, NoiseDraw(inputs.timesteps, inputs.noise))
    with torch.no_grad():
        pw, rw = model_errors(policy, batch)[:8], model_errors(ref, batch)[:8]
    assert metrics.flip_rate == pytest.approx(float((pw > rw).float().mean()))
    assert 0 < metrics.flip_rate < 1


def test_step_resampling_follows_the_seeded_schedule(tmp_path: Path, data_dir: Path) -> None:
    """reference_resample=step: each update's logged reference is the schedule's draw from the
    bank as it stood at the round's start."""
    from seppo_lib.reference import reference_schedule

    cfg = tiny_config(tmp_path, data_dir, "bank.reference_resample=step", "train.updates_per_round=6", "sampling.num_inference_steps=2")
    run_logger = InMemoryLogger()
    run_rounds(cfg, run_logger)
    ids = open_bank(cfg).ids()
    logged = [int(m["ref_ckpt"]) for _, m in run_logger.metrics]
    for k in (1, 2, 3):
        expected = reference_schedule(ids[:k], "uniform", "step", 6, cfg.train.seed, k)
        assert [ids[i] for i in logged[(k - 1) * 6 : k * 6]] == expected
    assert len(set(logged[12:])) > 1  # round 3 mixes references


def test_rerun_after_gc_skips_the_removed_rounds(tmp_path: Path, data_dir: Path) -> None:
    """gc --keep-last 1 marks rounds 1-2 removed; a rerun of the same run skips them (no retrain,
    no 'already committed' collision) and keeps the final checkpoint."""
    from seppo_lib.bank_admin import gc

    cfg = tiny_config(tmp_path, data_dir, *FAST)
    run_rounds(cfg, InMemoryLogger())
    bank = open_bank(cfg)
    final = bank.entry_for_round(3)
    gc(cfg.bank.uri, bank.run_id, keep_last=1)
    assert bank.entry_for_round(1) is None and bank.entry_for_round(1, include_removed=True) is not None
    again = run_rounds(cfg, InMemoryLogger())
    assert [r["skipped"] for r in again.rounds] == [True, True, True]
    assert bank.entry_for_round(3) == final


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_decays_over_the_whole_run_across_rounds(schedule: str, tmp_path: Path, data_dir: Path) -> None:
    """2 rounds x 2 updates, warmup 0, lr 1e-3: after update t (1..4) the scheduler holds
    cosine 0.5·(1 + cos(π·t/4))·lr = 0.854, 0.5, 0.146, 0 (x1e-3), linear (1 - t/4)·lr = 0.75, 0.5, 0.25, 0.
    Round 2 starts from round 1's saved scheduler state, so its values continue the curve."""
    cfg = tiny_config(tmp_path, data_dir, "train.method=sft", "train.n_rounds=2", "train.updates_per_round=2",
                      "train.warmup_steps=0", "train.lr=0.001", f"train.lr_scheduler={schedule}")  # fmt: skip
    run_logger = InMemoryLogger()
    run_rounds(cfg, run_logger)
    expected = {"cosine": [0.85355339, 0.5, 0.14644661, 0.0], "linear": [0.75, 0.5, 0.25, 0.0]}[schedule]
    assert [m["lr"] for _, m in run_logger.metrics] == pytest.approx([1e-3 * v for v in expected], abs=1e-9)
