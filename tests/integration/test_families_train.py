"""One training round per method on each family's tiny model (families/*.py): the denoiser's trainable
weights move, θ_0 in the bank does not, and the shards hold the family's conditioning keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.data.shards import LatentDataset
from seppo_lib.families import family_for
from seppo_lib.orchestrate import run_rounds
from seppo_lib.steps.common import open_bank
from tests.helpers import make_image_folder, tiny_config

# family -> (model URI, resolution, conditioning keys); a new family adds its tiny model here (as in tests/unit/test_families.py)
FAMILY_MODELS = {
    "sd": ("builtin:tiny-random", 8, ["hidden"]),
    "sdxl": ("builtin:tiny-random:sdxl", 16, ["hidden", "pooled", "time_ids"]),
    "sd3": ("builtin:tiny-random:sd3", 16, ["hidden", "pooled"]),
}
SAMPLER = {"sd3": "euler"}  # family -> sampling.scheduler (default: the config's)
FAST_METHOD = "seppo"  # the fast case per family; the other methods are slow
CASES = [
    pytest.param(family, method, marks=[] if method == FAST_METHOD else [pytest.mark.slow])
    for family in FAMILY_MODELS
    for method in ("sft", "dpo", "spin", "seppo")
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "pairs", n=8, paired=True)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize(("family", "method"), CASES)
def test_one_round_trains_the_denoiser_only(family: str, method: str, tmp_path: Path, data_dir: Path) -> None:
    uri, resolution, keys = FAMILY_MODELS[family]
    cfg = tiny_config(tmp_path, data_dir, f"model.pretrained={uri}", f"data.resolution={resolution}", f"train.method={method}",
                      "train.n_rounds=1", "train.updates_per_round=2", "train.grad_accum=1", "sampling.num_inference_steps=2",
                      *([f"sampling.scheduler={SAMPLER[family]}"] if family in SAMPLER else []))  # fmt: skip
    run_rounds(cfg)
    bank = open_bank(cfg)
    entries = bank.entries()
    assert [e.round for e in entries] == [0, 1]
    folder = family_for(bank.fetch("initial")).denoiser_folder
    assert family_for(bank.fetch("initial")).name == family
    theta0 = _weights(bank.fetch("initial") / folder)
    theta1 = _weights(bank.fetch(entries[1].id) / folder)
    assert theta0.keys() == theta1.keys()
    assert max(float((theta0[k] - theta1[k]).abs().max()) for k in theta0) > 1e-5
    bank.cache_dir.joinpath("initial", ".verified").unlink()
    assert all(torch.equal(theta0[k], v) for k, v in _weights(bank.fetch("initial") / folder).items())
    prepared = next(Path(cfg.workdir).rglob("dataset.json")).parent
    dataset = LatentDataset(prepared)
    assert dataset.get([0, 1]).cond.keys() == keys and dataset.uncond.keys() == keys
