"""The built-in world's ground-truth scorer behind the Scorer interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seppo_lib.evaluation.scorers.base import check_pairs

if TYPE_CHECKING:
    from PIL import Image


class WorldScorer:
    """1.0 when the image shows exactly what its world prompt says, else 0.0 (the "all" check).

    Prompts must be world-grammar captions (e.g. "two red circles"); the per-attribute checks
    are available from :meth:`score_details`.
    """

    name = "world"

    def score_details(self, images: list[Image.Image], prompts: list[str]) -> list[dict[str, float]]:
        """Every check of the world scorer per image (keys include "all")."""
        from seppo_lib.world.grammar import parse
        from seppo_lib.world.scorer import score_image

        check_pairs(images, prompts)
        return [
            {key: float(value) for key, value in score_image(image, parse(prompt)).items()}
            for image, prompt in zip(images, prompts, strict=True)
        ]

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float]:
        return [details["all"] for details in self.score_details(images, prompts)]
