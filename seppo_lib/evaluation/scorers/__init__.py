"""Image-text scorers behind one interface; `build_scorer(name, path)` makes one.

Names and weight locations (`eval.scorer_paths.<name>`; a local path or s3:// URI each):

- ``world``: no weights (the built-in world's ground truth); like every scorer registered in
  ``seppo_lib.plugins.scorers``, built by its plugin.
- ``pickscore``: CLIPModel folder (PickScore_v1), processor files beside it or in `processor/`.
- ``clip``: CLIPModel folder (processor files beside it or in `processor/`).
- ``aesthetic``: ``"<clip_dir>::<head_file>"`` (ViT-L/14 CLIP folder and the LAION head file).
- ``hpsv2``: the HPS checkpoint file (or a folder holding exactly one ``*.pt``).
- ``imagereward``: a folder with ``ImageReward.pt`` and ``med_config.json``.

docs/metrics.md gives each formula and where to get the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from seppo_lib import plugins
from seppo_lib.config import ConfigError
from seppo_lib.evaluation.scorer_choices import image_scorers
from seppo_lib.evaluation.scorers.base import (
    Scorer,
    ScorerError,
    ScorerNotInstalledError,
    config_key,
    require_module,
    resolve_location,
)
from seppo_lib.evaluation.scorers.clip import (
    AestheticScorer,
    ClipScoreScorer,
    PickScoreScorer,
    clip_score_from_embeddings,
    pickscore_from_embeddings,
)
from seppo_lib.evaluation.scorers.external import HPSv2Scorer, ImageRewardScorer

if TYPE_CHECKING:
    from seppo_lib.config import EvalConfig, StorageConfig

__all__ = [
    "AestheticScorer",
    "ClipScoreScorer",
    "HPSv2Scorer",
    "ImageRewardScorer",
    "PickScoreScorer",
    "Scorer",
    "ScorerError",
    "ScorerNotInstalledError",
    "build_scorer",
    "build_scorers",
    "clip_score_from_embeddings",
    "pickscore_from_embeddings",
]

AESTHETIC_SEPARATOR = "::"


def build_scorer(
    name: str,
    path: str | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    *,
    cache_dir: str | Path | None = None,
    storage: StorageConfig | None = None,
) -> Scorer:
    """The scorer `name` with weights from `path` (local path or s3:// URI; s3 is cached in `cache_dir`)."""
    names = image_scorers()  # video scorers: seppo_lib.evaluation.video_eval
    if name not in names:
        raise ConfigError(f"unknown scorer {name!r} in eval.scorers; use one of {', '.join(names)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if name in plugins.scorers:
        return plugins.scorers.get(name).build(path, device, batch_size)  # type: ignore[no-any-return]
    where = {"cache_dir": cache_dir, "storage": storage}
    if name == "aesthetic":
        clip_loc, head_loc = _split_aesthetic(path)
        clip_dir = resolve_location(name, clip_loc, **where)
        head = resolve_location(name, head_loc, **where)
        return AestheticScorer(clip_dir, head, device, batch_size)
    if name == "hpsv2":
        return _external(HPSv2Scorer, "hpsv2.src.open_clip", path, device, batch_size, where)
    if name == "imagereward":
        return _external(ImageRewardScorer, "ImageReward", path, device, batch_size, where)
    cls = PickScoreScorer if name == "pickscore" else ClipScoreScorer
    return cls(resolve_location(name, path, **where), device, batch_size)


def _split_aesthetic(path: str | None) -> tuple[str | None, str | None]:
    if not path:
        return None, None
    parts = path.split(AESTHETIC_SEPARATOR)
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(
            f"{config_key('aesthetic')}={path!r} must be '<clip_dir>{AESTHETIC_SEPARATOR}<head_file>', "
            "e.g. models/clip-vit-large-patch14::models/sac+logos+ava1-l14-linearMSE.pth"
        )
    return parts[0].strip(), parts[1].strip()


def _external(
    cls: type[HPSv2Scorer] | type[ImageRewardScorer], module: str, path: str | None, device: str, batch_size: int,
    where: dict[str, Any],
) -> Scorer:
    """Check the optional package before the weights: without it the weights are of no use."""
    require_module(module, cls.name, cls.name)
    return cls(resolve_location(cls.name, path, **where), device, batch_size)


def build_scorers(
    eval_cfg: EvalConfig,
    device: str = "cpu",
    batch_size: int = 16,
    *,
    cache_dir: str | Path | None = None,
    storage: StorageConfig | None = None,
) -> dict[str, Scorer]:
    """Every scorer of `eval.scorers`, keyed by name, with weights from `eval.scorer_paths`."""
    unused = sorted(set(eval_cfg.scorer_paths) - set(eval_cfg.scorers))
    if unused:
        raise ConfigError(
            f"eval.scorer_paths has {', '.join(unused)} which eval.scorers does not list "
            f"(scorers: {', '.join(eval_cfg.scorers)}); add them to eval.scorers or remove the paths"
        )
    return {
        name: build_scorer(
            name, eval_cfg.scorer_paths.get(name), device, batch_size, cache_dir=cache_dir, storage=storage
        )
        for name in eval_cfg.scorers
    }
