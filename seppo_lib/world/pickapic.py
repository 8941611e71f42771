"""`builtin:world-pickapic`: Pick-a-Pic-like preference pairs in the built-in world.

Pick-a-Pic (Y. Kirstain et al., "Pick-a-Pic: An Open Dataset of User Preferences for
Text-to-Image Generation", NeurIPS 2023, arXiv:2305.01569) pairs two *model generations* for a
prompt and lets a person pick one (or declare a tie); the winner is often still wrong. This
module builds the same kind of data in the world:

1. **Generations.** For every prompt of the split (in a seeded random order) the shipped base
   model `builtin:world-base` draws two images with the project's sampler (DDIM, η 1, CFG 3.0,
   `STEPS` steps; 8 instead of the world preset's 10: the base model's accuracy is the same,
   docs/world-pickapic.md). Image k of prompt i has sample seed ``sample_seed(seed, 0, 2·i + k)``
   (`seppo_lib.bench.scoring.EvalSet` with 2 samples per prompt).
2. **The simulated annotator** reads the ground-truth scorer's per-attribute checks of both
   images and counts the correct attributes c (colour, shape, count, and relation for relation
   prompts). Equal counts are a **tie** (label 0.5; the Pick-a-Pic reader drops and counts ties).
   Otherwise it prefers the image with more correct attributes with the Bradley-Terry
   probability ``σ(|c₀ − c₁| / T)``, T = `TEMPERATURE` (one attribute more: 0.881, two: 0.982),
   and then flips its answer with probability ε (label noise).
3. **ε is calibrated to Pick-a-Pic's annotator agreement.** The paper reports that expert human
   annotators agree with the Pick-a-Pic users' choices on 68.0% of held-out pairs (PickScore:
   70.5%; abstract: 70.2% vs 68.0%). ε is solved on each generated dataset so that two
   independent simulated annotators agree on `PICKAPIC_AGREEMENT` = 0.680 of its non-tie pairs:
   with
   q_n = 2·σ(|Δc_n|/T) − 1, agreement = ½ + ½·(1 − 2ε)²·mean(q²), so
   ``ε = (1 − sqrt((2·0.680 − 1) / mean(q²))) / 2`` (0 when the Bradley-Terry noise alone is
   already below the target). Two annotators that agree 68% of the time each agree with the
   noiseless choice at most 80% of the time (0.8² + 0.2² = 0.68; less when pairs differ in
   difficulty); the measured figure is in annotator.json.

Output: a folder with `train.parquet` in Pick-a-Pic's columns (``caption``, ``jpg_0``, ``jpg_1``:
PNG bytes, ``label_0``: 1 image 0 won, 0 image 1 won, 0.5 tie) plus the annotator's workings
(``correct_0/1``, ``all_0/1``: fully correct, ``noiseless_label_0``), and `annotator.json` with the
annotator's parameters and statistics. Training reads it like Pick-a-Pic parquet
(`seppo_lib.data.sources.iter_pickapic`): winners only for SFT/SPIN/SePPO, (winner, loser)
pairs for Diffusion-DPO, ties dropped and counted.

Like a human annotator, this is data generation: the scorer is imported only while labelling
(never at import), and training code never imports this module's labelling or the scorer.
The same arguments give the same bytes on the same machine and torch thread count.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seppo_lib.errors import DataError
from seppo_lib.world.generate import choose_prompts
from seppo_lib.world.grammar import Split, split_prompts

logger = logging.getLogger(__name__)

SOURCE = "builtin:world-pickapic"
PARQUET = "train.parquet"
ANNOTATOR_JSON = "annotator.json"
MODEL = "builtin:world-base"
PICKAPIC_AGREEMENT = 0.680  # expert humans vs Pick-a-Pic users (Kirstain et al. 2023)
TEMPERATURE = 0.5  # Bradley-Terry temperature on the number of correct attributes
STEPS = 8  # DDIM steps of the generations (the world preset samples with 10: same accuracy)
GUIDANCE_SCALE = 3.0
ETA = 1.0
BATCH_SIZE = 64
MAX_TOKENS = 16  # the world models' caption length (data.max_caption_tokens of the world presets)
ATTRIBUTES = ("colour", "shape", "count", "relation")


@dataclass(frozen=True)
class Annotator:
    """Bradley-Terry on the number of correct attributes (temperature T), then a label flip with probability `noise`."""

    temperature: float = TEMPERATURE
    noise: float = 0.0

    def p_better(self, delta: np.ndarray) -> np.ndarray:
        """Probability of choosing the image with more correct attributes, for |Δc| = `delta` > 0."""
        q = 1.0 / (1.0 + np.exp(-np.abs(np.asarray(delta, dtype=np.float64)) / self.temperature))
        return q + self.noise * (1.0 - 2.0 * q)


def correct_count(scores: dict[str, float]) -> int:
    """Number of attributes the world scorer finds right (colour, shape, count, relation where it applies)."""
    return int(sum(scores[a] for a in ATTRIBUTES if a in scores))


def calibrate_noise(deltas: Sequence[int] | np.ndarray, temperature: float, agreement: float = PICKAPIC_AGREEMENT) -> float:
    """Label-flip rate ε at which two independent annotators agree on `agreement` of pairs with these |Δc| > 0.

    Per pair, with q = 2·σ(|Δc|/T) − 1, two annotators agree with probability ½ + ½·(1 − 2ε)²·q²;
    averaged over pairs and solved for ε: (1 − sqrt((2·agreement − 1) / mean(q²))) / 2, clipped at 0.
    Example: every |Δc| huge (q = 1) and agreement 0.68 give ε = (1 − sqrt(0.36)) / 2 = 0.2.
    """
    d = np.abs(np.asarray(deltas, dtype=np.float64))
    if d.size == 0 or (d == 0).any():
        raise DataError("calibrate_noise needs at least one pair and no ties (|Δc| > 0)")
    if not 0.5 < agreement < 1.0 or temperature <= 0:
        raise DataError(f"need 0.5 < agreement < 1 and temperature > 0, got {agreement}, {temperature}")
    q2 = float(np.mean((2.0 / (1.0 + np.exp(-d / temperature)) - 1.0) ** 2))
    ratio = (2.0 * agreement - 1.0) / q2
    return 0.0 if ratio >= 1.0 else (1.0 - math.sqrt(ratio)) / 2.0


def annotate(c0: np.ndarray, c1: np.ndarray, annotator: Annotator, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(label_0, noiseless label_0) per pair from the correct-attribute counts: 1 image 0 won, 0 image 1, 0.5 tie."""
    c0, c1 = np.asarray(c0), np.asarray(c1)
    noiseless = np.where(c0 > c1, 1.0, np.where(c0 < c1, 0.0, 0.5))
    u = np.random.default_rng([seed, 19]).random(c0.size)  # one uniform per pair, ties included: labels stay aligned
    chose_better = u < annotator.p_better(np.where(c0 == c1, 1, c0 - c1))
    return np.where(chose_better, noiseless, 1.0 - noiseless), noiseless  # a tie (0.5) stays 0.5 either way


def annotator_stats(label: np.ndarray, noiseless: np.ndarray, all0: np.ndarray, all1: np.ndarray, annotator: Annotator) -> dict[str, Any]:
    """Rows, ties, how often the winner / loser is fully correct, and the agreement with the noiseless annotator."""
    keep = label != 0.5
    win0 = label[keep] == 1.0
    winner_all = np.where(win0, all0[keep], all1[keep])
    loser_all = np.where(win0, all1[keep], all0[keep])
    n = int(keep.sum())
    return {
        "pairs": int(label.size), "ties": int((~keep).sum()), "rows": n,
        "winner_fully_correct": float(winner_all.mean()) if n else None,
        "loser_fully_correct": float(loser_all.mean()) if n else None,
        "agreement_with_noiseless": float((label[keep] == noiseless[keep]).mean()) if n else None,
        "annotator": asdict(annotator), "target_inter_annotator_agreement": PICKAPIC_AGREEMENT,
    }  # fmt: skip


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _generations(
    model: str, prompts: list[Any], seed: int, steps: int, size: int, cache_dir: str | Path
) -> tuple[list[Any], list[dict[str, float]]]:
    """Two images per prompt (image k of prompt i at 2·i + k) and the world scorer's checks of each."""
    from seppo_lib.bench.scoring import EvalSet, evaluate
    from seppo_lib.config import SamplingConfig
    from seppo_lib.models import load_model
    from seppo_lib.progress import Progress

    sampling = SamplingConfig(scheduler="ddim", num_inference_steps=steps, guidance_scale=GUIDANCE_SCALE, eta=ETA, batch_size=BATCH_SIZE)
    eval_set = EvalSet(tuple(prompts), 2, seed)
    with Progress[None](total=2 * len(prompts), desc="world-pickapic generations", unit="img") as bar:
        return evaluate(load_model(model, cache_dir), eval_set, sampling, resolution=size, max_tokens=MAX_TOKENS, on_batch=bar.update)


def generate_pickapic_dataset(
    out_dir: str | Path,
    *,
    split: Split = "train",
    n: int | None = None,
    seed: int = 0,
    size: int = 32,
    model: str = MODEL,
    steps: int = STEPS,
    cache_dir: str | Path = "seppo-runs/cache",
) -> dict[str, Any]:
    """Write `train.parquet` and `annotator.json` for `n` prompts of `split` (all, in seeded order, if None) into
    the missing or empty `out_dir`; returns annotator.json's contents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} is not an empty folder; pass a new or empty out_dir")
    prompts = choose_prompts(split, len(split_prompts(split)) if n is None else n, seed)
    start = time.time()
    images, scores = _generations(model, prompts, seed, steps, size, cache_dir)
    counts = np.array([correct_count(s) for s in scores]).reshape(-1, 2)
    full = np.array([s["all"] == 1.0 for s in scores]).reshape(-1, 2)
    ties = counts[:, 0] == counts[:, 1]
    noise = calibrate_noise(counts[~ties, 0] - counts[~ties, 1], TEMPERATURE) if (~ties).any() else 0.0
    annotator = Annotator(TEMPERATURE, noise)
    label, noiseless = annotate(counts[:, 0], counts[:, 1], annotator, seed)
    table = pa.table({
        "caption": [p.text for p in prompts], "jpg_0": [_png(im) for im in images[0::2]], "jpg_1": [_png(im) for im in images[1::2]],
        "label_0": label, "noiseless_label_0": noiseless, "correct_0": counts[:, 0], "correct_1": counts[:, 1],
        "all_0": full[:, 0], "all_1": full[:, 1],
    })  # fmt: skip
    doc = {
        "source": SOURCE, "split": split, "prompts": len(prompts), "seed": seed, "size": size, "model": model,
        "sampler": {"scheduler": "ddim", "steps": steps, "guidance_scale": GUIDANCE_SCALE, "eta": ETA},
        **annotator_stats(label, noiseless, full[:, 0], full[:, 1], annotator),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / PARQUET)
    (out / ANNOTATOR_JSON).write_text(json.dumps(doc, indent=1) + "\n")
    logger.info("wrote %d pairs (%d ties) to %s in %.0fs: winner fully correct %.3f, loser %.3f, agreement with "
                "noiseless %.3f (eps %.3f)", doc["pairs"], doc["ties"], out, time.time() - start, doc["winner_fully_correct"] or 0,
                doc["loser_fully_correct"] or 0, doc["agreement_with_noiseless"] or 0, noise)  # fmt: skip
    return doc


def materialize(params: dict[str, Any], cache_dir: str | Path) -> Path:
    """The dataset folder of `builtin:world-pickapic` with `params` (`data.sources.builtin_params`) under
    `<cache_dir>/builtin-data/`, generated on first use (into a scratch folder, then renamed into place)."""
    import hashlib

    from seppo_lib.data.sources import builtin_source_version

    version = builtin_source_version(SOURCE, params)
    final = Path(cache_dir) / "builtin-data" / f"world-pickapic-{hashlib.sha256(version.encode()).hexdigest()[:16]}"
    if (final / ANNOTATOR_JSON).is_file():
        return final
    scratch = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    for stale in (scratch, final):  # a scratch folder of a killed run; a final folder without its annotator.json
        shutil.rmtree(stale, ignore_errors=True)
    logger.info("generating %s (%s) into %s", SOURCE, version, final)
    generate_pickapic_dataset(scratch, cache_dir=cache_dir, **params)
    try:
        scratch.rename(final)
    except OSError:  # another process finished first: its folder holds the same data
        shutil.rmtree(scratch, ignore_errors=True)
    return final
