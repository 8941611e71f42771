"""Trainer invariants that a wrong reference or a wrong split of the work breaks (ALGORITHM.md tests 6-8).

- test 7: at the first update the policy is the reference, so in every precision the loss is
  exactly log 2 and nothing flips (the reference forward runs under the policy's autocast);
- test 8: 2 processes x batch b, 1 process x batch 2b and 1 process x b x 2 accumulation give
  the same weights (per-sample draws depend on the global sample index, not the rank);
- test 6: the weights the step actually receives as reference, fingerprinted in every update
  over 3 rounds, are the selected checkpoint's;
- a diverging round stops with a one-line TrainingError and commits nothing.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.config import SeppoConfig
from seppo_lib.errors import TrainingError
from seppo_lib.orchestrate import ensure_prepared, round_dir, run_rounds
from seppo_lib.reference import reference_schedule
from seppo_lib.steps import sample_reference
from seppo_lib.steps.common import open_bank
from seppo_lib.tracking import InMemoryLogger
from tests.helpers import make_image_folder, tiny_config

REPO = Path(__file__).resolve().parents[2]
FAST = ["sampling.num_inference_steps=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "pairs", n=16, paired=True)


def _bank_weights(cfg: SeppoConfig, ckpt: str) -> dict[str, torch.Tensor]:
    return load_file(str(open_bank(cfg).fetch(ckpt) / "unet" / "diffusion_pytorch_model.safetensors"))


def _fingerprint(weights: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.fixture
def fresh_accelerator_state() -> Iterator[None]:
    """accelerate keeps one mixed-precision setting per process; these tests change it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("fresh_accelerator_state")
@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
@pytest.mark.parametrize("method", ["seppo", "spin"])
def test_first_update_is_log2_and_flips_nothing(method: str, precision: str, tmp_path: Path, data_dir: Path) -> None:
    """On CPU accelerate autocasts bf16; it runs fp16 without autocast (the check then holds trivially)."""
    cfg = tiny_config(
        tmp_path, data_dir, f"train.method={method}", f"train.mixed_precision='{precision}'",
        "train.n_rounds=1", "train.updates_per_round=1", *FAST,
    )
    run_logger = InMemoryLogger()
    run_rounds(cfg, run_logger)
    step, first = run_logger.metrics[0]
    print(f"{method}/{precision}: loss {first['loss']!r} flip_rate {first['flip_rate']!r}")
    assert step == 1
    assert first["flip_rate"] == 0.0
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["err_policy_w"] == first["err_ref_w"] and first["err_policy_r"] == first["err_ref_r"]


def _split_config(tmp: Path, data: Path, batch: int, accum: int, processes: int) -> SeppoConfig:
    return tiny_config(
        tmp, data, "train.method=seppo", "train.n_rounds=1", "train.updates_per_round=2", "data.random_flip=true",
        "data.caption_dropout=0.3", f"train.batch_size={batch}", f"train.grad_accum={accum}",
        f"train.num_processes={processes}", *FAST,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_round_two_processes(cfg: SeppoConfig) -> None:
    """Round 1 of `cfg` (num_processes=2) as 2 CPU processes under torchrun (gloo), as accelerate's own multi-CPU tests launch."""
    data = ensure_prepared(cfg)
    refs = round_dir(cfg, 1) / "refs-000"
    sample_reference.run(cfg, data, 1, refs, 0, 1)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(_free_port())]
    cmd = [*launch, "-m", "seppo_lib.cli", "train-round", "--config-json", cfg.to_json(), "--round", "1",
           "--data", str(data), "--refs", str(refs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_work_split_gives_the_same_weights(tmp_path: Path, data_dir: Path) -> None:
    """1 process x batch 4 == 1 process x 2 x 2 accumulation == 2 processes (gloo) x batch 2, after a round."""
    one = _split_config(tmp_path / "one", data_dir, batch=4, accum=1, processes=1)
    accum = _split_config(tmp_path / "accum", data_dir, batch=2, accum=2, processes=1)
    two = _split_config(tmp_path / "two", data_dir, batch=2, accum=1, processes=2)
    run_rounds(one, InMemoryLogger())
    run_rounds(accum, InMemoryLogger())
    _train_round_two_processes(two)
    base = _bank_weights(one, open_bank(one).entry_for_round(1).id)  # type: ignore[union-attr]
    theta0 = _bank_weights(one, "initial")
    assert max(float((base[k] - theta0[k]).abs().max()) for k in base) > 1e-4  # the round moved the weights
    for name, cfg in (("accum", accum), ("two processes", two)):
        other = _bank_weights(cfg, open_bank(cfg).entry_for_round(1).id)  # type: ignore[union-attr]
        diff = max(float((base[k] - other[k]).abs().max()) for k in base)
        print(f"{name} vs one process x batch 4: max abs weight diff {diff:.3e}")
        assert diff <= 1e-6


@pytest.mark.parametrize("method", ["dpo", "spin", "seppo"])
def test_reference_weights_are_the_selected_checkpoint(
    method: str, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 3 rounds, every reference the step receives has the weights of dpo θ_0, spin θ_{k-1}, seppo the drawn one."""
    from seppo_lib.training import trainer

    used: list[str] = []
    compute_loss = trainer.compute_loss

    def spy(cfg, noise_scheduler, unet, ref_unet, inputs, device):  # type: ignore[no-untyped-def]
        used.append(_fingerprint(ref_unet.state_dict()))
        return compute_loss(cfg, noise_scheduler, unet, ref_unet, inputs, device)

    monkeypatch.setattr(trainer, "compute_loss", spy)
    updates = 4
    cfg = tiny_config(tmp_path, data_dir, f"train.method={method}", "bank.reference_resample=step",
                      f"train.updates_per_round={updates}", "train.grad_accum=1", *FAST)
    run_rounds(cfg, InMemoryLogger())
    ids = open_bank(cfg).ids()
    prints = {i: _fingerprint(_bank_weights(cfg, i)) for i in ids}
    assert len(set(prints.values())) == len(ids) == 4
    expected: list[str] = []
    for k in (1, 2, 3):
        if method == "seppo":
            expected += reference_schedule(ids[:k], "uniform", "step", updates, cfg.train.seed, k)
        else:
            expected += [ids[0] if method == "dpo" else ids[k - 1]] * updates
    if method == "seppo":  # the schedule must reach back past the parent, or a stale reference would pass
        assert any(ref != ids[(j // updates)] for j, ref in enumerate(expected))
    assert used == [prints[i] for i in expected]


def _assert_stopped(cfg: SeppoConfig, expected: str) -> None:
    with pytest.raises(TrainingError) as err:
        run_rounds(cfg, InMemoryLogger())
    message = str(err.value)
    print(message)
    assert "\n" not in message and message.startswith(expected)
    assert open_bank(cfg).entry_for_round(1) is None


def test_non_finite_data_stops_the_round(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An inf in the winner latents (a corrupt shard) makes the first update's loss non-finite."""
    from seppo_lib.data.shards import LatentDataset

    get = LatentDataset.get

    def corrupt(self, indices):  # type: ignore[no-untyped-def]
        batch = get(self, indices)
        batch.latents_w[0].fill_(float("inf"))
        return batch

    monkeypatch.setattr(LatentDataset, "get", corrupt)
    cfg = tiny_config(tmp_path, data_dir, "train.n_rounds=1", *FAST)
    ensure_prepared(cfg)
    _assert_stopped(cfg, "round 1 update 1: non-finite loss")


def test_non_finite_weight_stops_the_round(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An optimizer update that writes a NaN weight (at update 2) stops the round there."""
    from seppo_lib.training import trainer

    build = trainer.build_optimizer

    def poisoned(cfg, params):  # type: ignore[no-untyped-def]
        opt, sched = build(cfg, params)
        step, calls = opt.step, []

        def step_then_poison(*args, **kwargs):  # type: ignore[no-untyped-def]
            out = step(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                with torch.no_grad():
                    params[0].view(-1)[0] = float("nan")
            return out

        opt.step = step_then_poison  # type: ignore[method-assign]
        return opt, sched

    monkeypatch.setattr(trainer, "build_optimizer", poisoned)
    cfg = tiny_config(tmp_path, data_dir, "train.n_rounds=1", *FAST)
    _assert_stopped(cfg, "round 1 update 2: non-finite weight")
