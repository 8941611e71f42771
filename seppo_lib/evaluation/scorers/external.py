"""Scorers from optional third-party packages: HPSv2 (`hpsv2`) and ImageReward (`ImageReward`).

Both packages pull torchvision (and more), so they are never imported at module level and are
meant for a separate evaluation environment (docs/metrics.md). Weights are local files only:
nothing here lets either package download.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from seppo_lib.evaluation.scorers.base import ScorerError, batches, check_pairs, config_key, require_module

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

HPS_ARCH = "ViT-H-14"
IMAGEREWARD_FILES = ("ImageReward.pt", "med_config.json")


def _single_checkpoint(path: Path) -> Path:
    """`path` itself, or the one `*.pt` file inside the folder `path`."""
    if path.is_file():
        return path
    found = sorted(path.glob("*.pt"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ScorerError(
            f"the hpsv2 scorer needs one checkpoint file but {path} holds {len(found)} *.pt files ({names}); "
            f"point {config_key('hpsv2')} at HPS_v2_compressed.pt or HPS_v2.1_compressed.pt"
        )
    return found[0]


class HPSv2Scorer:
    """HPSv2 x 100: `100 * <v/|v|, t/|t|>` of the HPS-finetuned OpenCLIP ViT-H-14.

    Builds the model like `hpsv2.img_score` does but with `pretrained=None` (the HPS checkpoint
    holds every weight, so no base OpenCLIP download) and loads the checkpoint once, not per call.
    Runs in fp32 (the official code uses CUDA autocast, which changes scores only in rounding).
    """

    name = "hpsv2"

    def __init__(self, path: Path, device: str = "cpu", batch_size: int = 16) -> None:
        open_clip = require_module("hpsv2.src.open_clip", self.name, "hpsv2")
        checkpoint = _single_checkpoint(path)
        model, _, self.preprocess = open_clip.create_model_and_transforms(
            HPS_ARCH, None, precision="fp32", device=device, jit=False, force_quick_gelu=False,
            force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
            image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
            with_score_predictor=False, with_region_predictor=False,
        )
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state["state_dict"] if "state_dict" in state else state)
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint gets the same one-line message
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ScorerError(f"cannot load HPSv2 checkpoint {checkpoint} ({first}); fix {config_key(self.name)}") from None
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(HPS_ARCH)
        self.device, self.batch_size = device, batch_size

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float]:
        check_pairs(images, prompts)
        out: list[float] = []
        with torch.no_grad():
            for part in batches(len(images), self.batch_size):
                pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images[part]]).to(self.device)
                text = self.tokenizer(prompts[part]).to(self.device)
                feats = self.model(pixels, text)
                sims = (feats["image_features"].float() * feats["text_features"].float()).sum(dim=-1)
                out.extend((100.0 * sims).cpu().tolist())
        return out


class ImageRewardScorer:
    """ImageReward v1.0 (`ImageReward.load(...).score(prompt, image)`), one image at a time.

    The location is a folder holding `ImageReward.pt` and `med_config.json` (the THUDM/ImageReward
    hub layout); it is passed as the checkpoint and as `download_root`, so nothing is downloaded.
    """

    name = "imagereward"

    def __init__(self, path: Path, device: str = "cpu", batch_size: int = 16) -> None:
        reward = require_module("ImageReward", self.name, "imagereward")
        missing = [f for f in IMAGEREWARD_FILES if not (path / f).is_file()]
        if missing:
            raise ScorerError(
                f"the imagereward scorer needs a folder with {' and '.join(IMAGEREWARD_FILES)} but {path} lacks "
                f"{', '.join(missing)}; fix {config_key(self.name)}"
            )
        self.model = reward.load(str(path / IMAGEREWARD_FILES[0]), device=device, download_root=str(path))
        self.model.eval()
        self.batch_size = batch_size  # the package scores one image per forward pass

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float]:
        check_pairs(images, prompts)
        with torch.no_grad():
            return [float(self.model.score(prompt, image.convert("RGB"))) for image, prompt in zip(images, prompts, strict=True)]
