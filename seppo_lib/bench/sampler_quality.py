"""`seppo bench sampler`: does a faster reference sampler keep the reference samples' quality?

SePPO's reference samples are what the anchor criterion and the loss push against, so a faster
sampler is only a free speed-up if the samples stay as good. This samples the world base model
on the same training-split prompts and sample seeds with each candidate sampler and grades every
image with the world's ground-truth scorer (evaluation, like `bench quality`: training never
imports the scorer). The prompts are drawn uniformly from the training split, in its own mix of
count and relation prompts, as the reference samples of a round are. Each candidate is compared with the preset's sampler on the same prompts ×
seeds: the paired difference of the per-image "all attributes correct" score with a bootstrap
95% interval over prompts (`bench.paired.paired_bootstrap`, one training seed). A candidate
"keeps quality" when that interval contains 0 *and* its half-width is at most `tolerance`
(default 0.05): an interval that is merely wide is no evidence of equality.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seppo_lib.bench.paired import difference_table, paired_bootstrap
from seppo_lib.bench.scoring import EvalSet, evaluate
from seppo_lib.config import SamplingConfig
from seppo_lib.errors import ConfigError
from seppo_lib.world.grammar import Prompt, split_prompts

logger = logging.getLogger(__name__)

#: (scheduler, steps, eta) of each candidate; the first is the comparator (the world preset's sampler).
CANDIDATES: tuple[tuple[str, int, float], ...] = (("ddim", 10, 1.0), ("dpmsolver", 5, 0.0), ("dpmsolver", 10, 0.0), ("ddim", 5, 1.0))


@dataclass(frozen=True)
class SamplerOptions:
    out: Path
    cache_dir: Path
    model: str = "builtin:world-base"
    prompts: int = 256
    samples: int = 2
    seed: int = 1234
    guidance_scale: float = 3.0
    batch_size: int = 64
    tolerance: float = 0.05
    candidates: tuple[tuple[str, int, float], ...] = CANDIDATES


def parse_candidates(text: str) -> tuple[tuple[str, int, float], ...]:
    """'ddim:10:1,dpmsolver:5' -> (("ddim", 10, 1.0), ("dpmsolver", 5, 0.0)); eta defaults to 0."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        parts = item.split(":")
        try:
            name, steps, eta = parts[0], int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0
        except (IndexError, ValueError):
            raise ConfigError(f"--samplers: {item!r} is not SCHEDULER:STEPS[:ETA] (e.g. dpmsolver:5)") from None
        out.append((name, steps, eta))
    if len(out) < 2:
        raise ConfigError("--samplers needs the comparator and at least one candidate, e.g. ddim:10:1,dpmsolver:5")
    return tuple(out)


def training_prompts(n: int, seed: int) -> tuple[Prompt, ...]:
    """`n` distinct training-split prompts drawn uniformly (seeded): the prompts reference samples are drawn for,
    in the split's own mix of count and relation prompts."""
    prompts = split_prompts("train")
    if not 1 <= n <= len(prompts):
        raise ConfigError(f"--prompts must be in 1..{len(prompts)} (the world's training split), got {n}")
    pick = np.random.default_rng([seed, 7]).choice(len(prompts), n, replace=False)
    return tuple(prompts[i] for i in sorted(pick.tolist()))


def _label(name: str, steps: int, eta: float) -> str:
    return f"{name} {steps} steps" + (f", eta {eta:g}" if name == "ddim" else "")


def run_sampler_quality(options: SamplerOptions) -> dict[str, Any]:
    """Score every candidate sampler on the same prompts × seeds; the JSON document (also written to `options.out`)."""
    import json

    from seppo_lib.models import load_model

    start = time.time()
    model = load_model(options.model, options.cache_dir)
    eval_set = EvalSet(training_prompts(options.prompts, options.seed), options.samples, options.seed)
    rows: list[dict[str, Any]] = []
    for name, steps, eta in options.candidates:
        sampling = SamplingConfig(scheduler=name, num_inference_steps=steps, eta=eta, guidance_scale=options.guidance_scale,
                                  batch_size=options.batch_size)  # fmt: skip
        began = time.perf_counter()
        _, scores = evaluate(model, eval_set, sampling, resolution=32, max_tokens=16)
        seconds = time.perf_counter() - began
        rows.append({"scheduler": name, "steps": steps, "eta": eta, "seconds": seconds,
                     "all": [s["all"] for s in scores]})  # fmt: skip
        logger.info("%s: accuracy %.3f (%.0f s)", _label(name, steps, eta), float(np.mean(rows[-1]["all"])), seconds)
    doc = {"model": options.model, "prompts": options.prompts, "samples": options.samples, "seed": options.seed,
           "split": "train", "guidance_scale": options.guidance_scale, "tolerance": options.tolerance,
           "samplers": rows, "wall_seconds": time.time() - start}  # fmt: skip
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def comparisons(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each candidate vs the first sampler: accuracies, paired difference with its 95% interval, the verdict."""
    p, k = doc["prompts"], doc["samples"]
    table = {i: np.asarray(r["all"], dtype=np.float64).reshape(p, k) for i, r in enumerate(doc["samplers"])}
    base = doc["samplers"][0]
    out = []
    for i, r in enumerate(doc["samplers"]):
        diff = paired_bootstrap(difference_table(table[i][None], table[0])) if i else None
        keeps = diff is not None and not diff.excludes_zero and (diff.hi - diff.lo) / 2 <= doc["tolerance"]
        out.append({"sampler": _label(r["scheduler"], r["steps"], r["eta"]), "accuracy": float(table[i].mean()),
                    "seconds": r["seconds"], "speedup": base["seconds"] / r["seconds"],
                    "diff": diff, "keeps_quality": keeps})  # fmt: skip
    return out


def sampler_table(doc: dict[str, Any]) -> str:
    """The markdown table of `comparisons` (docs/performance.md embeds it; a test rebuilds it)."""
    lines = ["| sampler | accuracy (all attributes) | − comparator, 95% CI | seconds | speed-up | keeps quality |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for c in comparisons(doc):
        d = c["diff"]
        ci = "comparator" if d is None else f"{d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"
        verdict = "–" if d is None else ("yes" if c["keeps_quality"] else "no")
        lines.append(f"| {c['sampler']} | {c['accuracy']:.3f} | {ci} | {c['seconds']:.0f} | {c['speedup']:.2f}× | {verdict} |")
    return "\n".join(lines)
