"""`seppo bench tune`: the hyper-parameter search behind the quality benchmark's tuned values.

The same search for every method: each method is trained once (one seed) at every learning
rate of `LRS`, and the methods with a β (Diffusion-DPO, SPIN-Diffusion, SePPO) at every
(LR, β) of `LRS x BETAS`. Every point uses the benchmark budget (preset `bench-quality`) and is
scored like the benchmark, but on a *different* draw of held-out prompts and sample noise
(`eval_seed`, default 99, vs 1234 for the reported table), so the table is not scored on the
images the search selected on. The selection rule is the highest held-out "all attributes"
accuracy (ties: the smaller LR, then the smaller β). SePPO's ablation variants share the values
chosen for seppo-sign-uniform (`seppo_lib.bench.methods.TUNED`).

Outputs in `out/`: `tuning.json` (every point) and `tuning.md` (the grid per method and the choice).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seppo_lib.bench.quality import BenchOptions, build_context, score_base, train_and_score
from seppo_lib.progress import Progress

logger = logging.getLogger(__name__)

LRS: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
BETAS: tuple[float, ...] = (500.0, 2000.0, 5000.0)
TUNE_METHODS: tuple[str, ...] = ("sft", "dpo", "spin", "seppo-sign-uniform")
NO_BETA = frozenset({"sft"})


@dataclass(frozen=True)
class TuneOptions:
    """What the search runs; defaults are the search documented in docs/results.md."""

    out: Path
    workdir: Path | None = None
    methods: tuple[str, ...] = TUNE_METHODS
    seed: int = 0
    prompts: int = 32
    train_prompts: int = 16
    samples_per_prompt: int = 4
    eval_seed: int = 99
    lrs: tuple[float, ...] = LRS
    betas: tuple[float, ...] = BETAS
    overrides: tuple[str, ...] = field(default_factory=tuple)


def grid(method: str, lrs: tuple[float, ...], betas: tuple[float, ...]) -> list[dict[str, float]]:
    """The points searched for `method`: LR only for SFT, LR x β otherwise."""
    if method in NO_BETA:
        return [{"lr": lr} for lr in lrs]
    return [{"lr": lr, "beta": beta} for lr in lrs for beta in betas]


def point_overrides(point: dict[str, float]) -> tuple[str, ...]:
    return tuple(f"train.{key}={value}" for key, value in point.items())


def _bench_options(options: TuneOptions, method: str, point: dict[str, float]) -> BenchOptions:
    return BenchOptions(
        out=options.out, workdir=options.workdir or options.out / "work", methods=(method,), seeds=(options.seed,),
        prompts=options.prompts, train_prompts=options.train_prompts, samples_per_prompt=options.samples_per_prompt,
        eval_seed=options.eval_seed, overrides=(*options.overrides, *point_overrides(point)), tuned=False,
    )


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The selection rule: highest held-out accuracy; ties go to the smaller LR, then the smaller β."""
    return max(rows, key=lambda r: (r["test_all"], -r["point"]["lr"], -r["point"].get("beta", 0.0)))


def run_tuning(options: TuneOptions) -> dict[str, Any]:
    """Run (or resume from the cache) every grid point; write tuning.json and tuning.md."""
    start = time.time()
    options.out.mkdir(parents=True, exist_ok=True)
    jobs = [(m, p) for m in options.methods for p in grid(m, options.lrs, options.betas)]
    base = score_base(build_context(_bench_options(options, options.methods[0], {})))
    rows: list[dict[str, Any]] = []
    for method, point in Progress(jobs, desc="bench tune", unit="run"):
        logger.info("tuning: %s %s", method, point)
        result = train_and_score(build_context(_bench_options(options, method, point)), method, options.seed)
        rows.append({
            "method": method, "point": point, "run_id": result["run_id"],
            "test_all": result["final"]["test"]["all"], "train_all": result["final"]["train"]["all"],
            "test_first_by_round": [r["test_first"]["all"] for r in result["rounds"]],
            "final_flip_rate": result["rounds"][-1]["train_metrics"].get("flip_rate"),
            "train_seconds": result["train_seconds"],
        })
    chosen = {m: choose([r for r in rows if r["method"] == m]) for m in options.methods}
    doc = {
        "options": {**{k: v for k, v in options.__dict__.items() if k not in ("out", "workdir")}, "out": str(options.out)},
        "base": {"test_all": base["test"]["all"], "train_all": base["train"]["all"]},
        "rows": rows,
        "chosen": {m: r["point"] for m, r in chosen.items()},
        "wall_seconds": round(time.time() - start, 1),
    }
    (options.out / "tuning.json").write_text(json.dumps(doc, indent=1))
    (options.out / "tuning.md").write_text(tuning_table(doc) + "\n")
    return doc


def tuning_table(doc: dict[str, Any]) -> str:
    """One markdown row per grid point; the chosen point of each method in bold."""
    lines = [
        f"Base model on the tuning prompts: test all {doc['base']['test_all']:.3f}, train all {doc['base']['train_all']:.3f}.",
        "",
        "| method | lr | beta | test all | train all | test (first sample) by round | final flip rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        mark = "**" if r["point"] == doc["chosen"][r["method"]] else ""
        beta = f"{r['point']['beta']:g}" if "beta" in r["point"] else "-"
        flip = "-" if r["final_flip_rate"] is None else f"{r['final_flip_rate']:.2f}"
        curve = " → ".join(f"{v:.2f}" for v in r["test_first_by_round"])
        lines.append(f"| {mark}{r['method']}{mark} | {r['point']['lr']:g} | {beta} | {mark}{r['test_all']:.3f}{mark} | "
                     f"{r['train_all']:.3f} | {curve} | {flip} |")
    return "\n".join(lines)
