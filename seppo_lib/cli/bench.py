"""`seppo bench quality|tune|plots|speed`: method quality on the world, its tuning, its figures, and speed."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from seppo_lib.cli.common import add_output_arg

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
        tuned=not args.untuned,
        dataset=args.dataset,
        curve_prompts=args.curve_prompts,
    )
    start = time.time()
    results = run_benchmark(options)
    print(results["table"])
    print(f"\nwrote {options.out}/results.json, table.md, accuracy_vs_round.png, flip_rate_vs_round.png, samples_grid.png "
          f"({time.time() - start:.0f}s)")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    add_output_arg(p, "folder for tuning.json and tuning.md", required=True, metavar="DIR")
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
    add_output_arg(p, "folder for results.json, table.md and the PNGs", required=True, metavar="DIR")
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
    p.add_argument("--dataset", metavar="SOURCE",
                   help="training data of every method instead of the preset's: builtin:world-pickapic (Pick-a-Pic-like pairs of "
                   "base-model generations, generated once into <workdir>/cache; docs/world-pickapic.md) or any data.source")
    p.add_argument("--curve-prompts", type=_positive, metavar="N",
                   help="accuracy vs round: first sample of the first N test prompts in every round (default: every test prompt)")
    p.add_argument("--untuned", action="store_true",
                   help="keep the preset's train.lr / train.beta for every method instead of the tuned values of docs/results.md "
                   "(e.g. --config world measures the preset of `seppo run`)")
    p.add_argument("--quick", action="store_true", help="1 seed, base + sft + seppo, few prompts (about 3 min on 2 CPU cores)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_quality)
    _add_tune(bsub)
    _add_plots(bsub)
    _add_speed(bsub)
    _add_sampler(bsub)


def _plots(args: argparse.Namespace) -> int:
    from seppo_lib.config import ConfigError

    if args.speed:
        import json

        from seppo_lib.bench.speed_report import figures

        path = Path(args.speed)
        if not path.is_file():
            raise ConfigError(f"--speed {path}: no such file (a JSON written by seppo bench speed --out)")
        written = figures(json.loads(path.read_text()), Path(args.out) if args.out else path.parent)
        print("\n".join(f"wrote {p}" for p in written) if written else f"{path} has no scaling figures (run with --scaling)")
        return 0
    from seppo_lib.bench.plots import rebuild_plots

    folder = Path(args.out or ".")
    if not (folder / "results.json").is_file():
        raise ConfigError(f"{folder} has no results.json: give the --out folder of a finished `seppo bench quality`")
    for written in rebuild_plots(folder):
        print(f"wrote {written}")
    return 0


def _add_plots(bsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = bsub.add_parser(
        "plots", help="redraw a benchmark's figures from its JSON (no training)",
        description="Redraw accuracy_vs_round.png and flip_rate_vs_round.png of a finished `seppo bench quality` from "
        "the results.json in its folder (the summary is recomputed from the runs, as the table is; the sample grid needs "
        "the work folder's images and is left alone). With --speed, redraw the scaling figures (bank_size.png, "
        "shards.png, cache_memory.png) of a `seppo bench speed` JSON instead.",
        epilog="examples: seppo bench plots --out docs/results   |   seppo bench plots --speed docs/performance/cpu.json "
        "--out docs/performance",
    )
    add_output_arg(p, "the benchmark folder (quality: holds results.json, default .; --speed: where the PNGs go, default "
                   "the JSON's folder)", metavar="DIR")  # fmt: skip
    p.add_argument("--speed", metavar="JSON", help="a seppo bench speed JSON: redraw its scaling figures")
    p.set_defaults(func=_plots)


def _speed(args: argparse.Namespace) -> int:
    from seppo_lib.bench.speed import DEFAULT_ABLATIONS, QUICK_ABLATIONS, SpeedOptions, parse_ablations, run_speed
    from seppo_lib.bench.speed_models import DEFAULT_MODELS, QUICK_MODELS, parse_models
    from seppo_lib.bench.speed_report import figures, summary_lines, tables

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    quick = args.quick
    default_ablations = QUICK_ABLATIONS if quick else DEFAULT_ABLATIONS
    options = SpeedOptions(
        out=Path(args.out), workdir=Path(args.workdir), device=args.device, precision=args.precision,
        models=parse_models(args.models or ",".join(QUICK_MODELS if quick else DEFAULT_MODELS)), quick=quick,
        repeats=args.repeats or (2 if quick else 3),
        ablations=parse_ablations(args.ablations if args.ablations is not None else ",".join(default_ablations)),
        scaling=args.scaling, presets=args.presets, command="seppo " + shlex.join(sys.argv[1:]),
    )  # fmt: skip
    doc = run_speed(options)
    for name, table in tables(doc).items():
        print(f"\n{name}:\n{table}")
    written = figures(doc, options.out.parent) if options.scaling else []
    print("\n" + "\n".join(summary_lines(doc)))
    print(f"\nwrote {options.out}{''.join(f', {p}' for p in written)} ({doc['wall_seconds']:.0f}s)")
    return 0


def _add_speed(bsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from seppo_lib.bench.speed import ABLATIONS, DEFAULT_ABLATIONS, QUICK_ABLATIONS
    from seppo_lib.bench.speed_models import DEFAULT_MODELS, MODELS, QUICK_MODELS

    p = bsub.add_parser(
        "speed", help="the project's training step, sampler and whole round vs the public way, side by side",
        description="One process, the same work on both sides, interleaved (each side's rounds alternate, medians "
        "over --repeats rounds): (a) the SePPO training step as `seppo train` runs it vs a Diffusion-DPO-script step "
        "(fp32 master weights + autocast, eager, a separate reference UNet in the weight dtype, prompts and pixels "
        "encoded every step); (b) the reference sampler vs a diffusers pipeline call per batch (text encoding inside, "
        "VAE decode to pixels); (c) a whole round (sampling + updates + checkpoint, the reference drawn uniformly from "
        "the bank) vs that composition (the reference reloaded with from_pretrained every round). Prints pairs/s and "
        "images/s, achieved GFLOP/s (torch.utils.flop_counter) as a fraction of a large matmul measured in the same "
        "run and dtype, peak memory (RSS on CPU, max_memory_allocated on CUDA) and every ratio project / baseline; "
        "then each --ablations switch on vs the plain project (ablation rows, with torch.compile's compile counts). "
        "Models: " + "; ".join(f"{m.name}: {m.summary}" for m in MODELS.values()) + ". Writes every raw timing to the "
        "--out JSON (docs/performance.md is built from one).",
        epilog="examples: seppo bench speed --quick --out /tmp/speed.json   |   seppo bench speed --scaling --presets "
        "--out docs/performance/cpu.json   |   seppo bench speed --device cuda --precision bf16 --models sd15 "
        "--out cuda.json (scripts/gpu_bench.sh)",
    )
    add_output_arg(p, "the JSON file to write (with --scaling its PNGs go beside it)", required=True, metavar="JSON")
    p.add_argument("--workdir", default="seppo-runs/bench-speed",
                   help="scratch folder for models, banks and checkpoints (reused: the SD1.5 model is built once)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both sides run (default cpu)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="both sides' compute dtype: autocast for training, the sampler's dtype (default fp32)")
    p.add_argument("--models", help=f"comma-separated, from {', '.join(MODELS)} (default {','.join(DEFAULT_MODELS)}; "
                   f"--quick: {','.join(QUICK_MODELS)}), or none for a --scaling/--presets run only")  # fmt: skip
    p.add_argument("--repeats", type=int, help="timed rounds per side (default 3; --quick: 2)")
    p.add_argument("--ablations", help=f"comma-separated switches or none, from {', '.join(ABLATIONS)} "
                   f"(default {','.join(DEFAULT_ABLATIONS)}; --quick: {','.join(QUICK_ABLATIONS)})")  # fmt: skip
    p.add_argument("--scaling", action="store_true", help="also: round time vs bank size (an S3 bank on moto's server when moto is installed), "
                   "sampling shards (1, 2, 4 processes), data size, reference-cache memory")
    p.add_argument("--presets", action="store_true", help="also: seconds per round of the tiny and world presets")
    p.add_argument("--quick", action="store_true",
                   help="small rounds, world + tiny-vae, 2 repeats, 3 ablations (about 4 min on 2 CPU cores)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_speed)


def _sampler(args: argparse.Namespace) -> int:
    from seppo_lib.bench.sampler_quality import SamplerOptions, parse_candidates, run_sampler_quality, sampler_table

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    options = SamplerOptions(out=Path(args.out), cache_dir=Path(args.workdir), model=args.model, prompts=args.prompts,
                             samples=args.samples, tolerance=args.tolerance, candidates=parse_candidates(args.samplers))  # fmt: skip
    doc = run_sampler_quality(options)
    print(sampler_table(doc))
    print(f"\nwrote {options.out} ({doc['wall_seconds']:.0f}s)")
    return 0


def _add_sampler(bsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from seppo_lib.bench.sampler_quality import CANDIDATES, SamplerOptions

    default = ",".join(f"{n}:{s}:{e:g}" for n, s, e in CANDIDATES)
    p = bsub.add_parser(
        "sampler", help="reference-sample accuracy of faster samplers vs the world preset's, on the same prompts and seeds",
        description="Samples the world base model on training-split prompts (the prompts reference samples are "
        "drawn for) with each sampler, grades every image with the world's ground-truth scorer and compares each "
        "candidate with the first sampler: paired difference of the all-attributes-correct score with a bootstrap 95%% "
        "interval over prompts, wall time and speed-up. A candidate keeps quality when the interval contains 0 and its "
        "half-width is at most --tolerance.",
        epilog="example: seppo bench sampler --out docs/performance/sampler_quality.json",
    )
    add_output_arg(p, "the JSON file to write", required=True, metavar="JSON")
    p.add_argument("--workdir", default="seppo-runs/bench-sampler", help="model cache folder")
    p.add_argument("--model", default=SamplerOptions.model, help="model URI (default builtin:world-base)")
    p.add_argument("--prompts", type=int, default=SamplerOptions.prompts, help="training-split prompts, drawn uniformly (default 256)")
    p.add_argument("--samples-per-prompt", dest="samples", type=int, default=SamplerOptions.samples, help="samples per prompt")
    p.add_argument("--samplers", default=default, help=f"SCHEDULER:STEPS[:ETA], comparator first (default {default})")
    p.add_argument("--tolerance", type=float, default=SamplerOptions.tolerance,
                   help="largest CI half-width that counts as 'unchanged' (default 0.05)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_sampler)
