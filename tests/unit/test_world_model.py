"""The shipped base model of the built-in world, its recipe, and the world CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.models import load_model
from seppo_lib.world.builtin import BUILTIN_WORLD_BASE
from seppo_lib.world.pretrain import Recipe, pretrain


MAX_WEIGHT_BYTES = 20 * 1024 * 1024
TINY = dict(
    steps=3, batch_size=2, warmup_steps=1, block_out_channels=(8, 16, 16), attention_head_dim=8, norm_num_groups=8,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_model("builtin:world-base", tmp_path_factory.mktemp("cache"))


def test_base_model_is_the_documented_architecture(base) -> None:  # type: ignore[no-untyped-def]
    unet = base.unet
    assert type(unet).__name__ == "UNet2DConditionModel"
    assert (unet.config.sample_size, unet.config.in_channels, unet.config.out_channels) == (32, 3, 3)
    assert unet.config.cross_attention_dim == 384 == base.text_encoder.config.hidden_size
    assert base.vae is None and base.latent_shape(32) == (3, 32, 32)
    sched = base.noise_scheduler
    assert type(sched).__name__ == "DDPMScheduler"
    assert (sched.config.prediction_type, sched.config.num_train_timesteps) == ("epsilon", 1000)


def test_text_encoder_is_referenced_not_copied() -> None:
    meta = json.loads((BUILTIN_WORLD_BASE / "seppo_model.json").read_text())
    assert meta == {"text_encoder": "builtin:minilm"}
    assert not (BUILTIN_WORLD_BASE / "text_encoder").exists()
    assert not (BUILTIN_WORLD_BASE / "tokenizer").exists()


def test_weights_are_small_safetensors() -> None:
    files = [p for p in BUILTIN_WORLD_BASE.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert weights and not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    size = sum(p.stat().st_size for p in weights)
    print(f"base model weights: {size / 1e6:.2f} MB")
    assert size <= MAX_WEIGHT_BYTES
    assert all(t.dtype == torch.float32 for p in weights for t in load_file(str(p)).values())


def test_recipe_records_command_seed_data_steps_and_accuracy() -> None:
    doc = json.loads((BUILTIN_WORLD_BASE / "recipe.json").read_text())
    assert doc["command"].startswith("seppo world pretrain ")
    assert f"--steps {doc['recipe']['steps']}" in doc["command"] and f"--seed {doc['recipe']['seed']}" in doc["command"]
    assert doc["data"]["images_seen"] == doc["recipe"]["steps"] * doc["recipe"]["batch_size"]
    assert doc["data"]["wrong_attribute_images"] > 0 and doc["data"]["blurred_images"] > 0
    test_all = doc["measured_accuracy"]["test"]["all"]
    assert 0.2 <= test_all <= 0.7, f"held-out accuracy {test_all} is outside the intended 20-70%"


def test_base_model_samples_an_image_in_seconds(base) -> None:  # type: ignore[no-untyped-def]
    from seppo_lib.bench.scoring import generate
    from seppo_lib.config import load_config

    cfg = load_config("world")
    start = time.perf_counter()
    images = generate(
        base, ["a red circle left of a blue square", "two green squares"], [0, 1], cfg.sampling,
        resolution=cfg.data.resolution, max_tokens=cfg.data.max_caption_tokens,
    )
    elapsed = time.perf_counter() - start
    print(f"2 images with {cfg.sampling.num_inference_steps} DDIM steps + CFG: {elapsed:.2f}s")
    assert [(im.mode, im.size) for im in images] == [("RGB", (32, 32))] * 2
    assert elapsed < 30


def test_training_modules_never_import_the_scorer() -> None:
    code = (
        "import sys\n"
        "import seppo_lib.training.trainer, seppo_lib.steps.train_round, seppo_lib.steps.sample_reference\n"
        "import seppo_lib.steps.prepare_data, seppo_lib.world.pretrain, seppo_lib.orchestrate\n"
        "assert 'seppo_lib.world.scorer' not in sys.modules, 'a training module imported the scorer'\n"
        "import seppo_lib.world.scorer\n"
        "assert 'seppo_lib.world.scorer' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_pretrain_writes_a_loadable_model_and_snapshots_equal_shorter_runs(tmp_path: Path) -> None:
    """A 3-step run with --save-every 2 leaves a step-2 snapshot bit-identical to a 2-step run."""
    doc = pretrain(tmp_path / "m", Recipe(**TINY), save_every=2, command="test")
    assert doc["recipe"]["steps"] == 3 and doc["data"]["images_seen"] == 6
    model = load_model(str(tmp_path / "m"), tmp_path / "cache")
    assert model.unet.config.cross_attention_dim == 384
    pretrain(tmp_path / "short", Recipe(**{**TINY, "steps": 2}))
    a = load_file(str(tmp_path / "m.step-000002" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "short" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    c = load_file(str(tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 0.0


def test_recipe_rejects_bad_fractions(tmp_path: Path) -> None:
    from seppo_lib.errors import DataError

    with pytest.raises(DataError, match="wrong_fraction"):
        pretrain(tmp_path / "m", Recipe(**{**TINY, "wrong_fraction": 1.5}))


def test_cli_world_generate_and_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seppo_lib.cli import main

    assert main(["world", "generate", "--out", str(tmp_path / "d"), "--n", "3", "--paired", "--split", "test"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "d" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all((tmp_path / "d" / r["loser_file_name"]).is_file() for r in rows)
    assert "wrote 3 test images with losers" in capsys.readouterr().out
    for argv in (["world", "--help"], ["world", "pretrain", "--help"], ["bench", "quality", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "wrong-fraction" in capsys.readouterr().out
