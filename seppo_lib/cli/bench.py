"""`seppo bench quality`: compare SFT, Diffusion-DPO, SPIN-Diffusion and SePPO variants on the world."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

QUICK = {"seeds": "0", "methods": "base,sft,seppo-sign-uniform", "prompts": 12, "train_prompts": 8, "samples": 2}


def _seeds(text: str) -> tuple[int, ...]:
    from seppo_lib.config import ConfigError

    try:
        seeds = tuple(dict.fromkeys(int(s) for s in text.split(",") if s.strip()))
    except ValueError:
        raise ConfigError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds {text!r} must name at least one non-negative seed")
    return seeds


def _quality(args: argparse.Namespace) -> int:
    from seppo_lib.bench.methods import parse_methods
    from seppo_lib.bench.quality import BenchOptions, run_benchmark

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pick = {k: getattr(args, k) if getattr(args, k) is not None else (QUICK[k] if args.quick else DEFAULTS[k]) for k in QUICK}
    options = BenchOptions(
        out=Path(args.out),
        workdir=Path(args.workdir) if args.workdir else None,
        config=args.config,
        methods=tuple(parse_methods(pick["methods"])),
        seeds=_seeds(pick["seeds"]),
        prompts=pick["prompts"],
        train_prompts=pick["train_prompts"],
        samples_per_prompt=pick["samples"],
        rounds=args.rounds,
        eval_seed=args.eval_seed,
        overrides=tuple(args.set or ()),
    )
    start = time.time()
    results = run_benchmark(options)
    print(results["table"])
    print(f"\nwrote {options.out}/results.json, table.md, accuracy_vs_round.png, flip_rate_vs_round.png, samples_grid.png "
          f"({time.time() - start:.0f}s)")
    return 0


def _floats(text: str, flag: str) -> tuple[float, ...]:
    from seppo_lib.config import ConfigError

    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r} must be comma-separated numbers, e.g. 3e-5,1e-4") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{flag} {text!r} must name at least one positive value")
    return values


def _tune(args: argparse.Namespace) -> int:
    from seppo_lib.bench.methods import METHODS
    from seppo_lib.bench.tune import TuneOptions, run_tuning
    from seppo_lib.config import ConfigError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown or empty {', '.join(unknown)}; use trained methods from {', '.join(METHODS)}")
    options = TuneOptions(
        out=Path(args.out), workdir=Path(args.workdir) if args.workdir else None, methods=methods, seed=args.seed,
        prompts=args.prompts, train_prompts=args.train_prompts, samples_per_prompt=args.samples, eval_seed=args.eval_seed,
        lrs=_floats(args.lrs, "--lrs"), betas=_floats(args.betas, "--betas"), overrides=tuple(args.set or ()),
    )
    doc = run_tuning(options)
    print((options.out / "tuning.md").read_text())
    for method, point in doc["chosen"].items():
        print(f"chosen {method}: " + " ".join(f"train.{k}={v:g}" for k, v in point.items()))
    print(f"\nwrote {options.out}/tuning.json, tuning.md ({doc['wall_seconds']:.0f}s)")
    return 0


def _add_tune(bsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from seppo_lib.bench.tune import BETAS, LRS, TUNE_METHODS

    p = bsub.add_parser(
        "tune", help="the LR / beta search behind the benchmark's tuned values (same grid for every method)",
        description="Train each method once (one seed) at every LR, and the methods with a beta at every (LR, beta), with "
        "the bench-quality budget; score like the benchmark but on a different draw of held-out prompts and sample noise "
        "(--eval-seed 99 vs 1234); pick the highest held-out accuracy per method. Writes tuning.json and tuning.md. "
        "Runs are cached in --workdir: several processes with disjoint --methods can share it, and a last call with "
        "every method collects the table.",
        epilog="example: seppo bench tune --out docs/results/tuning --workdir /tmp/tune --methods sft,dpo",
    )
    p.add_argument("--out", required=True, help="folder for tuning.json and tuning.md")
    p.add_argument("--workdir", help="scratch folder for runs and caches (default <out>/work)")
    p.add_argument("--methods", default=",".join(TUNE_METHODS), help=f"methods to tune (default {','.join(TUNE_METHODS)})")
    p.add_argument("--lrs", default=",".join(f"{v:g}" for v in LRS), help="learning rates searched")
    p.add_argument("--betas", default=",".join(f"{v:g}" for v in BETAS), help="betas searched (methods with a beta)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every point")
    p.add_argument("--prompts", type=int, default=32, help="held-out prompts, half count / half relation")
    p.add_argument("--train-prompts", type=int, default=16, help="training-split prompts")
    p.add_argument("--samples-per-prompt", dest="samples", type=int, default=4, help="samples per prompt")
    p.add_argument("--eval-seed", type=int, default=99, help="seed of the tuning prompts and noise (the table uses 1234)")
    p.add_argument("--set", action="append", metavar="a.b=value", help="config override applied to every point")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_tune)


DEFAULTS = {"seeds": "0,1,2", "methods": "all", "prompts": 32, "train_prompts": 16, "samples": 4}


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from seppo_lib.bench.methods import ALL_METHODS

    bench = sub.add_parser("bench", help="benchmarks on the built-in world",
                           description="Benchmarks that print figures (never timed unit tests).")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    bench.set_defaults(func=lambda _args: (bench.print_help(), 2)[1])
    p = bsub.add_parser(
        "quality", help="SFT vs DPO vs SPIN vs SePPO variants: held-out accuracy with 95%% CIs over seeds",
        description="Train every method from builtin:world-base with the same budget (preset bench-quality: rounds, "
        "updates, batch, LR schedule, sampler) for each seed, sample every model on the same held-out prompts (balanced "
        "count/relation) with the same sample seeds, grade the images with the world's ground-truth scorer and write "
        "results.json, table.md, accuracy/flip-rate-vs-round plots and a sample grid to --out. Methods: "
        + ", ".join(ALL_METHODS) + ". Finished runs are cached in --workdir, so rerunning resumes. With --config "
        "bench-video the same benchmark runs on the video world from builtin:world-video-base (distinct held-out motion "
        "prompts, graded by the motion scorer: colour, shape, count, direction).",
        epilog="examples: seppo bench quality --out docs/results --workdir /tmp/bench   |   "
        "seppo bench quality --quick --out /tmp/bench-quick   |   "
        "seppo bench quality --config bench-video --methods base,sft,seppo-sign-uniform --samples-per-prompt 2 "
        "--out docs/results/video",
    )
    p.add_argument("--out", required=True, help="folder for results.json, table.md and the PNGs")
    p.add_argument("--workdir", help="scratch folder for runs, banks and caches (default <out>/work)")
    p.add_argument("--config", "-c", default="bench-quality",
                   help="benchmark preset or YAML file (default bench-quality; bench-video for the video world)")
    p.add_argument("--methods", help=f"comma-separated methods or 'all' (default all; --quick: {QUICK['methods']})")
    p.add_argument("--seeds", help="comma-separated training seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--prompts", type=int, help="held-out test prompts, half count / half relation in the image world (default 32; --quick: 12)")
    p.add_argument("--train-prompts", type=int, help="training-split prompts for the generalization gap (default 16; --quick: 8)")
    p.add_argument("--samples-per-prompt", dest="samples", type=int, help="samples per prompt, fixed seeds (default 4; --quick: 2)")
    p.add_argument("--rounds", type=int, help="override train.n_rounds of the preset (same for every method)")
    p.add_argument("--eval-seed", type=int, default=1234, help="seed of the evaluation prompts and sample noise")
    p.add_argument("--set", action="append", metavar="a.b=value", help="config override applied to every method (repeatable)")
    p.add_argument("--quick", action="store_true", help="1 seed, base + sft + seppo, few prompts (about 3 min on 2 CPU cores)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_quality)
    _add_tune(bsub)
