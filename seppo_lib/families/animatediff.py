"""The video UNet family: UNet3DConditionModel (text-to-video) and UNetMotionModel (AnimateDiff: an SD
UNet plus motion modules), on 5-D (B, C, F, H, W) samples, SD's text encoder and DDPM training.

Video is a property of this family. UNetMotionModel takes one conditioning row per frame, (B·F, L, D);
UNet3DConditionModel repeats the rows itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seppo_lib.errors import ModelError
from seppo_lib.families.base import Conditioning, register_family, unwrap
from seppo_lib.families.sd import NO_COMPONENT, SDFamily


def frame_condition(denoiser: torch.nn.Module, cond: Conditioning, sample: Tensor) -> Conditioning:
    """`cond` as `denoiser` takes it on `sample`: each row repeated per frame for a UNetMotionModel on
    5-D samples, else unchanged."""
    if sample.dim() == 5 and type(unwrap(denoiser)).__name__ == "UNetMotionModel":
        return cond.repeat_interleave(sample.shape[2])
    return cond


class AnimateDiffFamily(SDFamily):
    name = "animatediff"
    denoiser_classes = ("UNet3DConditionModel", "UNetMotionModel")
    is_video = True
    pipeline_class = "AnimateDiffPipeline"
    pipeline_extras = {"feature_extractor": NO_COMPONENT, "image_encoder": NO_COMPONENT, "motion_adapter": NO_COMPONENT}  # noqa: RUF012

    def pipeline_index(self, denoiser_class: str) -> dict[str, Any]:
        """AnimateDiffPipeline for a UNetMotionModel; diffusers has no pipeline for a UNet3DConditionModel with a VAE."""
        if denoiser_class != "UNetMotionModel":
            raise ModelError(f"no diffusers pipeline for a {denoiser_class} with a VAE; supported: UNet2DConditionModel, UNetMotionModel")
        return super().pipeline_index(denoiser_class)

    def accepts(self, denoiser_config: dict[str, Any]) -> bool:
        return denoiser_config.get("_class_name") in self.denoiser_classes

    def denoise(self, denoiser: torch.nn.Module, noisy: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        hidden = frame_condition(denoiser, cond, noisy).hidden
        return denoiser(noisy, timesteps, encoder_hidden_states=hidden).sample


ANIMATEDIFF = register_family(AnimateDiffFamily())
