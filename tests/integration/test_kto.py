"""Diffusion-KTO on the tiny random model: the step equals the loss written out, and a round trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.orchestrate import run_rounds
from seppo_lib.steps.common import open_bank
from seppo_lib.tracking import InMemoryLogger
from seppo_lib.training.step import compute_loss
from tests.helpers import make_image_folder, perturbed_tiny_models, random_step_inputs, tiny_config
from tests.integration.test_training import FAST, _max_diff, _weights

BETA = 50.0


def test_kto_step_matches_the_official_loss_written_out(tmp_path: Path) -> None:
    """The official script's default loss (separate forwards here): g = e_ref - e_θ per sample over
    winners then losers, kl = max(0, mean g), loss = mean(1 - σ(±β (g - kl))). 1e-5 relative."""
    cfg = tiny_config(tmp_path, tmp_path, "train.method=kto", f"train.beta={BETA}")
    sched, policy, ref = perturbed_tiny_models(tmp_path)
    inp = random_step_inputs(6, seed=1)
    loss, metrics = compute_loss(cfg, sched, policy, ref, inp, torch.device("cpu"))

    def err(unet, x0):  # type: ignore[no-untyped-def]
        noisy = sched.add_noise(x0, inp.noise, inp.timesteps)
        return ((unet(noisy, inp.timesteps, encoder_hidden_states=inp.cond).sample - inp.noise) ** 2).mean(dim=(1, 2, 3))

    with torch.no_grad():
        g = torch.cat([err(ref, inp.x_w) - err(policy, inp.x_w), err(ref, inp.x_p) - err(policy, inp.x_p)])
        kl = g.mean().clamp(min=0)
        sign = torch.cat([torch.ones(6), -torch.ones(6)])
        naive = (1 - torch.sigmoid(sign * BETA * (g - kl))).mean()
    assert loss.item() == pytest.approx(naive.item(), rel=1e-5)
    assert metrics.kl_ref == pytest.approx(kl.item(), rel=1e-5, abs=1e-9)
    assert list(metrics.as_dict()) == ["loss", "implicit_acc", "kl_ref", "err_policy_w", "err_ref_w", "err_policy_r", "err_ref_r"]


def test_a_kto_round_trains_the_policy_and_not_the_reference(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "pairs", n=8, paired=True)
    cfg = tiny_config(tmp_path, data, "train.method=kto", "train.n_rounds=1", *FAST)
    run_logger = InMemoryLogger()
    summary = run_rounds(cfg, run_logger)
    bank = open_bank(cfg)
    theta0 = load_file(str(bank.fetch("initial") / "unet" / "diffusion_pytorch_model.safetensors"))
    assert _max_diff(_weights(cfg, summary.final_checkpoint), theta0) > 1e-4
    bank.cache_dir.joinpath("initial", ".verified").unlink()
    assert _max_diff(_weights(cfg, "initial"), theta0) == 0.0
    rows = [m for _, m in run_logger.metrics]
    assert len(rows) == 3 and all(m["ref_ckpt"] == 0.0 for m in rows)
    assert rows[0]["loss"] == 0.5 and rows[0]["kl_ref"] == 0.0  # policy = reference at the first update
    assert "flip_rate" not in rows[0] and not list(Path(cfg.workdir).rglob("refs-*"))  # no reference samples
