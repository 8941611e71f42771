"""Video metrics: PSNR / SSIM on known values, Fréchet distance, feature-extractor loading, grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seppo_lib.errors import DataError, ModelError
from seppo_lib.evaluation.video_metrics import (
    FeatureExtractor,
    fid_frames,
    frechet_distance,
    fvd,
    psnr,
    ssim,
    world_scores,
    write_grid,
)
from seppo_lib.world.video import all_motion_prompts, clip_array, render_clip


def _clips(b: int = 2, f: int = 4, h: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, f, h, h, generator=torch.Generator().manual_seed(seed))


def test_psnr_identical_is_inf_and_known_mse_gives_known_db() -> None:
    """ref = 0.5 everywhere, pred = 0.6: MSE = 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB; on a
    255 scale a difference of 5 gives 10 log10(255^2 / 25) = 34.15 dB."""
    clips = _clips()
    assert torch.isinf(psnr(clips, clips)).all()
    ref = torch.full((2, 3, 4, 8, 8), 0.5)
    assert psnr(ref + 0.1, ref).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert float(psnr(ref * 255 + 5, ref * 255, data_range=255.0)[0]) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-4)
    mixed = ref.clone()
    mixed[1] += 0.01  # per-clip values: the first clip is identical
    out = psnr(mixed, ref)
    assert math.isinf(out[0]) and float(out[1]) == pytest.approx(40.0, abs=1e-3)


def test_ssim_identical_is_one_and_constant_images_follow_the_formula() -> None:
    """For constant frames x = a, y = b every variance and covariance is 0, so
    SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 1)^2:
    a = 0.5, b = 0.25 -> (0.25 + 1e-4) / (0.3125 + 1e-4) = 0.800064."""
    clips = _clips()
    assert ssim(clips, clips).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    a, b = torch.full((1, 3, 2, 16, 16), 0.5), torch.full((1, 3, 2, 16, 16), 0.25)
    assert float(ssim(a, b)[0]) == pytest.approx((0.25 + 1e-4) / (0.3125 + 1e-4), abs=1e-6)
    assert float(ssim(a, b)[0]) == pytest.approx(0.800064, abs=1e-6)


def test_ssim_falls_with_noise_is_symmetric_and_handles_small_frames() -> None:
    clean = _clips(b=1, h=24)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    values = [float(ssim((clean + s * noise).clamp(0, 1), clean)[0]) for s in (0.02, 0.1, 0.3)]
    assert 1 > values[0] > values[1] > values[2]
    other = _clips(b=1, h=24, seed=5)
    assert float(ssim(clean, other)[0]) == pytest.approx(float(ssim(other, clean)[0]), abs=1e-9)
    tiny = _clips(h=8)  # smaller than the 11-px window: a 7-px window is used
    assert ssim(tiny, tiny).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert ssim(clean[:, :, 0], clean[:, :, 0]).shape == (1,)  # 4-D images work too


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(DataError, match="differ in shape"):
        psnr(_clips(h=8), _clips(h=16))
    with pytest.raises(DataError, match="expected"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_frechet_distance_of_equal_and_shifted_sets() -> None:
    """Equal sets: 0. Shifting one set by d leaves the covariance unchanged: FD = |d|^2."""
    feats = np.random.default_rng(0).normal(size=(200, 6))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    d = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(feats, feats + d) == pytest.approx(float(d @ d), rel=1e-6)
    with pytest.raises(DataError, match="feature sets"):
        frechet_distance(feats[:1], feats)


def test_feature_extractor_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no feature extractor at .*VideoMAE"):
        FeatureExtractor(tmp_path / "missing")
    (tmp_path / "nosafe").mkdir()
    (tmp_path / "nosafe" / "config.json").write_text('{"model_type": "videomae"}')
    (tmp_path / "nosafe" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="no \\*.safetensors weights"):
        FeatureExtractor(tmp_path / "nosafe")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "bert" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="unsupported feature extractor model_type 'bert'"):
        FeatureExtractor(tmp_path / "bert")


def test_fvd_and_fid_with_tiny_random_extractors(tmp_path: Path) -> None:
    from transformers import VideoMAEConfig, VideoMAEModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    VideoMAEModel(VideoMAEConfig(image_size=16, patch_size=8, num_frames=4, tubelet_size=2, **small)).save_pretrained(tmp_path / "vmae")
    ViTModel(ViTConfig(image_size=16, patch_size=8, **small)).save_pretrained(tmp_path / "vit")
    clips, other = _clips(b=6), _clips(b=6, seed=9) * 0.3
    video = FeatureExtractor(tmp_path / "vmae")
    assert video.kind == "video" and video(clips).shape == (6, 16)
    assert fvd(video, clips, clips) == pytest.approx(0.0, abs=1e-6)
    assert fvd(video, clips, other) > 1e-3
    image = FeatureExtractor(tmp_path / "vit")
    assert image.kind == "image" and image(clips).shape == (24, 16)
    assert fid_frames(image, clips, other) > 1e-3
    with pytest.raises(ModelError, match="FVD needs a video feature extractor"):
        fvd(image, clips, other)
    with pytest.raises(DataError, match="4-frame clips"):
        video(_clips(f=6))


def test_world_scores_read_decoded_clips() -> None:
    prompts = list(all_motion_prompts()[:4])
    arrays = np.stack([clip_array(render_clip(p, seed=i)) for i, p in enumerate(prompts)])  # (B, F, H, W, 3)
    clips = torch.from_numpy(arrays).permute(0, 4, 1, 2, 3).float() / 255
    assert [s["all"] for s in world_scores(clips, [p.text for p in prompts])] == [1.0] * 4
    assert [s["all"] for s in world_scores(clips, [p.text for p in prompts[1:] + prompts[:1]])] == [0.0] * 4


def test_write_gif_grid(tmp_path: Path) -> None:
    clips = _clips(b=5, f=3, h=8)
    path = write_grid(clips, tmp_path / "grid.gif", scale=2)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        assert gif.size == (2 * (3 * 9 + 1), 2 * (2 * 9 + 1))  # 3 columns x 2 rows of 8 px + 1 px gaps
    with pytest.raises(DataError, match="use .gif or .mp4"):
        write_grid(clips, tmp_path / "grid.png")


def test_mp4_grid_without_pyav_names_the_package(tmp_path: Path) -> None:
    from seppo_lib.data.video import video_backend

    if video_backend() == "pyav":
        pytest.skip("PyAV is installed here")
    with pytest.raises(DataError, match="pip install av"):
        write_grid(_clips(), tmp_path / "grid.mp4")
