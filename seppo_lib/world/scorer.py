"""Ground-truth scorer of the built-in world: reads an image and checks it against its prompt.

Evaluation only: training code never imports this module.

1. Every pixel gets the palette colour whose background-to-colour blend line passes nearest
   (see :func:`classify_pixels`), or background (tolerates blur and colour drift).
2. Same-colour pixels form objects by 8-connected components (vectorised min-label
   propagation over the whole batch); components under ``MIN_AREA`` px (per 32x32 image)
   are specks and ignored.
3. A component's shape is the nearest template: its mask, cropped to its bounding box and
   area-resampled to 8x8, against the renderer's shapes at every size, sharp and as seen
   through a Gaussian blur (L1 distance; blurred templates pay a small penalty so that a
   sharp match wins ties, e.g. a blurred cross that looks exactly like a sharp diamond).
4. Detected objects are matched to the prompt's objects (the assignment agreeing on most
   colours and shapes), then each attribute is checked on the match.

Scores are 0/1 per attribute: ``colour`` and ``shape`` (every matched object right),
``count`` (exactly as many objects as the prompt asks), ``relation`` (relation prompts only:
the centroids are ordered along the relation's axis by more than ``MARGIN`` and by more than
their offset across it) and ``all`` (every attribute right).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from seppo_lib.errors import DataError
from seppo_lib.world.grammar import COLOURS, SHAPES, Prompt
from seppo_lib.world.render import BACKGROUND, PALETTE, shape_mask

COLOUR_TOLERANCE = 80.0
MIN_AREA = 10.0  # pixels at 32x32, scaled by image area
MARGIN = 2.0  # pixels at 32x32, scaled by image side
GRID = 8
TEMPLATE_SIDES = range(6, 25)  # px
BLUR_PENALTY = 2.0  # L1 grid cells per px of template blur: a sharp match wins ties
TEMPLATE_BLURS = (0.0, 0.5, 0.8, 1.1)  # px; shapes are also matched as a blurry model draws them
MAX_OBJECTS = 6  # only the largest components take part in matching

ImageLike = Image.Image | np.ndarray


@dataclass(frozen=True)
class Detection:
    """One object found in an image."""

    colour: str
    shape: str
    area: int
    centroid: tuple[float, float]  # (x, y), pixels


def _to_array(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"expected an RGB image of shape (H, W, 3), got {array.shape}")
    return array


def classify_pixels(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` int labels: 0 background, ``k + 1`` for ``COLOURS[k]``.

    A pixel is read as a blend ``background + m * (colour - background)``: it takes the colour
    whose blend line passes nearest, if that distance is under ``COLOUR_TOLERANCE`` and the
    blend is at least half colour (``m >= 0.5``). Blurred edges thus keep their own colour
    instead of looking like a darker neighbour in the palette.
    """
    bg = np.array(BACKGROUND, dtype=np.float32)
    direction = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32) - bg
    offset = images.astype(np.float32) - bg
    m = offset @ direction.T / (direction**2).sum(-1)
    residual = offset[..., None, :] - np.clip(m, 0.0, 1.0)[..., None] * direction
    dist = np.sqrt((residual**2).sum(-1))
    best = dist.argmin(-1)
    best_m = np.take_along_axis(m, best[..., None], -1)[..., 0]
    ok = (dist.min(-1) <= COLOUR_TOLERANCE) & (best_m >= 0.5)
    return np.where(ok, best + 1, 0)


def connected_components(labels: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-zero labels: ``(N, H, W)`` ids, -1 for background.

    Each component id is the flat index of its first pixel in the batch.
    """
    n, h, w = labels.shape
    big = n * h * w
    fg = labels > 0
    ids = np.where(fg, np.arange(big).reshape(n, h, w), big)
    pad_lab = np.pad(labels, ((0, 0), (1, 1), (1, 1)))
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    same = [pad_lab[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == labels for dy, dx in shifts]
    while True:
        pad_ids = np.pad(ids, ((0, 0), (1, 1), (1, 1)), constant_values=big)
        new = ids.copy()
        for (dy, dx), ok in zip(shifts, same, strict=True):
            neighbour = pad_ids[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            np.minimum(new, np.where(ok & fg, neighbour, big), out=new)
        flat = np.append(new.ravel(), big)
        new = np.where(fg, flat[new], big)  # pointer jumping: follow each id to its id
        if np.array_equal(new, ids):
            return np.where(fg, ids, -1)
        ids = new


def _grid(mask: np.ndarray) -> np.ndarray:
    """Area-resample a 2-D mask to ``GRID x GRID`` occupancy fractions."""
    h, w = mask.shape
    big = np.repeat(np.repeat(mask.astype(np.float32), GRID, 0), GRID, 1)
    return big.reshape(GRID, h, GRID, w).mean(axis=(1, 3))


def _blurred_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """A mask after a Gaussian blur of ``sigma`` px, thresholded at one half, cropped to its box."""
    if sigma == 0:
        return mask
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    soft = np.pad(mask.astype(np.float64), radius)
    soft = np.apply_along_axis(np.convolve, 0, soft, kernel, "same")
    soft = np.apply_along_axis(np.convolve, 1, soft, kernel, "same")
    ys, xs = np.nonzero(soft >= 0.5)
    return soft[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] >= 0.5


@functools.cache
def _templates() -> np.ndarray:
    """``(shapes, sides x blurs, GRID, GRID)`` grids of every shape, side and template blur."""
    return np.stack(
        [
            np.stack(
                [
                    _grid(_blurred_mask(shape_mask(shape, side), sigma))
                    for side in TEMPLATE_SIDES
                    for sigma in TEMPLATE_BLURS
                ]
            )
            for shape in SHAPES
        ]
    )


@functools.cache
def _template_penalty() -> np.ndarray:
    """Extra distance of blurred templates, so a sharp match wins a tie."""
    return np.tile(BLUR_PENALTY * np.array(TEMPLATE_BLURS), len(TEMPLATE_SIDES))


def classify_shape(mask: np.ndarray) -> str:
    """Nearest template shape of a component mask cropped to its bounding box."""
    dist = np.abs(_templates() - _grid(mask)).sum(axis=(2, 3)) + _template_penalty()
    dist = dist.min(axis=1)
    return SHAPES[int(dist.argmin())]


def detect(labels: np.ndarray, components: np.ndarray) -> list[Detection]:
    """Objects of one image from its pixel labels and component ids (largest first)."""
    h, w = labels.shape
    min_area = MIN_AREA * h * w / 1024
    ids, counts = np.unique(components[components >= 0], return_counts=True)
    keep = ids[counts >= min_area]
    keep = keep[np.argsort(-counts[counts >= min_area], kind="stable")][:MAX_OBJECTS]
    found = []
    for cid in keep:
        ys, xs = np.nonzero(components == cid)
        crop = components[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] == cid
        colour = COLOURS[int(labels[ys[0], xs[0]]) - 1]
        centroid = (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)
        found.append(Detection(colour, classify_shape(crop), len(xs), centroid))
    return found


def _relation_holds(relation: str, a: Detection, b: Detection, margin: float) -> bool:
    dx = b.centroid[0] - a.centroid[0]
    dy = b.centroid[1] - a.centroid[1]
    along, across = {
        "left of": (dx, dy),
        "right of": (-dx, dy),
        "above": (dy, dx),
        "below": (-dy, dx),
    }[relation]
    return along > margin and along > abs(across)


def _assignments(n_found: int, n_wanted: int) -> list[list[tuple[int, int]]]:
    """Every maximal one-to-one matching as (found index, wanted index) pairs."""
    if n_found >= n_wanted:
        perms = itertools.permutations(range(n_found), n_wanted)
        return [list(zip(p, range(n_wanted), strict=True)) for p in perms]
    perms = itertools.permutations(range(n_wanted), n_found)
    return [list(zip(range(n_found), p, strict=True)) for p in perms]


def score_detections(found: Sequence[Detection], prompt: Prompt, side: int) -> dict[str, float]:
    """Per-attribute 0/1 scores of detected objects against a prompt (see module doc)."""
    wanted = prompt.things
    pairs: list[tuple[Detection, int]] = []
    best_score = -1
    for candidate in _assignments(len(found), len(wanted)):
        agree = sum(
            (found[i].colour == wanted[j].colour) + (found[i].shape == wanted[j].shape)
            for i, j in candidate
        )
        if agree > best_score:
            pairs, best_score = [(found[i], j) for i, j in candidate], agree
    scores = {
        "colour": float(bool(pairs) and all(d.colour == wanted[j].colour for d, j in pairs)),
        "shape": float(bool(pairs) and all(d.shape == wanted[j].shape for d, j in pairs)),
        "count": float(len(found) == len(wanted)),
    }
    if prompt.relation is not None:
        matched = [d for d, _ in sorted(pairs, key=lambda pair: pair[1])]
        ok = len(matched) == 2 and _relation_holds(
            prompt.relation, matched[0], matched[1], MARGIN * side / 32
        )
        scores["relation"] = float(ok)
    scores["all"] = float(all(v == 1.0 for v in scores.values()))
    return scores


def score_batch(images: Sequence[ImageLike], prompts: Sequence[Prompt]) -> list[dict[str, float]]:
    """Score equally sized images against their prompts; one dict per image."""
    if len(images) != len(prompts):
        raise DataError(f"got {len(images)} images but {len(prompts)} prompts; pass one each")
    if not images:
        return []
    arrays = [_to_array(im) for im in images]
    if len({a.shape for a in arrays}) != 1:
        raise DataError("images in one batch differ in size; resize them or score them apart")
    labels = classify_pixels(np.stack(arrays))
    components = connected_components(labels)
    side = arrays[0].shape[0]
    return [
        score_detections(detect(lab, comp), prompt, side)
        for lab, comp, prompt in zip(labels, components, prompts, strict=True)
    ]


def score_image(image: ImageLike, prompt: Prompt) -> dict[str, float]:
    """Per-attribute 0/1 correctness of one image for ``prompt``, plus ``"all"``."""
    return score_batch([image], [prompt])[0]
