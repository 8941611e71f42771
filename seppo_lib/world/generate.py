"""Write a built-in-world dataset: PNG images plus ``metadata.jsonl``.

Layout of the folder (the Hugging Face "imagefolder" convention)::

    out_dir/
      metadata.jsonl      one JSON object per winning image, in file order
      000000.png          ground-truth render of the caption
      000000_loser.png    paired=True only: the same prompt with exactly one attribute wrong

``metadata.jsonl`` fields:

- ``file_name``: the winning image, relative to ``out_dir``.
- ``caption``: the prompt text (``seppo_lib.world.parse`` turns it back into a ``Prompt``).
- ``loser_file_name`` (``paired=True`` only): a render that gets exactly one attribute of
  ``caption`` wrong, the rejected image of a Diffusion-DPO pair. Colour and shape losers keep
  the winner's layout. A training caption's loser never shows a held-out combination.
- ``loser_caption`` (``paired=True`` only): the prompt the loser truly shows.
- ``wrong_attribute`` (``paired=True`` only): which attribute the loser gets wrong
  (``colour``, ``shape``, ``count`` or ``relation``).

The same arguments give the same bytes: prompts, seeds and file names come from ``seed`` alone
and PNG writing adds no timestamps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from seppo_lib.errors import DataError
from seppo_lib.world.grammar import Prompt, Split, split_prompts
from seppo_lib.world.render import applicable_attributes, render, render_wrong

logger = logging.getLogger(__name__)

METADATA = "metadata.jsonl"


def choose_prompts(split: Split, n: int | None, seed: int) -> list[Prompt]:
    """``n`` distinct prompts of ``split`` drawn with ``seed`` (all of them, in order, if None)."""
    prompts = split_prompts(split)
    if n is None:
        return prompts
    if not 1 <= n <= len(prompts):
        raise DataError(f"n={n} is out of range; the {split} split has {len(prompts)} prompts")
    order = np.random.default_rng([seed, 0]).permutation(len(prompts))[:n]
    return [prompts[int(i)] for i in order]


def _image_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def generate_dataset(
    out_dir: str | Path,
    split: Split = "train",
    n: int | None = None,
    seed: int = 0,
    paired: bool = False,
    size: int = 32,
    images_per_prompt: int = 1,
) -> Path:
    """Render ``n`` prompts of ``split`` (all if None), ``images_per_prompt`` images each.

    ``out_dir`` must be missing or empty. Returns ``out_dir`` as a :class:`Path`.
    """
    if seed < 0:
        raise DataError(f"seed must be non-negative, got {seed}")
    if images_per_prompt < 1:
        raise DataError(f"images_per_prompt must be at least 1, got {images_per_prompt}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} is not an empty folder; pass a new or empty out_dir")
    prompts = choose_prompts(split, n, seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(len(prompts) * images_per_prompt):
        prompt = prompts[index // images_per_prompt]
        image_seed = _image_seed(seed, index)
        row: dict[str, str] = {"file_name": f"{index:06d}.png", "caption": prompt.text}
        render(prompt, size=size, seed=image_seed).save(out / row["file_name"], format="PNG")
        if paired:
            options = applicable_attributes(prompt)
            attribute = options[image_seed % len(options)]
            loser, wrong = render_wrong(prompt, seed=image_seed, attribute=attribute, size=size)
            row["loser_file_name"] = f"{index:06d}_loser.png"
            row["loser_caption"] = wrong.text
            row["wrong_attribute"] = attribute
            loser.save(out / row["loser_file_name"], format="PNG")
        rows.append(json.dumps(row))
    (out / METADATA).write_text("\n".join(rows) + "\n", encoding="utf-8")
    logger.info("wrote %d %s images to %s", len(rows), split, out)
    return out

