"""`WorldPipeline`: the diffusers pipeline of seppo's pixel-space models (no VAE).

The built-in world models (`builtin:world-base`, `builtin:world-video-base`) and the
`builtin:tiny-random` pixel variants denoise RGB pixels directly: a UNet conditioned on the
last hidden state of a BERT-style text encoder (MiniLM for the world), with prompts padded to
`max_caption_tokens` tokens and classifier-free guidance against the empty prompt, exactly as
seppo samples them. `seppo export` writes such a model as a diffusers folder:

    model_index.json   {"_class_name": ["world_pipeline", "WorldPipeline"], "unet": [...], ...}
    world_pipeline.py  one line: `from seppo_lib.world_pipeline import WorldPipeline`
    unet/ scheduler/ text_encoder/ tokenizer/

Load it with either of

    DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    WorldPipeline.from_pretrained(folder, trust_remote_code=True)

diffusers 0.42 resolves a pipeline class outside diffusers only through a `.py` file inside the
folder, and runs such a file only with `trust_remote_code=True`; the file merely imports this
class, so `seppo` must be installed. A 2-D UNet gives `output.images` (PIL images of
`height` x `width`), a 3-D UNet (`UNet3DConditionModel`) gives `output.frames` (one list of PIL
frames per prompt). The scheduler is the training noise scheduler; swap in a sampler as with any
diffusers pipeline: `pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

@dataclass
class WorldPipelineOutput(BaseOutput):
    """`images` (2-D models: one PIL image per prompt) or `frames` (3-D: one list of PIL frames per prompt)."""

    images: list[PIL.Image.Image] | None = None
    frames: list[list[PIL.Image.Image]] | None = None


class WorldPipeline(DiffusionPipeline):
    """Text-to-image (or -video) sampling of a pixel-space UNet with classifier-free guidance."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: Any, scheduler: Any, text_encoder: Any, tokenizer: Any, max_caption_tokens: int = 77) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(max_caption_tokens=max_caption_tokens)

    @property
    def is_video(self) -> bool:
        return type(self.unet).__name__ == "UNet3DConditionModel"

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Last hidden states (B, L, D), prompts padded to `max_caption_tokens` (seppo's conditioning)."""
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=self.config.max_caption_tokens, truncation=True, return_tensors="pt"
        )
        return self.text_encoder(input_ids=tokens.input_ids.to(self.device))[0].to(self.unet.dtype)

    def _step_kwargs(self, generator: torch.Generator | list[torch.Generator] | None) -> dict[str, Any]:
        accepted = inspect.signature(self.scheduler.step).parameters
        return {"generator": generator} if "generator" in accepted else {}

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        height: int | None = None,
        width: int | None = None,
        num_frames: int = 8,
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
    ) -> WorldPipelineOutput:
        """Sample one image (or clip of `num_frames`) per prompt; output_type "pil" or "np" (floats in [0, 1])."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        size = int(self.unet.config.sample_size)
        hw = (height or size, width or size)
        cond = self.encode_prompt(prompts)
        use_cfg = guidance_scale != 1.0
        context = torch.cat([self.encode_prompt([""]).expand(len(prompts), -1, -1), cond]) if use_cfg else cond
        channels = int(self.unet.config.in_channels)
        shape = (len(prompts), channels, num_frames, *hw) if self.is_video else (len(prompts), channels, *hw)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            model_in = self.scheduler.scale_model_input(torch.cat([latents, latents]) if use_cfg else latents, t)
            pred = self.unet(model_in, t, encoder_hidden_states=context).sample
            if use_cfg:
                uncond, text = pred.chunk(2)
                pred = uncond + guidance_scale * (text - uncond)
            latents = self.scheduler.step(pred, t, latents, **self._step_kwargs(generator)).prev_sample
        pixels = ((latents.float() + 1) / 2).clamp(0, 1).cpu()
        if self.is_video:
            clips = pixels.permute(0, 2, 3, 4, 1).numpy()  # (B, F, H, W, C)
            return WorldPipelineOutput(frames=[[_pil(f) for f in clip] if output_type == "pil" else clip for clip in clips])
        images = pixels.permute(0, 2, 3, 1).numpy()
        return WorldPipelineOutput(images=[_pil(i) for i in images] if output_type == "pil" else list(images))


def _pil(array: np.ndarray) -> PIL.Image.Image:
    return PIL.Image.fromarray((array * 255).round().astype(np.uint8))
