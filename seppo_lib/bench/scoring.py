"""Sample a model on fixed world prompts and seeds, and score the images with the world's ground truth.

Both worlds are supported: image models are graded by the image world's scorer, video models
(`DiffusionModel.is_video`) by the video world's motion scorer (colour, shape, direction,
count, all), and a clip is shown as a strip of its frames.

Every model compared by a benchmark sees the same prompts and the same sample seeds
(`sample_seed(seed, 0, i * samples_per_prompt + j)` for image j of prompt i), so the
images differ only by the weights. This module is evaluation: it is the only place in
`seppo_lib.bench` that imports the ground-truth scorer, and training never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from seppo_lib.config import SamplingConfig
from seppo_lib.errors import DataError
from seppo_lib.models import DiffusionModel
from seppo_lib.sampling import sample_latents, sample_seed
from seppo_lib.world.grammar import Prompt, Split, split_prompts
from seppo_lib.world.video import MotionPrompt, choose_motion_prompts

#: Per-attribute keys of the world scorers, in table order ("relation" is over relation prompts
#: only; "direction" exists for the video world only).
ATTRIBUTE_KEYS = ("colour", "shape", "count", "relation", "direction", "all")

VIDEO_WORLD_SOURCE = "builtin:world-video"


def bench_prompts(split: Split, n: int, seed: int, *, video: bool) -> list[Prompt] | list[MotionPrompt]:
    """The benchmark's prompts: balanced count/relation prompts (image world) or `n` distinct motion prompts."""
    if not video:
        return balanced_prompts(split, n, seed)
    prompts = choose_motion_prompts(split, n, seed)
    if len({p.text for p in prompts}) < n:
        raise DataError(f"cannot pick {n} distinct {split} motion prompts: use --prompts <= {len({p.text for p in prompts})}")
    return prompts


def balanced_prompts(split: Split, n: int, seed: int = 0) -> list[Prompt]:
    """`n` distinct prompts of `split`: count prompts first, then relation prompts.

    ceil(n/2) count prompts and floor(n/2) relation prompts while the split has that many count
    prompts; beyond that every count prompt of the split and relation prompts for the rest (the
    test split has 23 count and 844 relation prompts: n = 256 gives 23 + 233). Drawn with `seed`
    (fixed across methods).
    """
    prompts = split_prompts(split)
    counts = [p for p in prompts if p.relation is None]
    relations = [p for p in prompts if p.relation is not None]
    n_count = min((n + 1) // 2, len(counts))
    n_rel = n - n_count
    if n < 1 or n_rel > len(relations):
        raise DataError(
            f"cannot pick {n} balanced {split} prompts: the split has {len(counts)} count and "
            f"{len(relations)} relation prompts; use --prompts between 1 and {len(prompts)}"
        )
    rng = np.random.default_rng([seed, 5])
    pick_c = sorted(rng.choice(len(counts), n_count, replace=False).tolist())
    pick_r = sorted(rng.choice(len(relations), n_rel, replace=False).tolist())
    return [counts[i] for i in pick_c] + [relations[i] for i in pick_r]


@dataclass(frozen=True)
class EvalSet:
    """Prompts and the seed of every sample: image j of prompt i has seed sample_seed(seed, 0, i * stride + j),
    stride = `seed_stride` or k (`first_samples` keeps the stride, so its images repeat the full set's first ones)."""

    prompts: tuple[Prompt, ...] | tuple[MotionPrompt, ...]
    samples_per_prompt: int
    seed: int
    seed_stride: int | None = None

    @property
    def stride(self) -> int:
        return self.seed_stride or self.samples_per_prompt

    @property
    def seeds(self) -> list[int]:
        k = self.samples_per_prompt
        return [sample_seed(self.seed, 0, i * self.stride + j) for i in range(len(self.prompts)) for j in range(k)]

    def first_samples(self, n_prompts: int | None = None) -> EvalSet:
        """The first sample of the first `n_prompts` prompts (all if None), with the same seeds as in this set."""
        return EvalSet(self.prompts[:n_prompts], 1, self.seed, self.stride)

    @property
    def flat_prompts(self) -> list[Prompt] | list[MotionPrompt]:
        return [p for p in self.prompts for _ in range(self.samples_per_prompt)]


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) pixels in [0, 1] -> RGB PIL images."""
    arrays = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(a), mode="RGB") for a in arrays]


def generate(
    model: DiffusionModel,
    texts: Sequence[str],
    seeds: Sequence[int],
    sampling: SamplingConfig,
    *,
    resolution: int,
    max_tokens: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[Image.Image]:
    """One image per (text, seed) with the project's sampler (CFG, `sampling` settings)."""
    if len(texts) != len(seeds):
        raise ValueError(f"{len(texts)} prompts but {len(seeds)} seeds")
    cond = model.encode_prompts(list(texts), max_tokens)
    uncond = model.encode_prompts([""], max_tokens)
    latents = sample_latents(
        model.unet.eval(),
        model.noise_scheduler.config,
        cond,
        uncond,
        list(seeds),
        model.latent_shape(resolution),
        scheduler=sampling.scheduler,
        steps=sampling.num_inference_steps,
        guidance_scale=sampling.guidance_scale,
        eta=sampling.eta,
        batch_size=sampling.batch_size,
        on_batch=on_batch,
    )
    return to_pil(model.decode_latents(latents))


def score(images: Sequence[Image.Image], prompts: Sequence[Prompt]) -> list[dict[str, float]]:
    """World ground-truth 0/1 scores per image (keys of ATTRIBUTE_KEYS; "relation" only for relation prompts)."""
    from seppo_lib.world.scorer import score_batch

    out: list[dict[str, float]] = []
    for start in range(0, len(images), 256):
        out += score_batch(list(images[start : start + 256]), list(prompts[start : start + 256]))
    return out


def summarize(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of every attribute over the images it applies to."""
    out = {}
    for key in ATTRIBUTE_KEYS:
        values = [s[key] for s in scores if key in s]
        if values:
            out[key] = float(np.mean(values))
    return out


def frame_strip(clip: torch.Tensor) -> Image.Image:
    """(3, F, H, W) pixels in [0, 1] -> one RGB image with the F frames side by side."""
    return to_pil(torch.cat(list(clip.unbind(1)), dim=-1)[None])[0]


def evaluate_video(
    model: DiffusionModel, eval_set: EvalSet, sampling: SamplingConfig, *, resolution: int, frames: int, max_tokens: int
) -> tuple[list[Image.Image], list[dict[str, float]]]:
    """Frame strips and per-clip motion-scorer checks of a video `model` on every sample of `eval_set`."""
    from seppo_lib.evaluation.video_metrics import sample_clips, world_scores

    texts = [p.text for p in eval_set.flat_prompts]
    clips = sample_clips(model, texts, eval_set.seeds, sampling, resolution=resolution, frames=frames, max_tokens=max_tokens)
    return [frame_strip(c) for c in clips], world_scores(clips, texts)


def evaluate(
    model: DiffusionModel,
    eval_set: EvalSet,
    sampling: SamplingConfig,
    *,
    resolution: int,
    max_tokens: int,
    frames: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[Image.Image], list[dict[str, float]]]:
    """Images (frame strips for a video model) and per-sample scores of `model` on every sample of `eval_set`."""
    if model.is_video:
        if frames is None:
            raise DataError(f"{model.source} is a video model: evaluate needs frames=")
        return evaluate_video(model, eval_set, sampling, resolution=resolution, frames=frames, max_tokens=max_tokens)
    prompts = eval_set.flat_prompts
    images = generate(
        model, [p.text for p in prompts], eval_set.seeds, sampling, resolution=resolution, max_tokens=max_tokens, on_batch=on_batch
    )
    return images, score(images, prompts)
