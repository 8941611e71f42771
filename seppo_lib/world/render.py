"""Deterministic renderer of the built-in world: the exact (winning) image for a prompt.

Objects are drawn as hard-edged shapes in a flat palette on a dark-gray background. A seeded
jitter varies positions and sizes, but every attribute stays true: objects never touch (at
least ``gap`` pixels apart, so blur cannot merge them), counts are exact, and a relation
prompt's objects are separated along the relation's axis by far more than their offset across
it. :func:`render_wrong` draws a "loser" with exactly one attribute changed, for paired
preference data.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
from PIL import Image

from seppo_lib.errors import DataError
from seppo_lib.world.grammar import COLOURS, COUNTS, RELATIONS, SHAPES, Prompt, Thing

BACKGROUND: tuple[int, int, int] = (24, 24, 24)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 60, 240),
    "yellow": (240, 220, 40),
    "magenta": (220, 50, 220),
    "cyan": (40, 220, 230),
}
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "count", "relation")
MIN_SIZE = 24

Box = tuple[int, int, int]  # (x0, y0, side) in pixels


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean ``(side, side)`` mask of a shape filling its box (pixel-centre sampling)."""
    c = np.arange(side) + 0.5 - side / 2
    dy, dx = c[:, None], c[None, :]
    r = side / 2 + 1e-9
    if shape == "circle":
        mask = dx**2 + dy**2 <= r**2
    elif shape == "square":
        mask = np.ones((side, side), dtype=bool)
    elif shape == "triangle":
        mask = np.abs(dx) <= (dy + r) / 2
    elif shape == "cross":
        arm = 0.17 * side + 1e-9
        mask = (np.abs(dx) <= arm) | (np.abs(dy) <= arm)
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) <= r
    else:
        raise DataError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")
    return np.broadcast_to(mask, (side, side))


def _scaled(size: int, fraction: float) -> int:
    return max(1, round(fraction * size))


def _separated(a: Box, b: Box, gap: int) -> bool:
    ax, ay, asz = a
    bx, by, bsz = b
    return (
        ax + asz + gap <= bx
        or bx + bsz + gap <= ax
        or ay + asz + gap <= by
        or by + bsz + gap <= ay
    )


def _count_layout(count: int, size: int, rng: np.random.Generator) -> list[Box]:
    lo = _scaled(size, 0.25)
    hi = _scaled(size, 0.44 if count == 1 else 0.34 if count == 2 else 0.31)
    gap, margin = _scaled(size, 0.09), _scaled(size, 0.03)
    for _ in range(1000):
        boxes: list[Box] = []
        for side in rng.integers(lo, hi + 1, size=count):
            x, y = rng.integers(margin, size - margin - int(side) + 1, size=2)
            boxes.append((int(x), int(y), int(side)))
        if all(_separated(a, b, gap) for i, a in enumerate(boxes) for b in boxes[i + 1 :]):
            return boxes
    raise RuntimeError(f"could not place {count} objects in a {size}px image")


def _relation_layout(relation: str, size: int, rng: np.random.Generator) -> list[Box]:
    """Boxes of (subject, other): separated along the relation's axis, nearly aligned across it."""
    lo, hi = _scaled(size, 0.25), _scaled(size, 0.34)
    gap, margin, jitter = _scaled(size, 0.09), _scaled(size, 0.03), 0.1 * size
    s1, s2 = (int(s) for s in rng.integers(lo, hi + 1, size=2))
    u1 = int(rng.integers(margin, size - margin - s1 - gap - s2 + 1))
    u2 = int(rng.integers(u1 + s1 + gap, size - margin - s2 + 1))
    v1 = int(rng.integers(margin, size - margin - s1 + 1))
    centre = v1 + s1 / 2 + rng.uniform(-jitter, jitter)
    v2 = int(np.clip(round(centre - s2 / 2), margin, size - margin - s2))
    first, second = (u1, v1, s1), (u2, v2, s2)
    if relation in ("above", "below"):
        first, second = (v1, u1, s1), (v2, u2, s2)
    return [first, second] if relation in ("left of", "above") else [second, first]


def _rng(prompt: Prompt, seed: int) -> np.random.Generator:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), zlib.crc32(prompt.text.encode())])


def _draw(prompt: Prompt, size: int, rng: np.random.Generator) -> Image.Image:
    if size < MIN_SIZE:
        raise DataError(f"image size {size} is too small; use at least {MIN_SIZE} pixels")
    if prompt.relation is not None:
        boxes = _relation_layout(prompt.relation, size, rng)
    else:
        boxes = _count_layout(prompt.count, size, rng)
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    for thing, (x, y, side) in zip(prompt.things, boxes, strict=True):
        region = canvas[y : y + side, x : x + side]
        region[shape_mask(thing.shape, side)] = PALETTE[thing.colour]
    return Image.fromarray(canvas, mode="RGB")


def render(prompt: Prompt, size: int = 32, seed: int = 0) -> Image.Image:
    """The ground-truth RGB image of ``prompt``; identical for identical (prompt, size, seed)."""
    return _draw(prompt, size, _rng(prompt, seed))


def applicable_attributes(prompt: Prompt) -> tuple[str, ...]:
    """Attributes a loser can get wrong: count for count prompts, relation for relation prompts."""
    return ("colour", "shape", "relation" if prompt.relation is not None else "count")


def corruptions(prompt: Prompt, attribute: str) -> list[Prompt]:
    """Every prompt that differs from ``prompt`` in exactly ``attribute``.

    A training prompt is only corrupted into training prompts, so losers never show a
    held-out combination.
    """
    if attribute not in applicable_attributes(prompt):
        raise DataError(
            f"attribute {attribute!r} does not apply to {prompt.text!r}; "
            f"use one of {', '.join(applicable_attributes(prompt))}"
        )
    out: list[Prompt] = []
    if attribute == "count":
        out = [replace(prompt, count=n) for n in COUNTS if n != prompt.count]
    elif attribute == "relation":
        out = [replace(prompt, relation=r) for r in RELATIONS if r != prompt.relation]
    else:
        taken = {t.colour for t in prompt.things}
        for field in ("subject", "other") if prompt.other is not None else ("subject",):
            thing: Thing = getattr(prompt, field)
            if attribute == "colour":
                new = [Thing(c, thing.shape) for c in COLOURS if c not in taken]
            else:
                new = [Thing(thing.colour, s) for s in SHAPES if s != thing.shape]
            out += [replace(prompt, **{field: t}) for t in new]
    if prompt.split == "train":
        out = [p for p in out if p.split == "train"]
    return out


def render_wrong(
    prompt: Prompt, seed: int = 0, attribute: str | None = None, size: int = 32
) -> tuple[Image.Image, Prompt]:
    """A loser image with exactly one attribute wrong, and the prompt it truly shows.

    ``attribute=None`` picks one of :func:`applicable_attributes` from the seed. The layout is
    drawn from the winner's random stream, so colour and shape losers keep the winner's layout.
    """
    rng = _rng(prompt, seed)
    chooser = np.random.default_rng([int(seed), zlib.crc32(prompt.text.encode()), 1])
    if attribute is None:
        options = applicable_attributes(prompt)
        attribute = options[int(chooser.integers(len(options)))]
    candidates = corruptions(prompt, attribute)
    if not candidates:
        raise DataError(f"no training prompt differs from {prompt.text!r} only in {attribute}")
    wrong = candidates[int(chooser.integers(len(candidates)))]
    return _draw(wrong, size, rng), wrong
