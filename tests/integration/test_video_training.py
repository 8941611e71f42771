"""Text-to-video end to end on tiny random models (CPU): a 3-D UNet and an AnimateDiff motion UNet.

Same losses, sampler, trainer, bank and steps as images; latents are (B, C, F, H, W).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.config import SeppoConfig, load_config
from seppo_lib.data.shards import LatentDataset
from seppo_lib.errors import CheckpointError, DataError
from seppo_lib.models import load_model, resolve_model_dir
from seppo_lib.orchestrate import round_dir, run_rounds
from seppo_lib.steps import prepare_data
from seppo_lib.steps.common import open_bank
from seppo_lib.tracking import InMemoryLogger
from seppo_lib.training.references import ReferenceSet
from tests.helpers import make_image_folder

FAST = [
    "train.updates_per_round=2", "train.batch_size=2", "train.grad_accum=1", "sampling.num_inference_steps=2",
    "data.max_rows=8", "data.shard_size=8", "data.num_frames=4",
]
VARIANTS = {
    "video": ["model.pretrained=builtin:tiny-random:video", "model.trainable=full"],
    "motion": ["model.pretrained=builtin:tiny-random:motion", "model.trainable=motion", "data.resolution=16"],
}
LATENT = {"video": (3, 4, 8, 8), "motion": (4, 4, 8, 8)}  # motion: tiny VAE (factor 2) on 16 px frames


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny 3-D convolutions run faster on one thread than on two contended ones; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def video_config(tmp: Path, *overrides: str) -> SeppoConfig:
    base = [f"workdir={tmp / 'work'}", f"bank.uri={tmp / 'bank'}", f"bank.cache_dir={tmp.parent / 'cache'}", "tracking.enabled=false"]
    return load_config("video-tiny", [*base, *FAST, *overrides])


def _weights(cfg: SeppoConfig, ckpt: str) -> dict[str, torch.Tensor]:
    return load_file(str(open_bank(cfg).fetch(ckpt) / "unet" / "diffusion_pytorch_model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


@pytest.mark.parametrize("variant", ["video", "motion"])
def test_two_seppo_rounds_train_bank_and_sample_clips(variant: str, tmp_path: Path) -> None:
    cfg = video_config(tmp_path / variant, *VARIANTS[variant])
    run_logger = InMemoryLogger()
    summary = run_rounds(cfg, run_logger)
    bank = open_bank(cfg)
    assert [e.round for e in bank.entries()] == [0, 1, 2]
    dataset = LatentDataset(summary.data_dir)
    assert dataset.latent_shape == LATENT[variant] and len(dataset) == 8
    assert dataset.meta["report"]["valid"] == 8
    refs = ReferenceSet([round_dir(cfg, 2) / "refs-000"])
    assert tuple(refs.latents.shape) == (cfg.samples_per_round, *LATENT[variant])  # (B, C, F, H, W)
    assert refs.ckpt_ids[0] in bank.ids()[:2]
    theta0, final = _weights(cfg, "initial"), _weights(cfg, summary.final_checkpoint)
    motion = [k for k in theta0 if "motion_modules" in k]
    frozen = [k for k in theta0 if k not in motion]
    if variant == "motion":
        assert motion and _max_diff(final, theta0, motion) > 1e-5
        assert _max_diff(final, theta0, frozen) == 0.0  # trainable=motion: spatial weights never move
    else:
        assert not motion and _max_diff(final, theta0, list(theta0)) > 1e-5
    assert {"loss", "flip_rate", "implicit_acc", "err_policy_w", "ref_ckpt"} <= set(run_logger.metrics[0][1])
    assert all(torch.isfinite(torch.tensor(m["loss"])) for _, m in run_logger.metrics)


def test_video_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Stop after round 1, resume round 2 in a fresh call: final weights equal (<= 1e-6)."""
    full = video_config(tmp_path / "full", *VARIANTS["motion"])
    run_rounds(full, InMemoryLogger())
    part = video_config(tmp_path / "part", *VARIANTS["motion"])
    run_rounds(part, InMemoryLogger(), last=1)
    resumed = run_rounds(part, InMemoryLogger())
    assert [r["skipped"] for r in resumed.rounds] == [True, False]
    a = _weights(full, open_bank(full).entry_for_round(2).id)  # type: ignore[union-attr]
    b = _weights(part, open_bank(part).entry_for_round(2).id)  # type: ignore[union-attr]
    diff = _max_diff(a, b, list(a))
    print(f"video resume max abs diff: {diff:.3e}")
    assert diff <= 1e-6


def test_motion_unet_gets_one_condition_row_per_frame(tmp_path: Path) -> None:
    """UNetMotionModel takes (B*F, L, D) text states; a batch of two equals each sample alone."""
    from seppo_lib.diffusion import NoiseDraw, make_pair_batch, model_errors
    from seppo_lib.families import Conditioning
    from seppo_lib.families.animatediff import frame_condition

    model = load_model("builtin:tiny-random:motion", tmp_path / "cache", with_text=False, with_vae=False)
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 16, 32, generator=g)
    assert frame_condition(model.unet, Conditioning.of(cond), x).hidden.shape == (6, 16, 32)
    draw = NoiseDraw(torch.tensor([10, 700]), torch.randn(x.shape, generator=g))
    with torch.no_grad():
        both = model_errors(model.unet, make_pair_batch(model.noise_scheduler, x, None, cond, draw))
        one = model_errors(model.unet, make_pair_batch(model.noise_scheduler, x[1:], None, cond[1:], NoiseDraw(draw.timesteps[1:], draw.noise[1:])))
    assert float((both[1] - one[0]).abs()) < 1e-5


def test_vae_encodes_and_decodes_clips_frame_by_frame(tmp_path: Path) -> None:
    model = load_model("builtin:tiny-random:motion", tmp_path / "cache")
    assert model.is_video and model.latent_shape(16, 4) == (4, 4, 8, 8)
    clips = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = model.encode_images(clips)
    assert latents.shape == (2, 4, 4, 8, 8)
    assert torch.allclose(latents[:, :, 2], model.encode_images(clips[:, :, 2]), atol=1e-6)
    pixels = model.decode_latents(latents)
    assert pixels.shape == (2, 3, 4, 16, 16) and 0 <= float(pixels.min()) and float(pixels.max()) <= 1
    assert torch.allclose(pixels[:, :, 1], model.decode_latents(latents[:, :, 1]), atol=1e-6)


def test_sample_clips_returns_pixel_clips(tmp_path: Path) -> None:
    from seppo_lib.config import SamplingConfig
    from seppo_lib.evaluation.video_metrics import sample_clips

    model = load_model("builtin:tiny-random:video", tmp_path / "cache")
    sampling = SamplingConfig(num_inference_steps=2, guidance_scale=2.0)
    clips = sample_clips(model, ["a red circle moving up", ""], [1, 2], sampling, resolution=8, frames=3, max_tokens=8)
    assert clips.shape == (2, 3, 3, 8, 8) and 0 <= float(clips.min()) and float(clips.max()) <= 1
    image_model = load_model("builtin:tiny-random", tmp_path / "cache")
    with pytest.raises(Exception, match="image model"):
        sample_clips(image_model, ["x"], [1], sampling, resolution=8, frames=3, max_tokens=8)


def test_image_data_with_a_video_model_is_a_one_line_error(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", n=4)
    cfg = video_config(tmp_path, f"data.source={data}", "data.format=auto")
    with pytest.raises(DataError, match="the data holds images but builtin:tiny-random:video is a video model") as err:
        prepare_data.run(cfg, tmp_path / "prepared")
    assert "\n" not in str(err.value)


def test_trainable_motion_needs_motion_modules(tmp_path: Path) -> None:
    from seppo_lib.training.trainer import trainable_parameters

    unet3d = load_model("builtin:tiny-random:video", tmp_path / "cache", with_text=False).unet
    with pytest.raises(CheckpointError, match="UNet3DConditionModel has no motion_modules"):
        trainable_parameters(unet3d, "motion")


def test_animatediff_folder_joins_its_motion_adapter(tmp_path: Path) -> None:
    """A diffusers folder with a 2-D unet/ and motion_adapter/ resolves to a cached AnimateDiff model."""
    import shutil

    from diffusers import MotionAdapter

    base = resolve_model_dir("builtin:tiny-random:vae", tmp_path / "cache")
    folder = tmp_path / "sd-like"
    shutil.copytree(base, folder)
    MotionAdapter(
        block_out_channels=(16, 32), motion_layers_per_block=1, motion_num_attention_heads=2,
        motion_norm_num_groups=8, use_motion_mid_block=False,
    ).save_pretrained(folder / "motion_adapter")
    resolved = resolve_model_dir(str(folder), tmp_path / "cache")
    assert resolved != folder and resolve_model_dir(str(folder), tmp_path / "cache") == resolved
    model = load_model(str(folder), tmp_path / "cache")
    assert type(model.unet).__name__ == "UNetMotionModel" and model.vae is not None and model.is_video
    spatial = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    merged = model.unet.state_dict()
    assert torch.equal(merged["conv_in.weight"], spatial["conv_in.weight"])
    assert any("motion_modules" in k for k in merged)
    # AnimateDiff's training schedule: linear betas 0.00085 -> 0.012, not SD1.5's scaled_linear
    assert model.noise_scheduler.config.beta_schedule == "linear"
    assert float(model.noise_scheduler.betas[0]) == pytest.approx(0.00085) and float(model.noise_scheduler.betas[-1]) == pytest.approx(0.012)
    shipped = {**dict(model.noise_scheduler.config), "beta_schedule": "linear", "beta_end": 0.02}
    (folder / "motion_adapter" / "scheduler_config.json").write_text(json.dumps(shipped))
    other = load_model(str(folder), tmp_path / "other-cache", with_text=False)
    assert float(other.noise_scheduler.betas[-1]) == pytest.approx(0.02)  # the adapter's own config wins
