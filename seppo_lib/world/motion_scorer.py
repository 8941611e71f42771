"""Ground-truth scorer of the built-in video world: reads a clip and checks it against its prompt.

Evaluation only: training code never imports this module.

Every frame goes through the image world's detector (:mod:`seppo_lib.world.scorer`: palette
pixel classes, 8-connected components, template shapes). The *tracked object* of a frame is
its largest detection. Then, over the frames:

- ``count``: at least ``PRESENT`` of the frames show exactly one object;
- ``colour`` / ``shape``: the most common colour / shape of the tracked object (over frames
  that show one) is the prompt's;
- ``direction``: a least-squares line through the tracked centroids moves along the prompt's
  direction by more than ``MARGIN`` pixels (at 32 px, scaled with the side) over the clip and
  by more than it moves across it;
- ``all``: every check above.

Scores are 0/1 per clip.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image

from seppo_lib.errors import DataError
from seppo_lib.world.scorer import Detection, classify_pixels, connected_components, detect
from seppo_lib.world.video import STEP, MotionPrompt

PRESENT = 0.75  # fraction of frames that must show exactly one object
MARGIN = 3.0  # pixels of travel at 32 px, scaled by the frame side
KEYS = ("colour", "shape", "direction", "count", "all")

ClipLike = np.ndarray | Sequence[Image.Image]


def clip_to_array(clip: ClipLike) -> np.ndarray:
    """(F, H, W, 3) uint8 from PIL frames or an array of that shape."""
    if isinstance(clip, np.ndarray):
        array = clip
    else:
        array = np.stack([np.asarray(frame.convert("RGB")) for frame in clip])
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] < 2:
        raise DataError(f"expected a clip of shape (F >= 2, H, W, 3), got {array.shape}")
    return array.astype(np.uint8, copy=False)


def _mode(values: list[str]) -> str | None:
    return Counter(values).most_common(1)[0][0] if values else None


def _travel(centroids: list[tuple[float, float]], frames: list[int], direction: str) -> tuple[float, float]:
    """(along, across) displacement over the clip of a least-squares line through the centroids."""
    t = np.asarray(frames, dtype=np.float64)
    xy = np.asarray(centroids, dtype=np.float64)
    slope = np.polyfit(t, xy, 1)[0]  # (dx/frame, dy/frame)
    span = float(t.max() - t.min())
    dx, dy = STEP[direction]
    along = (slope[0] * dx + slope[1] * dy) * span
    across = abs(slope[0] * dy + slope[1] * dx) * span
    return float(along), float(across)


def score_tracks(per_frame: Sequence[list[Detection]], prompt: MotionPrompt, side: int) -> dict[str, float]:
    """0/1 checks of one clip's per-frame detections (largest first) against `prompt`."""
    n = len(per_frame)
    single = [k for k, found in enumerate(per_frame) if len(found) == 1]
    tracked = [k for k, found in enumerate(per_frame) if found]
    colours = [per_frame[k][0].colour for k in tracked]
    shapes = [per_frame[k][0].shape for k in tracked]
    scores = {
        "colour": float(_mode(colours) == prompt.thing.colour),
        "shape": float(_mode(shapes) == prompt.thing.shape),
        "count": float(len(single) >= PRESENT * n),
        "direction": 0.0,
    }
    if len(tracked) >= 2:
        along, across = _travel([per_frame[k][0].centroid for k in tracked], tracked, prompt.direction)
        scores["direction"] = float(along > MARGIN * side / 32 and along > across)
    scores["all"] = float(all(scores[k] == 1.0 for k in KEYS[:-1]))
    return scores


def score_clips(clips: Sequence[ClipLike], prompts: Sequence[MotionPrompt]) -> list[dict[str, float]]:
    """Score equally sized clips against their prompts; one dict of KEYS per clip."""
    if len(clips) != len(prompts):
        raise DataError(f"got {len(clips)} clips but {len(prompts)} prompts; pass one each")
    if not clips:
        return []
    arrays = [clip_to_array(c) for c in clips]
    if len({a.shape for a in arrays}) != 1:
        raise DataError("clips in one batch differ in shape; resize them or score them apart")
    f, h = arrays[0].shape[:2]
    frames = np.concatenate(arrays)
    labels = classify_pixels(frames)
    components = connected_components(labels)
    detections = [detect(lab, comp) for lab, comp in zip(labels, components, strict=True)]
    return [score_tracks(detections[i * f : (i + 1) * f], prompt, h) for i, prompt in enumerate(prompts)]


def score_clip(clip: ClipLike, prompt: MotionPrompt) -> dict[str, float]:
    """Per-attribute 0/1 correctness of one clip for `prompt`, plus "all"."""
    return score_clips([clip], [prompt])[0]
