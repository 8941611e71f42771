"""The baseline side of `seppo bench speed`: the same round done the public way.

Sampling is a diffusers pipeline call per batch (`StableDiffusionPipeline` for SD-format models,
the exported `WorldPipeline` for pixel-space ones): text encoding inside, the reference UNet
loaded from its checkpoint folder with `from_pretrained` every round, VAE decode to pixels.
Training is written the way `examples/research_projects/diffusion_dpo/train_diffusion_dpo.py` in
huggingface/diffusers does it (full fine-tuning, as the Diffusion-DPO paper's own script):
fp32 master weights under accelerate's autocast, eager, a separate reference UNet cast to the
weight dtype, prompts encoded and pixels VAE-encoded (`latent_dist.sample()`) every step, winner
and loser in one batched forward, `-logsigmoid(beta_dpo * logits)`, grad clip, `torch.optim.AdamW`
with its defaults. Each round is a fresh "job" (the composition of two scripts): the policy is
loaded from the last checkpoint folder and saved with `save_pretrained` at the end; its AdamW
state starts fresh each round (less work than the project, which resumes its optimizer state).
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from seppo_lib.bench.speed_measure import DTYPES, Phase, flop_count, fresh_accelerate, sync, timed
from seppo_lib.bench.speed_models import Workload
from seppo_lib.bench.speed_project import RoundTiming

logger = logging.getLogger(__name__)

BETA_DPO = 1000.0  # = 2·β of the project's train.beta=500 (ALGORITHM.md's β convention)


def winner_pixels(source_dir: Path, n: int, resolution: int) -> tuple[list[str], Tensor]:
    """The first `n` captions and winner images of a metadata.jsonl folder, preprocessed as prepare_data does."""
    from PIL import Image

    from seppo_lib.data.prepare import preprocess

    rows = [json.loads(line) for line in (source_dir / "metadata.jsonl").read_text().splitlines() if line.strip()]
    rows = [rows[i % len(rows)] for i in range(n)]
    pixels = [preprocess(Image.open(source_dir / r["file_name"]).convert("RGB"), resolution) for r in rows]
    return [r["caption"] for r in rows], torch.stack(pixels)


class Baseline:
    """Rounds of the baseline composition on one model; its checkpoints are plain `save_pretrained` folders."""

    def __init__(self, pipe_dir: Path, work: Path, w: Workload, precision: str, device: str, captions: list[str],
                 winners: Tensor, seed: int = 0) -> None:  # fmt: skip
        self.pipe_dir, self.work, self.w, self.device = pipe_dir, work, w, device
        self.precision, self.dtype = precision, DTYPES[precision]
        self.captions, self.winners = captions, winners
        self.ckpts: list[Path] = [pipe_dir / "unet"]  # θ_0
        self.rng = np.random.default_rng(seed)
        self.has_vae = (pipe_dir / "vae").is_dir()

    def round(self, count_flops: bool = False, train: bool = True) -> RoundTiming:
        """One round: sample with a uniformly drawn checkpoint, then (`train`) U steps and a new checkpoint."""
        ref_dir = self.ckpts[int(self.rng.integers(len(self.ckpts)))]  # uniform over the bank, like SePPO's draw
        flops = {"sample": 0, "train": 0}
        updates: list[float] = []

        def counted(name: str, fn: Any) -> Any:
            if not count_flops:
                return fn()
            with flop_count() as total:
                out = fn()
            flops[name] = total()
            return out

        samples, sample_phase = timed(self.device, lambda: counted("sample", lambda: self.sample(ref_dir)))
        if not train:
            return RoundTiming(len(self.ckpts), sample_phase, Phase(0.0, 0), [], flops["sample"])
        new_dir, train_phase = timed(self.device, lambda: counted("train", lambda: self.train(ref_dir, samples, updates)))
        self.ckpts.append(new_dir)
        gc.collect()
        return RoundTiming(len(self.ckpts) - 1, sample_phase, train_phase, updates, flops["sample"], flops["train"])

    # ---- the sampling job -------------------------------------------------------------
    def sample(self, ref_dir: Path) -> Tensor:
        """One reference image per caption from the pipeline, as pixels in [-1, 1] on CPU."""
        from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(ref_dir, torch_dtype=self.dtype, use_safetensors=True)
        pipe = DiffusionPipeline.from_pretrained(self.pipe_dir, unet=unet, torch_dtype=self.dtype, trust_remote_code=True,
                                                 use_safetensors=True)  # fmt: skip
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        w = self.w
        kwargs: dict[str, Any] = {"height": w.resolution, "width": w.resolution}
        if self.has_vae:
            pipe.tokenizer.model_max_length = w.caption_tokens
            kwargs.update(eta=0.0, output_type="pt")
        else:
            kwargs.update(output_type="np")
        out = []
        for start in range(0, w.pairs, w.sample_batch):
            prompts = self.captions[start : start + w.sample_batch]
            gens = [torch.Generator(self.device).manual_seed(1000 * len(self.ckpts) + start + i) for i in range(len(prompts))]
            images = pipe(prompts, num_inference_steps=w.steps, guidance_scale=w.guidance, generator=gens, **kwargs).images
            out.append(images.float().cpu() if isinstance(images, Tensor) else torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))
        del pipe, unet
        return torch.cat(out).float() * 2 - 1

    # ---- the training job -------------------------------------------------------------
    def _frozen(self) -> tuple[Any, Any, Any, Any]:
        from diffusers import AutoencoderKL, DDPMScheduler
        from transformers import AutoModel, AutoTokenizer

        noise_scheduler = DDPMScheduler.from_pretrained(self.pipe_dir, subfolder="scheduler")
        tokenizer = AutoTokenizer.from_pretrained(self.pipe_dir / "tokenizer")
        text_encoder = AutoModel.from_pretrained(self.pipe_dir / "text_encoder", use_safetensors=True)
        text_encoder.requires_grad_(False).to(self.device, self.dtype)
        vae = None
        if self.has_vae:
            vae = AutoencoderKL.from_pretrained(self.pipe_dir / "vae", use_safetensors=True)
            vae.requires_grad_(False).to(self.device, self.dtype)
        return noise_scheduler, tokenizer, text_encoder, vae

    def train(self, ref_dir: Path, samples: Tensor, updates: list[float]) -> Path:
        """U Diffusion-DPO steps (winner vs the reference sample as loser) from the last checkpoint; saves the next one."""
        import time

        from accelerate import Accelerator
        from diffusers import UNet2DConditionModel
        from diffusers.optimization import get_scheduler

        w = self.w
        fresh_accelerate()
        accelerator = Accelerator(mixed_precision="no" if self.precision == "fp32" else self.precision,
                                  cpu=not self.device.startswith("cuda"))  # fmt: skip
        noise_scheduler, tokenizer, text_encoder, vae = self._frozen()
        ref = UNet2DConditionModel.from_pretrained(ref_dir, use_safetensors=True)
        ref.requires_grad_(False).to(accelerator.device, dtype=self.dtype)
        unet = UNet2DConditionModel.from_pretrained(self.ckpts[-1], use_safetensors=True)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=0)
        unet, optimizer = accelerator.prepare(unet, optimizer)
        unet.train()
        ids = tokenizer(self.captions[: w.pairs], max_length=w.caption_tokens, padding="max_length", truncation=True,
                        return_tensors="pt").input_ids  # fmt: skip
        parts = (accelerator, unet, ref, text_encoder, vae, noise_scheduler, optimizer, lr_scheduler)
        for u in range(w.updates):
            rows = slice(u * w.batch_size, (u + 1) * w.batch_size)
            sync(self.device)
            start = time.perf_counter()
            self._step(parts, self.winners[rows], samples[rows], ids[rows])
            sync(self.device)
            if u:  # like the project's gaps between updates: the first update of a job is not counted
                updates.append(time.perf_counter() - start)
        dest = self.work / f"ckpt-{len(self.ckpts):03d}"
        accelerator.unwrap_model(unet).save_pretrained(dest, safe_serialization=True)
        del unet, ref, text_encoder, vae, optimizer
        return dest

    def _step(self, parts: tuple[Any, ...], pixels_w: Tensor, pixels_l: Tensor, input_ids: Tensor) -> float:
        accelerator, unet, ref, text_encoder, vae, noise_scheduler, optimizer, lr_scheduler = parts
        with accelerator.accumulate(unet):
            feed = torch.cat([pixels_w, pixels_l]).to(accelerator.device, dtype=self.dtype)
            if vae is not None:
                latents = vae.encode(feed).latent_dist.sample() * vae.config.scaling_factor
            else:
                latents = feed
            noise = torch.randn_like(latents).chunk(2)[0].repeat(2, *([1] * (latents.dim() - 1)))
            bsz = latents.shape[0] // 2
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device).repeat(2)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            with torch.no_grad():
                hidden = text_encoder(input_ids.to(accelerator.device))[0].repeat(2, 1, 1)
            pred = unet(noisy, timesteps, hidden).sample
            losses = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=list(range(1, pred.dim())))
            model_w, model_l = losses.chunk(2)
            with torch.no_grad():
                ref_pred = ref(noisy, timesteps, hidden).sample.detach()
                ref_losses = F.mse_loss(ref_pred.float(), noise.float(), reduction="none").mean(dim=list(range(1, pred.dim())))
                ref_w, ref_l = ref_losses.chunk(2)
            logits = (ref_w - ref_l) - (model_w - model_l)
            loss = -F.logsigmoid(BETA_DPO * logits).mean()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        return float(loss.detach().item())


def export_pipeline(base_dir: Path, base_uri: str, dest: Path, cache_dir: Path, caption_tokens: int) -> Path:
    """The diffusers pipeline folder of the base model (what the baseline's `from_pretrained` reads), made once."""
    from seppo_lib.export import export_model

    if not (dest / "model_index.json").is_file():
        export_model(base_dir, base_uri, dest, cache_dir, max_caption_tokens=caption_tokens, link=True)
    return dest
