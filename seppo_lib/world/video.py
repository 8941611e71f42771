"""The built-in text-to-video world: short clips of one object moving in a straight line.

A prompt names one object of the image world (colour x shape) and a direction:
"a red circle moving right", "a blue square moving down" (``parse`` also reads "falling" as
moving down and "rising" as moving up). :func:`render_clip` draws the exact clip with the
image world's shapes, palette and background: the object keeps its size and cross-axis
position and travels ``travel`` of the frame side along the direction, evenly over the frames.

The train/test split holds out *combinations* (as the image world does): some shape x
direction and colour x direction pairs appear only in test prompts, while every colour, shape
and direction stays in training through its other pairings.

:func:`generate_video_dataset` writes a deterministic dataset (GIFs or frame folders plus
``metadata.jsonl``) that :mod:`seppo_lib.data.video` reads.
"""

from __future__ import annotations

import functools
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from seppo_lib.errors import DataError
from seppo_lib.world.grammar import COLOURS, SHAPES, Split, Thing
from seppo_lib.world.render import BACKGROUND, PALETTE, shape_mask

logger = logging.getLogger(__name__)

DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
ALIASES: dict[str, str] = {"falling": "down", "rising": "up"}
#: (dx, dy) unit step of each direction in image coordinates (y grows downwards).
STEP: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MIN_SIZE = 20
MIN_FRAMES = 2
METADATA = "metadata.jsonl"

Combo = tuple[str, ...]

#: Combinations seen only in test prompts (each shape, colour and direction still trains elsewhere).
HELD_OUT: frozenset[Combo] = frozenset(
    {
        ("shape-direction", "circle", "up"),
        ("shape-direction", "square", "left"),
        ("shape-direction", "triangle", "down"),
        ("shape-direction", "cross", "right"),
        ("colour-direction", "green", "left"),
        ("colour-direction", "magenta", "down"),
    }
)


@dataclass(frozen=True)
class MotionPrompt:
    """One object (colour, shape) moving in one direction."""

    thing: Thing
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise DataError(f"unknown direction {self.direction!r}; use one of {', '.join(DIRECTIONS)}")

    @property
    def text(self) -> str:
        return f"a {self.thing.colour} {self.thing.shape} moving {self.direction}"

    def combos(self) -> frozenset[Combo]:
        t, d = self.thing, self.direction
        return frozenset({("colour-shape", t.colour, t.shape), ("shape-direction", t.shape, d), ("colour-direction", t.colour, d)})

    @property
    def split(self) -> Split:
        return "test" if self.combos() & HELD_OUT else "train"


def parse_motion(text: str) -> MotionPrompt:
    """Invert :attr:`MotionPrompt.text` (also "a red circle falling"); raises DataError otherwise."""
    words = text.strip().split()
    if len(words) == 4 and words[3] in ALIASES:
        words = [*words[:3], "moving", ALIASES[words[3]]]
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        raise DataError(f"cannot parse {text!r}; expected e.g. 'a red circle moving right' or 'a blue square falling'")
    if words[1] not in COLOURS or words[2] not in SHAPES or words[4] not in DIRECTIONS:
        raise DataError(f"cannot parse {text!r}: colour, shape or direction not in the video world's grammar")
    return MotionPrompt(Thing(words[1], words[2]), words[4])


@functools.cache
def all_motion_prompts() -> tuple[MotionPrompt, ...]:
    """Every prompt, in a fixed order (colour, shape, direction)."""
    return tuple(MotionPrompt(Thing(c, s), d) for c in COLOURS for s in SHAPES for d in DIRECTIONS)


def motion_split(split: Split) -> list[MotionPrompt]:
    """The prompts of one split in the fixed order of :func:`all_motion_prompts`."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    return [p for p in all_motion_prompts() if p.split == split]


@dataclass(frozen=True)
class Layout:
    """Where the object is: top-left corner per frame and its side, in pixels."""

    corners: tuple[tuple[int, int], ...]
    side: int


def _rng(prompt: MotionPrompt, seed: int) -> np.random.Generator:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), zlib.crc32(prompt.text.encode()), 3])


def layout(prompt: MotionPrompt, size: int, frames: int, seed: int, travel: tuple[float, float] = (0.35, 0.5)) -> Layout:
    """Seeded size, start and travel (a fraction of `size` drawn from `travel`) of the object."""
    if size < MIN_SIZE:
        raise DataError(f"clip size {size} is too small; use at least {MIN_SIZE} pixels")
    if frames < MIN_FRAMES:
        raise DataError(f"a clip needs at least {MIN_FRAMES} frames to show motion, got {frames}")
    rng = _rng(prompt, seed)
    margin = max(1, round(0.03 * size))
    side = int(rng.integers(round(0.28 * size), round(0.38 * size) + 1))
    dist = int(rng.integers(round(travel[0] * size), round(travel[1] * size) + 1))
    dist = min(dist, size - 2 * margin - side)
    start = int(rng.integers(margin, size - margin - side - dist + 1))
    across = int(rng.integers(margin, size - margin - side + 1))
    dx, dy = STEP[prompt.direction]
    sign = dx + dy
    along = [start + round(dist * k / (frames - 1)) for k in range(frames)]
    if sign < 0:
        along = along[::-1]
    corners = tuple((u, across) if dx else (across, u) for u in along)
    return Layout(corners, side)


def draw(thing: Thing, where: Layout, size: int) -> list[Image.Image]:
    """Frames of `thing` at the layout's corners on the world background."""
    mask = shape_mask(thing.shape, where.side)
    out = []
    for x, y in where.corners:
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        canvas[:] = BACKGROUND
        canvas[y : y + where.side, x : x + where.side][mask] = PALETTE[thing.colour]
        out.append(Image.fromarray(canvas, mode="RGB"))
    return out


def render_clip(prompt: MotionPrompt, size: int = 32, frames: int = 8, seed: int = 0) -> list[Image.Image]:
    """The ground-truth clip of `prompt`: `frames` RGB frames of `size` px; same args, same pixels."""
    return draw(prompt.thing, layout(prompt, size, frames, seed), size)


def clip_array(frames: list[Image.Image]) -> np.ndarray:
    """(F, H, W, 3) uint8 array of PIL frames."""
    return np.stack([np.asarray(f.convert("RGB")) for f in frames])


def save_gif(frames: list[Image.Image], path: Path, duration_ms: int = 100) -> None:
    """A looping GIF, one palette entry per distinct colour (the world's flat colours are kept exactly)."""
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0, optimize=False, disposal=1)


def choose_motion_prompts(split: Split, n: int | None, seed: int) -> list[MotionPrompt]:
    """`n` prompts of `split` (cycling through a seeded permutation when n exceeds the split), or all."""
    prompts = motion_split(split)
    if n is None:
        return prompts
    if n < 1:
        raise DataError(f"n={n} must be at least 1")
    order = np.random.default_rng([seed, 0, 3]).permutation(len(prompts))
    return [prompts[int(order[i % len(prompts)])] for i in range(n)]


def generate_video_dataset(
    out_dir: str | Path,
    split: Split = "train",
    n: int | None = None,
    seed: int = 0,
    size: int = 32,
    frames: int = 8,
    fmt: Literal["gif", "frames"] = "gif",
) -> Path:
    """Render `n` clips of `split` (every prompt once if None) into `out_dir` (missing or empty).

    Layout: `000000.gif` (or `000000/000.png ...` with fmt="frames") and `metadata.jsonl`
    lines {"file_name", "caption"}. Clip i uses the layout seed derived from (seed, i); the same
    arguments give the same bytes.
    """
    if fmt not in ("gif", "frames"):
        raise DataError(f"unknown clip format {fmt!r}; use 'gif' or 'frames'")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} is not an empty folder; pass a new or empty out_dir")
    prompts = choose_motion_prompts(split, n, seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, prompt in enumerate(prompts):
        clip = render_clip(prompt, size=size, frames=frames, seed=int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))
        if fmt == "gif":
            name = f"{index:06d}.gif"
            save_gif(clip, out / name)
        else:
            name = f"{index:06d}"
            (out / name).mkdir()
            for k, frame in enumerate(clip):
                frame.save(out / name / f"{k:03d}.png", format="PNG")
        rows.append(json.dumps({"file_name": name, "caption": prompt.text}))
    (out / METADATA).write_text("\n".join(rows) + "\n", encoding="utf-8")
    logger.info("wrote %d %s clips (%d frames, %dpx, %s) to %s", len(rows), split, frames, size, fmt, out)
    return out
