"""`seppo bench quality`: SFT, Diffusion-DPO, SPIN-Diffusion and SePPO variants on the built-in world.

Every method trains from the same base model with the same budget (the `bench-quality`
preset: rounds, updates, batch, LR schedule, sampler) for each seed (`train.seed`), through
`seppo_lib.orchestrate.run_rounds`, each method/seed in its own run under the work folder.
Each final model is sampled on fixed held-out (test-split) prompts, balanced between count and
relation prompts, with fixed sample seeds shared by all methods, and on a fixed subset of
training prompts (the generalization gap); the world's ground-truth scorer grades the images.
Intermediate rounds are graded on the first sample of every test prompt (accuracy vs round).
A preset whose data source is the video world (`bench-video`) runs the same benchmark on
clips: distinct held-out motion prompts, graded by the video world's motion scorer.
`dataset` replaces the preset's training data for every method: `builtin:world-pickapic`
(Pick-a-Pic-like pairs of base-model generations, `seppo_lib.world.pickapic`, generated once into
the work folder's cache and read as Pick-a-Pic parquet), or any `data.source` value.

Outputs in `out/`: `results.json` (every number, with every model's per-image held-out scores),
`table.md`, `paired.md` (method − base and method − sft on the same prompts, sample seeds and
training seeds: `seppo_lib.bench.paired`), `accuracy_vs_round.png`, `flip_rate_vs_round.png`,
`samples_grid.png`. Finished runs are cached in the work folder, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seppo_lib.bench.methods import ALL_METHODS, BASE, method_overrides
from seppo_lib.bench.scoring import VIDEO_WORLD_SOURCE, EvalSet, bench_prompts, evaluate, summarize
from seppo_lib.config import SeppoConfig, load_config
from seppo_lib.progress import Progress
from seppo_lib.tracking import InMemoryLogger

if TYPE_CHECKING:
    from seppo_lib.world.grammar import Prompt
    from seppo_lib.world.video import MotionPrompt

logger = logging.getLogger(__name__)

PRESET = "bench-quality"
STEP_METRICS = ("loss", "flip_rate", "implicit_acc", "err_policy_w", "err_ref_w", "err_policy_r", "err_ref_r")


@dataclass(frozen=True)
class BenchOptions:
    """What to run; defaults are the full benchmark of docs/results.md."""

    out: Path
    workdir: Path | None = None
    config: str = PRESET
    methods: tuple[str, ...] = ALL_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    prompts: int = 32
    train_prompts: int = 16
    samples_per_prompt: int = 4
    rounds: int | None = None
    eval_seed: int = 1234
    grid_prompts: int = 8
    curve_prompts: int | None = None  # intermediate rounds: first sample of the first N test prompts (None: all)
    overrides: tuple[str, ...] = field(default_factory=tuple)
    tuned: bool = True
    dataset: str | None = None

    @property
    def work(self) -> Path:
        return self.workdir or self.out / "work"


@dataclass
class Context:
    """What every run shares: the preset, the evaluation sets, the work folder."""

    options: BenchOptions
    base_cfg: SeppoConfig
    test_set: EvalSet
    train_set: EvalSet
    data_overrides: tuple[str, ...] = ()
    dataset_stats: dict[str, Any] | None = None

    @property
    def video(self) -> bool:
        return is_video_world(self.base_cfg)

    def run_config(self, method: str, seed: int) -> SeppoConfig:
        w = self.options.work
        fixed = [f"name=bench-{method}", f"workdir={w / 'runs'}", f"bank.uri={w / 'bank'}", f"bank.cache_dir={w / 'cache'}",
                 "tracking.enabled=false", f"train.seed={seed}"]
        return load_config(self.options.config, [*self._shared(), *fixed, *method_overrides(method, tuned=self.options.tuned)])

    def _shared(self) -> list[str]:
        rounds = [f"train.n_rounds={self.options.rounds}"] if self.options.rounds else []
        return [*rounds, *self.data_overrides, *self.options.overrides]

    def eval_key(self) -> str:
        o = self.options
        doc = [o.prompts, o.train_prompts, o.samples_per_prompt, o.eval_seed, o.grid_prompts, self.base_cfg.sampling.model_dump(mode="json"),
               ["curve: first samples' seeds", o.curve_prompts]]  # fmt: skip
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]


def is_video_world(cfg: SeppoConfig) -> bool:
    """True when the benchmark preset trains on the built-in video world (clips, motion scorer)."""
    return cfg.data.source == VIDEO_WORLD_SOURCE


def dataset_overrides(options: BenchOptions) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """Config overrides that train every method on `options.dataset`, and the annotator statistics of a
    Pick-a-Pic-like world dataset (builtin:world-pickapic: generated on first use into `<work>/cache`, the runs'
    bank.cache_dir; or a folder written by `seppo world generate-pickapic`)."""
    from seppo_lib.world.pickapic import ANNOTATOR_JSON, SOURCE, materialize

    if options.dataset is None:
        return (), None
    if options.dataset == SOURCE:
        from seppo_lib.data.sources import builtin_params

        folder = materialize(builtin_params(SOURCE, max_rows=None, paired=False, num_frames=1, frame_stride=1), options.work / "cache")
        return (f"data.source={folder}", "data.format=pickapic"), json.loads((folder / ANNOTATOR_JSON).read_text())
    stats = Path(options.dataset) / ANNOTATOR_JSON
    return (f"data.source={options.dataset}",), json.loads(stats.read_text()) if stats.is_file() else None


def build_context(options: BenchOptions) -> Context:
    data, stats = dataset_overrides(options)
    rounds = [f"train.n_rounds={options.rounds}"] if options.rounds else []
    base_cfg = load_config(options.config, [*rounds, *data, *options.overrides])
    k, video = options.samples_per_prompt, is_video_world(base_cfg)
    test = EvalSet(tuple(bench_prompts("test", options.prompts, options.eval_seed, video=video)), k, options.eval_seed)
    train = EvalSet(tuple(bench_prompts("train", options.train_prompts, options.eval_seed, video=video)), k, options.eval_seed + 1)
    return Context(options, base_cfg, test, train, data, stats)


# ---- one model ----------------------------------------------------------------------------


def grid_indices(prompts: Sequence[Prompt | MotionPrompt], n_grid: int, *, video: bool = False) -> list[int]:
    """Prompt indices of the sample grid: the first count prompts and the first relation prompts
    (balanced_prompts puts its count prompts first); the first prompts for the video world."""
    n_prompts = len(prompts)
    if video:
        return list(range(min(n_grid, n_prompts)))
    n_count = sum(1 for p in prompts if getattr(p, "relation", None) is None)
    half = min((n_grid + 1) // 2, n_count)
    return list(range(half)) + list(range(n_count, min(n_count + n_grid - half, n_prompts)))


def _first_samples(scores: list[dict[str, float]], k: int) -> list[dict[str, float]]:
    return scores[::k]


def score_model(ctx: Context, model_dir: str | Path, *, full: bool, grid_dir: Path | None = None) -> dict[str, Any]:
    """Sample and score one model folder: the test set (all samples, or the first per prompt) and,
    when `full`, the train set; optionally save the grid images (first sample of the first prompts)."""
    from seppo_lib.models import load_model

    cfg = ctx.base_cfg
    model = load_model(str(model_dir), cfg.bank.cache_dir)
    k = ctx.test_set.samples_per_prompt
    test = ctx.test_set if full else ctx.test_set.first_samples(ctx.options.curve_prompts)
    kwargs = {"resolution": cfg.data.resolution, "max_tokens": cfg.data.max_caption_tokens, "frames": cfg.data.num_frames}
    images, scores = evaluate(model, test, cfg.sampling, **kwargs)
    first = _first_samples(scores, k)[: ctx.options.curve_prompts] if full else scores  # the curve's prompts in every round
    out: dict[str, Any] = {"test_first": summarize(first), "curve_prompts": len(first),
                           "first_all_per_image": [s["all"] for s in first]}  # fmt: skip
    if full:
        _, train_scores = evaluate(model, ctx.train_set, cfg.sampling, **kwargs)
        out.update(test=summarize(scores), train=summarize(train_scores), test_all_per_image=[s["all"] for s in scores])
        if grid_dir is not None:
            grid_dir.mkdir(parents=True, exist_ok=True)
            columns = grid_indices(ctx.test_set.prompts, ctx.options.grid_prompts, video=ctx.video)
            for column, i in enumerate(columns):
                images[i * k].save(grid_dir / f"{column:02d}.png")
            (grid_dir / "scores.json").write_text(json.dumps([scores[i * k]["all"] for i in columns]))
    return out


# ---- one training run -----------------------------------------------------------------------


def _round_means(run_logger: InMemoryLogger) -> dict[int, dict[str, float]]:
    by_round: dict[int, list[dict[str, float]]] = {}
    for _, row in run_logger.metrics:
        by_round.setdefault(int(row["round"]), []).append(row)
    return {
        r: {key: float(np.mean([m[key] for m in rows])) for key in STEP_METRICS if all(key in m for m in rows)}
        for r, rows in sorted(by_round.items())
    }


def reference_accuracy(cfg: SeppoConfig, round_idx: int) -> float | None:
    """Fraction of the round's reference samples that the world scorer accepts (None without samples)."""
    from seppo_lib.bench.scoring import score, to_pil
    from seppo_lib.data.shards import LatentDataset, round_indices
    from seppo_lib.orchestrate import round_dir
    from seppo_lib.steps.common import run_dir
    from seppo_lib.training.references import ReferenceSet
    from seppo_lib.world.grammar import parse

    dirs = sorted(round_dir(cfg, round_idx).glob("refs-*"))
    if not dirs:
        return None
    refs = ReferenceSet(dirs)
    dataset = LatentDataset(run_dir(cfg) / "data")
    rows = round_indices(len(dataset), cfg.train.seed, round_idx, cfg.samples_per_round)
    texts = [dataset.captions[int(r)] for r in rows]
    pixels = ((refs.latents.float() + 1) / 2).clamp(0, 1)  # the benchmark's world models are pixel-space
    if pixels.dim() == 5:
        from seppo_lib.evaluation.video_metrics import world_scores

        return float(np.mean([s["all"] for s in world_scores(pixels, texts)]))
    return float(np.mean([s["all"] for s in score(to_pil(pixels), [parse(t) for t in texts])]))


def train_and_score(ctx: Context, method: str, seed: int) -> dict[str, Any]:
    """Train one method/seed (resuming committed rounds) and score every round's checkpoint."""
    from seppo_lib.export import resolve_model_uri
    from seppo_lib.orchestrate import run_rounds

    cfg = ctx.run_config(method, seed)
    cache = ctx.options.work / "results" / f"{cfg.run_id}-{ctx.eval_key()}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    run_logger = InMemoryLogger()
    start = time.time()
    summary = run_rounds(cfg, run_logger)
    train_s = time.time() - start
    means = _round_means(run_logger)
    rounds = []
    for r in summary.rounds:
        k = r["round"]
        last = k == cfg.train.n_rounds
        grid = ctx.options.work / "grids" / f"{method}-seed{seed}" if last else None
        scores = score_model(ctx, resolve_model_uri(cfg, f"bank:{r['checkpoint']}"), full=last, grid_dir=grid)
        rounds.append({"round": k, "checkpoint": r["checkpoint"], "train_metrics": means.get(k, r["metrics"]),
                       "reference_accuracy": reference_accuracy(cfg, k), **scores})
    result = {
        "method": method, "seed": seed, "run_id": cfg.run_id, "config_hash": cfg.config_hash(),
        "config": {"train": cfg.train.model_dump(mode="json"), "bank_reference": cfg.reference_strategy},
        "train_seconds": round(train_s, 1), "eval_seconds": round(time.time() - start - train_s, 1),
        "rounds": rounds, "final": {key: rounds[-1][key] for key in ("test", "train", "test_all_per_image")},
        "step_metrics": [{"step": s, **{k: m[k] for k in (*STEP_METRICS, "round") if k in m}} for s, m in run_logger.metrics],
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


def score_base(ctx: Context) -> dict[str, Any]:
    from seppo_lib.models import resolve_model_dir

    cache = ctx.options.work / "results" / f"base-{ctx.base_cfg.model.pretrained.replace(':', '_')}-{ctx.eval_key()}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    start = time.time()
    folder = resolve_model_dir(ctx.base_cfg.model.pretrained, ctx.base_cfg.bank.cache_dir)
    scores = score_model(ctx, folder, full=True, grid_dir=ctx.options.work / "grids" / "base")
    result = {"method": BASE, "model": ctx.base_cfg.model.pretrained, "eval_seconds": round(time.time() - start, 1), **scores}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


# ---- the benchmark --------------------------------------------------------------------------


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """Run (or resume) every method x seed, then write results.json, table.md and the plots."""
    from seppo_lib.bench.report import (
        aggregate, budget_summary, budget_table, curve_subset, markdown_table, paired_summary, paired_table,
    )  # fmt: skip
    from seppo_lib.bench.plots import plot_accuracy_vs_round, plot_flip_rate, sample_grid

    start = time.time()
    ctx = build_context(options)
    options.out.mkdir(parents=True, exist_ok=True)
    base = score_base(ctx)
    jobs = [(m, s) for m in options.methods if m != BASE for s in options.seeds]
    runs = []
    for method, seed in Progress(jobs, desc="bench quality", unit="run"):
        logger.info("benchmark: %s seed %d", method, seed)
        runs.append(train_and_score(ctx, method, seed))
    methods = [m for m in options.methods if m != BASE]
    recorded = {**asdict(options), "out": str(options.out), "workdir": str(options.work)}
    results: dict[str, Any] = {
        "options": recorded,
        "preset": ctx.base_cfg.model_dump(mode="json"),
        "eval": {
            "test_prompts": [p.text for p in ctx.test_set.prompts],
            "train_prompts": [p.text for p in ctx.train_set.prompts],
            "samples_per_prompt": options.samples_per_prompt,
            "test_seeds": ctx.test_set.seeds,
            "train_seeds": ctx.train_set.seeds,
        },
        "dataset": ctx.dataset_stats,
        "base": base,
        "runs": runs,
        "summary": aggregate(base, runs, methods, BASE in options.methods, curve_subset=curve_subset(recorded)),
    }
    results["paired"], results["budgets"] = paired_summary(results), budget_summary(results)
    results["wall_seconds"] = round(time.time() - start, 1)
    table, paired = markdown_table(results["summary"], len(options.seeds)), paired_table(results["paired"])
    if results["budgets"]:
        paired += "\n\n" + budget_table(results["budgets"])
    (options.out / "results.json").write_text(json.dumps(results, indent=1))
    (options.out / "table.md").write_text(table + "\n")
    (options.out / "paired.md").write_text(paired + "\n")
    plot_accuracy_vs_round(results, options.out / "accuracy_vs_round.png")
    plot_flip_rate(results, options.out / "flip_rate_vs_round.png")
    grid_rows = [(BASE, ctx.options.work / "grids" / "base")] if BASE in options.methods else []
    grid_rows += [(m, ctx.options.work / "grids" / f"{m}-seed{options.seeds[0]}") for m in methods]
    columns = grid_indices(ctx.test_set.prompts, options.grid_prompts, video=ctx.video)
    sample_grid(grid_rows, [ctx.test_set.prompts[i].text for i in columns], options.out / "samples_grid.png")
    results["table"] = f"{table}\n\n{paired}"
    return results
