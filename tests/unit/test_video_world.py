"""The built-in video world: motion grammar, held-out split, clip renderer, motion scorer, generator."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFilter

from seppo_lib.data.video import read_clip
from seppo_lib.errors import DataError
from seppo_lib.world.grammar import COLOURS, SHAPES, Thing
from seppo_lib.world.motion_scorer import KEYS, score_clip, score_clips
from seppo_lib.world.render import BACKGROUND, PALETTE
from seppo_lib.world.video import (
    DIRECTIONS,
    HELD_OUT,
    MotionPrompt,
    all_motion_prompts,
    clip_array,
    generate_video_dataset,
    motion_split,
    parse_motion,
    render_clip,
)

SPACE = all_motion_prompts()


def _pairs(n: int, seed: int) -> tuple[list[MotionPrompt], list[int]]:
    rng = np.random.default_rng(seed)
    return [SPACE[int(i)] for i in rng.integers(0, len(SPACE), n)], [int(s) for s in rng.integers(0, 2**31, n)]


def _mean(scores: list[dict[str, float]], key: str = "all") -> float:
    return float(np.mean([s[key] for s in scores]))


def _centroids(clip: np.ndarray) -> np.ndarray:
    fg = (clip != np.array(BACKGROUND)).any(-1)
    return np.array([[np.nonzero(f)[1].mean(), np.nonzero(f)[0].mean()] for f in fg])  # (F, (x, y))


# --- grammar and split ----------------------------------------------------------------------


def test_prompt_space_texts_and_parse() -> None:
    assert len(SPACE) == len(COLOURS) * len(SHAPES) * len(DIRECTIONS) == 120
    assert len({p.text for p in SPACE}) == 120
    assert all(parse_motion(p.text) == p for p in SPACE)
    assert SPACE[1].text == "a red circle moving right"
    assert parse_motion("a blue square falling") == MotionPrompt(Thing("blue", "square"), "down")
    assert parse_motion("a blue square rising").direction == "up"


@pytest.mark.parametrize("text", ["", "a red circle", "a red circle moving sideways", "two red circles moving up", "a pink circle moving up"])
def test_parse_rejects_text_outside_the_grammar(text: str) -> None:
    with pytest.raises(DataError):
        parse_motion(text)


def test_split_holds_out_combinations_of_seen_parts() -> None:
    train, test = motion_split("train"), motion_split("test")
    assert len(train) + len(test) == 120 and len(test) == 32
    assert all(not (p.combos() & HELD_OUT) for p in train)
    assert all(p.combos() & HELD_OUT for p in test)
    assert {p.thing.colour for p in train} == set(COLOURS)
    assert {p.thing.shape for p in train} == set(SHAPES)
    assert {p.direction for p in train} == set(DIRECTIONS)
    for combo in HELD_OUT:  # every held-out pair is made of parts seen in training
        assert all(any(part in (p.thing.colour, p.thing.shape, p.direction) for p in train) for part in combo[1:])
    with pytest.raises(DataError, match="unknown split"):
        motion_split("val")  # type: ignore[arg-type]


# --- renderer ---------------------------------------------------------------------------------


def test_render_is_deterministic_and_moves_the_object_along_its_direction() -> None:
    for prompt in SPACE[:8]:
        a = clip_array(render_clip(prompt, size=32, frames=8, seed=5))
        assert a.shape == (8, 32, 32, 3)
        assert np.array_equal(a, clip_array(render_clip(prompt, size=32, frames=8, seed=5)))
        assert not np.array_equal(a, clip_array(render_clip(prompt, size=32, frames=8, seed=6)))
        colours = {tuple(c) for c in a.reshape(-1, 3)}
        assert colours == {BACKGROUND, PALETTE[prompt.thing.colour]}
        xy = _centroids(a)
        dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[prompt.direction]
        along = np.diff(xy @ np.array([dx, dy]))
        across = np.diff(xy @ np.array([dy, dx]))
        assert (along > 0).all() and np.abs(across).max() < 1e-9
        assert (xy[-1] - xy[0]) @ np.array([dx, dy]) >= 0.3 * 32 - 1


def test_render_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="too small"):
        render_clip(SPACE[0], size=12)
    with pytest.raises(DataError, match="at least 2 frames"):
        render_clip(SPACE[0], frames=1)
    with pytest.raises(DataError, match="non-negative"):
        render_clip(SPACE[0], seed=-1)


# --- scorer validation (evaluation only) ------------------------------------------------------


@pytest.mark.parametrize("size", [20, 32])
def test_scorer_accepts_ground_truth_clips(size: int) -> None:
    """>= 98% "all" on ground-truth clips of every prompt (measured 100% at 20, 24 and 32 px)."""
    prompts, seeds = _pairs(120, seed=size)
    clips = [clip_array(render_clip(p, size=size, seed=s)) for p, s in zip(prompts, seeds, strict=True)]
    assert _mean(score_clips(clips, prompts)) >= 0.98


def test_scorer_is_robust_to_blur_and_noise() -> None:
    """Gaussian blur 0.5-0.7 px plus pixel noise (sigma 8) keeps >= 90% (measured 100%)."""
    prompts, seeds = _pairs(80, seed=1)
    rng = np.random.default_rng(1)
    clips = []
    for i, (p, s) in enumerate(zip(prompts, seeds, strict=True)):
        frames = [f.filter(ImageFilter.GaussianBlur(0.5 + 0.2 * (i % 2))) for f in render_clip(p, seed=s)]
        noisy = clip_array(frames) + rng.normal(0, 8, (8, 32, 32, 3))
        clips.append(np.clip(noisy, 0, 255).astype(np.uint8))
    assert _mean(score_clips(clips, prompts)) >= 0.90


def test_scorer_is_at_chance_on_noise() -> None:
    """Uniform noise clips: "all" <= 2% (measured 0/480); colour, shape and direction near their
    chance levels 1/6, 1/5 and 1/4 (measured 0.16-0.17, 0.19-0.21, 0.24-0.29), far from 1."""
    prompts, _ = _pairs(120, seed=2)
    rng = np.random.default_rng(2)
    scores = score_clips([rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for _ in prompts], prompts)
    assert _mean(scores) <= 0.02
    assert _mean(scores, "colour") < 0.3 and _mean(scores, "shape") < 0.35 and _mean(scores, "direction") < 0.4


def test_scorer_rejects_clips_of_other_prompts() -> None:
    """A clip of a random *different* prompt scores "all" <= 2% (measured 0%): it differs in colour,
    shape or direction, and each attribute alone is near its chance level of agreeing."""
    prompts, seeds = _pairs(120, seed=3)
    rng = np.random.default_rng(3)
    index = {p: i for i, p in enumerate(SPACE)}
    others = [SPACE[(index[p] + int(k)) % len(SPACE)] for p, k in zip(prompts, rng.integers(1, len(SPACE), len(prompts)), strict=True)]
    clips = [clip_array(render_clip(o, seed=s)) for o, s in zip(others, seeds, strict=True)]
    scores = score_clips(clips, prompts)
    assert _mean(scores) <= 0.02
    assert _mean(scores, "colour") < 0.4 and _mean(scores, "shape") < 0.4 and _mean(scores, "direction") < 0.45


def test_scorer_flags_exactly_the_wrong_attribute() -> None:
    prompt = MotionPrompt(Thing("red", "circle"), "right")
    clip = clip_array(render_clip(prompt, seed=0))
    assert score_clip(clip, prompt) == dict.fromkeys(KEYS, 1.0)
    backwards = score_clip(clip[::-1], prompt)  # the same clip played backwards moves left
    assert backwards["direction"] == 0.0 and backwards["colour"] == backwards["shape"] == 1.0
    assert score_clip(clip[::-1], MotionPrompt(prompt.thing, "left"))["all"] == 1.0
    frozen = score_clip(np.repeat(clip[:1], 8, axis=0), prompt)  # no motion at all
    assert frozen["direction"] == 0.0 and frozen["all"] == 0.0
    wrong_colour = score_clip(clip, MotionPrompt(Thing("blue", "circle"), "right"))
    assert wrong_colour["colour"] == 0.0 and wrong_colour["shape"] == wrong_colour["direction"] == 1.0
    blank = score_clip(np.full((8, 32, 32, 3), BACKGROUND, dtype=np.uint8), prompt)
    assert blank == dict.fromkeys(KEYS, 0.0)


def test_scorer_rejects_mismatched_input() -> None:
    with pytest.raises(DataError, match="clips but"):
        score_clips([np.zeros((8, 32, 32, 3), np.uint8)], [])
    with pytest.raises(DataError, match="differ in shape"):
        score_clips([np.zeros((8, 32, 32, 3), np.uint8), np.zeros((8, 24, 24, 3), np.uint8)], [SPACE[0]] * 2)
    with pytest.raises(DataError, match="F >= 2"):
        score_clip(np.zeros((32, 32, 3), np.uint8), SPACE[0])


def test_training_code_never_imports_the_scorer() -> None:
    code = (
        "import sys, seppo_lib.world.video, seppo_lib.world.video_pretrain, seppo_lib.data.video\n"
        "assert 'seppo_lib.world.motion_scorer' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- dataset generator ------------------------------------------------------------------------


def _md5(folder: Path) -> str:
    digest = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("fmt", ["gif", "frames"])
def test_generate_is_deterministic_and_reads_back_exactly(tmp_path: Path, fmt: str) -> None:
    a = generate_video_dataset(tmp_path / "a", split="test", n=6, seed=3, fmt=fmt)  # type: ignore[arg-type]
    b = generate_video_dataset(tmp_path / "b", split="test", n=6, seed=3, fmt=fmt)  # type: ignore[arg-type]
    assert _md5(a) == _md5(b)
    assert _md5(generate_video_dataset(tmp_path / "c", split="test", n=6, seed=4, fmt=fmt)) != _md5(a)  # type: ignore[arg-type]
    rows = [json.loads(line) for line in (a / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(parse_motion(r["caption"]).split == "test" for r in rows)
    clips = [clip_array(list(read_clip(a / r["file_name"], 8))) for r in rows]
    assert _mean(score_clips(clips, [parse_motion(r["caption"]) for r in rows])) == 1.0
    first = parse_motion(rows[0]["caption"])
    seed0 = int(np.random.SeedSequence([3, 0]).generate_state(1)[0])
    assert np.array_equal(clips[0], clip_array(render_clip(first, seed=seed0)))  # lossless, palette kept exactly


def test_generate_rejects_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="not an empty folder"):
        generate_video_dataset(tmp_path / "full", n=1)
    with pytest.raises(DataError, match="unknown clip format"):
        generate_video_dataset(tmp_path / "new", n=1, fmt="avi")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="at least 1"):
        generate_video_dataset(tmp_path / "new2", n=0)
