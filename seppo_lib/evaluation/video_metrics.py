"""Video evaluation: PSNR, SSIM, the video world's motion scorer, Fréchet distances, sample grids.

Clips are float tensors (B, 3, F, H, W) in [0, 1] (what `DiffusionModel.decode_latents`
returns for 5-D latents).

- `psnr` / `ssim`: per clip against reference clips (frame-wise, averaged over frames and
  channels). SSIM is Wang et al. (2004): Gaussian window 11 px, sigma 1.5, K1 0.01, K2 0.03,
  "valid" filtering; frames smaller than the window use the largest odd window that fits.
- `world_video_accuracy`: sample a model on held-out and training prompts of the built-in
  video world and grade the clips with its ground-truth scorer (direction, shape, colour).
- `FeatureExtractor` + `frechet_distance`: FVD / FID from a *local* transformers model folder
  (safetensors only): a VideoMAE model embeds whole clips (FVD), an image model (CLIP vision,
  ViT, DINOv2, SigLIP vision) embeds frames (FID over frames). These are not the I3D / Inception
  networks of the original FVD / FID papers: compare numbers only within one extractor.
- `write_grid`: a GIF (Pillow) or MP4 (PyAV: `pip install av`) grid of clips.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from seppo_lib import plugins
from seppo_lib.config import SamplingConfig
from seppo_lib.errors import DataError, ModelError
from seppo_lib.models import DiffusionModel
from seppo_lib.sampling import sample_latents, sample_seed

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
#: Sampler used to measure the video world base model (recorded with every measurement): the sampler of the
#: video-world and bench-video presets (DDIM 10 steps, η 1, CFG 3). Deterministic DDIM (η 0) draws far worse clips
#: from the shipped model (measured in its recipe.json).
WORLD_VIDEO_SAMPLING = SamplingConfig(scheduler="ddim", num_inference_steps=10, guidance_scale=3.0, eta=1.0, batch_size=16)
VIDEO_MODEL_TYPES = ("videomae",)
IMAGE_MODEL_TYPES = ("clip", "clip_vision_model", "vit", "dinov2", "siglip", "siglip_vision_model")


def _check_pair(pred: Tensor, ref: Tensor) -> None:
    if pred.shape != ref.shape:
        raise DataError(f"clips and references differ in shape: {tuple(pred.shape)} vs {tuple(ref.shape)}")
    if pred.dim() not in (4, 5):
        raise DataError(f"expected (B, C, F, H, W) clips or (B, C, H, W) images, got shape {tuple(pred.shape)}")


def psnr(pred: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-sample PSNR in dB, `10 log10(range^2 / MSE)` over all pixels of a clip; inf when identical."""
    _check_pair(pred, ref)
    mse = (pred.double() - ref.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()  # MSE 0 -> +inf


def _gaussian(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _frames(x: Tensor) -> Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W); 4-D passes through."""
    return x.transpose(1, 2).flatten(0, 1) if x.dim() == 5 else x


def ssim(pred: Tensor, ref: Tensor, data_range: float = 1.0, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Per-sample mean SSIM (Wang et al. 2004) over frames, channels and valid window positions."""
    _check_pair(pred, ref)
    b = pred.shape[0]
    x, y = _frames(pred.double()), _frames(ref.double())
    size = min(window, x.shape[-2], x.shape[-1])
    size -= 1 - size % 2  # largest odd window that fits
    g = _gaussian(size, sigma)
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, size, size).to(x)
    blur = lambda t: F.conv2d(t, kernel, groups=x.shape[1])  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K[0] * data_range) ** 2, (SSIM_K[1] * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).reshape(b, -1).mean(1).float()


# ---- the built-in video world ---------------------------------------------------------


def to_uint8_clips(clips: Tensor) -> np.ndarray:
    """(B, 3, F, H, W) in [0, 1] -> (B, F, H, W, 3) uint8."""
    if clips.dim() != 5 or clips.shape[1] != 3:
        raise DataError(f"expected (B, 3, F, H, W) clips, got shape {tuple(clips.shape)}")
    return (clips.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()


def sample_clips(
    model: DiffusionModel,
    texts: Sequence[str],
    seeds: Sequence[int],
    sampling: SamplingConfig,
    *,
    resolution: int,
    frames: int,
    max_tokens: int,
) -> Tensor:
    """One clip per (text, seed) with the project's sampler: (N, 3, F, H, W) pixels in [0, 1] on the CPU."""
    if not model.is_video:
        raise ModelError(f"{model.source} is an image model ({type(model.unet).__name__}); sample_clips needs a video UNet")
    latents = sample_latents(
        model.unet.eval(),
        model.noise_scheduler.config,
        model.encode_prompts(list(texts), max_tokens),
        model.encode_prompts([""], max_tokens),
        list(seeds),
        model.latent_shape(resolution, frames),
        scheduler=sampling.scheduler,
        steps=sampling.num_inference_steps,
        guidance_scale=sampling.guidance_scale,
        eta=sampling.eta,
        batch_size=sampling.batch_size,
    )
    device = next(model.unet.parameters()).device  # sample_latents returns CPU latents; the VAE may be on a GPU
    return model.decode_latents(latents.to(device)).cpu()


def world_scores(clips: Tensor, prompts: Sequence[str]) -> list[dict[str, float]]:
    """The video world's ground-truth 0/1 checks (colour, shape, direction, count, all) per clip."""
    world = plugins.video_worlds.get(plugins.VIDEO_WORLD)
    return world.score_clips(list(to_uint8_clips(clips)), [world.parse(p) for p in prompts])


def summarize(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of every check over the clips."""
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]} if scores else {}


def world_video_accuracy(
    model_dir: str | Path,
    prompts_per_split: int = 16,
    samples: int = 2,
    seed: int = 1234,
    sampling: SamplingConfig = WORLD_VIDEO_SAMPLING,
    *,
    resolution: int | None = None,
    frames: int | None = None,
    cache_dir: str | Path = "seppo-runs/cache",
) -> dict[str, Any]:
    """Ground-truth accuracy of a video model folder on `prompts_per_split` test and train prompts.

    Clip size and frame count default to the ones the model was trained on (its recipe.json).
    """
    from seppo_lib.models import load_model

    world = plugins.video_worlds.get(plugins.VIDEO_WORLD)
    model = load_model(str(model_dir), cache_dir)
    trained = _recipe(Path(model_dir))
    max_tokens = int(trained.get("max_caption_tokens", 16))
    resolution = resolution or int(trained.get("size", 20))
    frames = frames or int(trained.get("frames", 8))
    out: dict[str, Any] = {
        "sampler": sampling.model_dump(include={"scheduler", "num_inference_steps", "guidance_scale", "eta"}),
        "prompts_per_split": prompts_per_split, "samples_per_prompt": samples, "sample_seed": seed,
        "resolution": resolution, "frames": frames,
    }
    for split in ("test", "train"):
        prompts = [text for text in world.choose_prompts(split, prompts_per_split, seed) for _ in range(samples)]
        seeds = [sample_seed(seed, 0, i) for i in range(len(prompts))]
        clips = sample_clips(model, prompts, seeds, sampling, resolution=resolution, frames=frames, max_tokens=max_tokens)
        out[split] = summarize(world_scores(clips, prompts))
    return out


def _recipe(model_dir: Path) -> dict[str, Any]:
    """The training recipe recorded in a world model folder's recipe.json ({} without one)."""
    path = model_dir / "recipe.json"
    return dict(json.loads(path.read_text()).get("recipe", {})) if path.is_file() else {}


# ---- Fréchet distances (FVD / FID) from a local feature extractor ---------------------


class FeatureExtractor:
    """A frozen transformers model from a local folder (config.json + *.safetensors) that embeds clips.

    `kind` is "video" (VideoMAE: one embedding per clip, for FVD) or "image" (one embedding per
    frame, for FID over frames). Embeddings are the mean of the last hidden state over tokens.
    """

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(
                f"no feature extractor at {path}: FVD/FID need a local transformers model folder (config.json + "
                "model.safetensors), e.g. a VideoMAE model for FVD or a CLIP vision / ViT / DINOv2 model for FID"
            )
        if not any(path.glob("*.safetensors")):
            raise ModelError(f"{path} has no *.safetensors weights; only safetensors feature extractors are loaded (no pickle)")
        model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
        if model_type not in VIDEO_MODEL_TYPES + IMAGE_MODEL_TYPES:
            raise ModelError(
                f"unsupported feature extractor model_type {model_type!r} at {path}; "
                f"supported: {', '.join(VIDEO_MODEL_TYPES + IMAGE_MODEL_TYPES)}"
            )
        self.kind = "video" if model_type in VIDEO_MODEL_TYPES else "image"
        self.model = _load_vision(path, model_type).to(device).eval().requires_grad_(False)
        config = self.model.config
        self.size = int(getattr(config, "image_size", 224))
        self.num_frames = int(getattr(config, "num_frames", 0))
        self.device = device

    @torch.no_grad()
    def __call__(self, clips: Tensor) -> Tensor:
        """(B, 3, F, H, W) in [0, 1] -> (B, D) clip features ("video") or (B*F, D) frame features ("image")."""
        x = _frames(clips.float()) * 2 - 1  # (B*F, 3, H, W) in [-1, 1]
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.kind == "image":
            return self.model(pixel_values=x.to(self.device)).last_hidden_state.mean(1).double().cpu()
        b, f = clips.shape[0], clips.shape[2]
        if self.num_frames and f != self.num_frames:
            raise DataError(f"the video feature extractor takes {self.num_frames}-frame clips, got {f} frames")
        video = x.unflatten(0, (b, f)).to(self.device)  # (B, F, 3, S, S), VideoMAE's layout
        return self.model(pixel_values=video).last_hidden_state.mean(1).double().cpu()


def _load_vision(path: Path, model_type: str) -> torch.nn.Module:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(path, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the feature extractor at {path}: {str(err).splitlines()[0]}") from None
    return getattr(model, "vision_model", model) if model_type in ("clip", "siglip") else model


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two (N, D) feature sets (N >= 2)."""
    from scipy import linalg

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise DataError(f"need two (N >= 2, D) feature sets of equal D, got {x.shape} and {y.shape}")
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    covmean = linalg.sqrtm(s_x @ s_y)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as pytorch-fid does
        eps = np.eye(len(s_x)) * 1e-6
        covmean = linalg.sqrtm((s_x + eps) @ (s_y + eps))
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(s_x) + np.trace(s_y) - 2 * np.trace(covmean.real))


def embed(extractor: FeatureExtractor, clips: Tensor, batch_size: int = 8) -> Tensor:
    """Features of (B, 3, F, H, W) clips, `batch_size` clips per forward pass.

    Float clips are pixels in [0, 1]; uint8 clips (as `to_uint8_clips` makes, channels first) are
    scaled by 1/255 first.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = [c.float() / 255 if c.dtype == torch.uint8 else c for c in clips.split(batch_size)]
    return torch.cat([extractor(c) for c in chunks])


def fvd(extractor: FeatureExtractor, clips: Tensor, reference: Tensor, batch_size: int = 8) -> float:
    """Fréchet distance between clip embeddings of generated and reference clips ("video" extractor)."""
    if extractor.kind != "video":
        raise ModelError("FVD needs a video feature extractor (VideoMAE); this one embeds frames: use fid_frames")
    return frechet_distance(embed(extractor, clips, batch_size), embed(extractor, reference, batch_size))


def fid_frames(extractor: FeatureExtractor, clips: Tensor, reference: Tensor, batch_size: int = 8) -> float:
    """Fréchet distance between frame embeddings of generated and reference clips ("image" extractor)."""
    if extractor.kind != "image":
        raise ModelError("FID over frames needs an image feature extractor (CLIP vision, ViT, DINOv2, SigLIP)")
    return frechet_distance(embed(extractor, clips, batch_size), embed(extractor, reference, batch_size))


# ---- sample grids ----------------------------------------------------------------------


def grid_frames(clips: Tensor, ncols: int | None = None, pad: int = 1, scale: int = 1) -> list[Image.Image]:
    """One RGB image per frame index: the clips tiled in a grid (ncols ~ sqrt(B)), `pad` px gaps."""
    arrays = to_uint8_clips(clips)  # (B, F, H, W, 3)
    b, f, h, w, _ = arrays.shape
    ncols = ncols or math.ceil(math.sqrt(b))
    nrows = math.ceil(b / ncols)
    canvas = np.full((f, nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(b):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[:, y : y + h, x : x + w] = arrays[i]
    images = [Image.fromarray(frame) for frame in canvas]
    return [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images] if scale > 1 else images


def write_grid(clips: Tensor, path: str | Path, *, ncols: int | None = None, scale: int = 4, fps: int = 8) -> Path:
    """Write the clips as one animated grid: `.gif` (Pillow) or `.mp4` (PyAV, `pip install av`)."""
    path = Path(path)
    frames = grid_frames(clips, ncols=ncols, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    elif suffix == ".mp4":
        from seppo_lib.data.video import video_backend

        if video_backend() != "pyav":
            raise DataError(f"writing {path.name} needs PyAV: `pip install av` (or write a .gif grid, which needs nothing extra)")
        import imageio.v3 as iio

        even = [np.asarray(im)[: im.height // 2 * 2, : im.width // 2 * 2] for im in frames]  # yuv420p needs even sides
        iio.imwrite(path, np.stack(even), plugin="pyav", codec="libx264", fps=fps)
    else:
        raise DataError(f"unsupported grid format {suffix!r}; use .gif or .mp4")
    return path
