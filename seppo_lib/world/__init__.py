"""The built-in synthetic text-to-image world: grammar, renderer, scorer, dataset generator.

Training code uses the grammar, the renderer and the generator. The ground-truth scorer is
deliberately not re-exported: evaluation imports it as ``seppo_lib.world.scorer``, so
importing this package never loads it and "training never sees the scorer" stays checkable
(``"seppo_lib.world.scorer" not in sys.modules``).
"""

from __future__ import annotations

from seppo_lib.world.generate import choose_prompts, generate_dataset
from seppo_lib.world.grammar import (
    COLOURS,
    COUNTS,
    HELD_OUT,
    RELATIONS,
    SHAPES,
    Prompt,
    Thing,
    all_prompts,
    parse,
    split_prompts,
)
from seppo_lib.world.render import (
    ATTRIBUTES,
    BACKGROUND,
    PALETTE,
    applicable_attributes,
    corruptions,
    render,
    render_wrong,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUND",
    "COLOURS",
    "COUNTS",
    "HELD_OUT",
    "PALETTE",
    "RELATIONS",
    "SHAPES",
    "Prompt",
    "Thing",
    "all_prompts",
    "applicable_attributes",
    "choose_prompts",
    "corruptions",
    "generate_dataset",
    "parse",
    "render",
    "render_wrong",
    "split_prompts",
]
