"""`seppo prepare | sample | train`: the library steps, in-process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seppo_lib.cli.common import add_output_arg
from seppo_lib.config import SeppoConfig, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", default=None,
        help="preset name (pipelines/configs/<name>.yaml) or YAML file; default: the built-in defaults",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="a.b=value",
        help="config overrides, e.g. train.beta=2500 train.method=spin (values parsed as YAML)",
    )


def config_from(args: argparse.Namespace) -> SeppoConfig:
    return load_config(args.config, args.overrides)


def _prepare(args: argparse.Namespace) -> int:
    from seppo_lib.steps import prepare_data
    from seppo_lib.steps.common import run_dir

    cfg = config_from(args)
    out = Path(args.out) if args.out else run_dir(cfg) / "data"
    meta = prepare_data.run(cfg, out)
    print(f"prepared {meta['rows']} rows -> {out}  ({meta['report']['dropped'] or 'no bad rows'})")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from seppo_lib.orchestrate import round_dir
    from seppo_lib.steps import sample_reference
    from seppo_lib.steps.common import run_dir

    cfg = config_from(args)
    out = Path(args.out) if args.out else round_dir(cfg, args.round) / f"refs-{args.shard:03d}"
    meta = sample_reference.run(cfg, args.data or run_dir(cfg) / "data", args.round, out, args.shard, args.n_shards)
    print(json.dumps(meta))
    return 0


def _train(args: argparse.Namespace) -> int:
    from seppo_lib.orchestrate import run_rounds

    cfg = config_from(args)
    summary = run_rounds(cfg, last=args.rounds)
    if summary.already_trained:
        print(summary.already_trained)
        print(f"run {summary.run_id}: bank {summary.bank_uri} ({', '.join(r['checkpoint'] for r in summary.rounds)})")
        return 0
    for r in summary.rounds:
        m = r["metrics"]
        status = "already committed" if r["skipped"] else f"loss {m.get('loss', float('nan')):.4f}"
        print(f"round {r['round']}: {r['checkpoint']} ({status})")
    print(f"run {summary.run_id}: bank {summary.bank_uri}, data {summary.data_dir}")
    return 0


def _train_round(args: argparse.Namespace) -> int:
    from seppo_lib.config import SeppoConfig
    from seppo_lib.steps import train_round

    cfg = SeppoConfig.from_json(args.config_json) if args.config_json else config_from(args)
    result = train_round.run(cfg, args.data, args.round, args.refs or None)
    print(json.dumps(result))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("prepare", help="validate the data source and write latent shards; commit θ_0",
                       description="Validate every row of data.source, count bad rows by reason, encode winners "
                       "(and losers for dpo) to latent + text-embedding shards, and commit θ_0 to the bank.")
    add_config_args(p)
    add_output_arg(p, "dataset directory (default <workdir>/<run_id>/data)", metavar="DIR")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("sample", help="generate one round's reference samples (one shard)",
                       description="Pick the round's reference checkpoint(s) from the bank (seeded) and sample "
                       "reference latents for this shard of the round's slots.")
    add_config_args(p)
    p.add_argument("--round", type=int, required=True, help="round k (1-based)")
    p.add_argument("--shard", type=int, default=0, help="this worker's shard index")
    p.add_argument("--n-shards", type=int, default=1, help="number of sampling workers")
    p.add_argument("--data", help="prepared dataset directory")
    add_output_arg(p, "output directory for the reference latents "
                   "(default <workdir>/<run_id>/rounds/round-<k>/refs-<shard>)", metavar="DIR")  # fmt: skip
    p.set_defaults(func=_sample)

    p = sub.add_parser("train", help="run every round in-process (prepare, sample, train), resuming committed rounds",
                       description="Run the whole SePPO training in this process: prepare data if needed, then for "
                       "each round sample reference latents and train U updates, committing θ_k to the bank. "
                       "Committed rounds are skipped, so rerunning the same inputs resumes (the run id is the identity of the "
                       "training fields, the data version and the base model; `seppo config show` prints it), and a run "
                       "whose rounds are all committed prints 'already trained: <run id> (...)'. Each step logs to MLflow "
                       "(tracking.mlflow_uri, else MLFLOW_TRACKING_URI, else sqlite under the workdir; "
                       "tracking.enabled=false turns it off).",
                       epilog="example: seppo train --config tiny train.method=spin")
    add_config_args(p)
    p.add_argument("--rounds", type=int, default=None, help="stop after this round (default: train.n_rounds)")
    p.set_defaults(func=_train)

    p = sub.add_parser("train-round", help="train one round (for accelerate launch / PyTorchJob workers)",
                       description="Train round K on a prepared dataset and its reference samples, then commit θ_K. "
                       "Run it under `accelerate launch` (or a PyTorchJob) for multi-GPU / multi-node training; "
                       "train.num_processes must equal the number of processes.",
                       epilog="example: accelerate launch -m seppo_lib.cli train-round --config-json \"$CFG\" --round 2 "
                       "--data /data/prepared --refs /data/round-2/refs-000 /data/round-2/refs-001")
    add_config_args(p)
    p.add_argument("--config-json", help="the resolved config as one JSON string (as pipeline components receive it)")
    p.add_argument("--round", type=int, required=True, help="round k (1-based)")
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--refs", nargs="*", help="reference-sample directories of this round (spin/seppo)")
    p.set_defaults(func=_train_round)
