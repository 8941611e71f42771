"""`seppo run` (the whole pipeline on this machine) and `seppo pipeline compile | submit | schedule`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from seppo_lib.cli.train import add_config_args, config_from
from seppo_lib.config import load_config


#: The embedded default of `seppo run`: the built-in world from the shipped base model.
DEFAULT_RUN_PRESET = "world"


def _run(args: argparse.Namespace) -> int:
    from seppo_lib.bank import CheckpointBank
    from seppo_lib.pipeline_runner import run_local
    from seppo_lib.steps import validate_config

    cfg = load_config(args.config or DEFAULT_RUN_PRESET, args.overrides)
    validate_config.run(cfg.to_json())  # a bad config fails here, in a second, before kfp starts anything
    print(f"seppo run: config {cfg.name} ({cfg.config_hash()[:10]}), run {cfg.run_id}, {cfg.train.n_rounds} round(s) "
          f"through kfp.local; log {Path(cfg.workdir) / cfg.run_id / 'kfp-local.log'}")  # fmt: skip
    start = time.monotonic()
    res = run_local(cfg, verbose=args.verbose)
    bank = CheckpointBank.open(cfg.bank.uri, cfg.run_id, cfg.bank.cache_dir, cfg.storage)
    minutes, seconds = divmod(int(time.monotonic() - start), 60)
    print(f"\nfinished in {minutes}m{seconds:02d}s")
    print(f"model:    bank:{res.checkpoint} (pointer {res.model_pointer})")
    if res.exported_model:
        print(f"          exported model folder: {res.exported_model}")
    grid = "grid.gif" if (res.report_dir / "grid.gif").is_file() else "grid.png"
    print(f"report:   {res.report_dir} (metrics.json, per_prompt.csv, {grid}, hist_*.png)")
    if res.registration:
        reg = res.registration
        print(f"registry: gate passed -> {reg.get('model_name', '?')} v{reg.get('version', '?')} ({reg.get('decision', '?')})")
    else:
        print("registry: gate failed -> not registered (the champion is unchanged)")
    print(f"bank:     {bank.uri} ({', '.join(bank.ids())})")
    if cfg.tracking.enabled:
        from seppo_lib.tracking.mlflow_logger import resolve_tracking_uri

        print(f"mlflow:   {resolve_tracking_uri(cfg)} (experiment {cfg.tracking.experiment})")
    print(f"log:      {res.log_file}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from seppo_lib.pipeline_runner import compile_package

    cfg = config_from(args)
    path = compile_package(cfg, args.out, args.image)
    print(f"compiled {cfg.name} ({cfg.train.n_rounds} round(s), {cfg.sampling.n_shards} shard(s)) -> {path}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from seppo_lib.pipeline_runner import submit

    cfg = config_from(args)
    done = submit(cfg, host=args.host, experiment=args.experiment, namespace=args.namespace,
                  service_account=args.service_account, image=args.image,
                  enable_caching=False if args.no_cache else None, package=args.out)  # fmt: skip
    print(f"submitted run {done.run_name} (KFP run id {done.run_id}) from {done.package}")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from seppo_lib.pipeline_runner import schedule

    cfg = config_from(args)
    job_id, name, path = schedule(cfg, args.cron, host=args.host, experiment=args.experiment, job_name=args.name,
                                  namespace=args.namespace, service_account=args.service_account, image=args.image,
                                  start_time=args.start_time, package=args.out)  # fmt: skip
    print(f"recurring run {name} (id {job_id}): cron '{args.cron}', one run at a time, no catch-up; package {path}")
    return 0


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="KFP API endpoint (default: env KFP_HOST), e.g. http://localhost:8888")
    p.add_argument("--experiment", default="seppo", help="KFP experiment (created if missing; default seppo)")
    p.add_argument("--namespace", default=None, help="KFP namespace / profile (multi-user Kubeflow)")
    p.add_argument("--service-account", default="seppo-pipeline-runner",
                   help="service account of the run's pods (default seppo-pipeline-runner, k8s/base/rbac.yaml; '' = KFP's)")
    p.add_argument("--image", default=None, help="component image (default ghcr.io/seppo-ml/seppo:<version>)")
    p.add_argument("--out", "-o", default=None, help="keep the compiled YAML here (default: a temporary file)")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run", help="run the whole pipeline on this machine (kfp.local), then say where the model and report are",
        description="Run validate_config -> prepare_data -> rounds of sample_reference/train_round -> evaluate -> "
        "register through kfp.local.SubprocessRunner on this machine, on embedded defaults: the built-in world "
        "data, local storage under ./seppo-runs/ and a local MLflow sqlite db. Prints where the model (bank "
        "checkpoint and exported folder), the report and the bank are.",
        epilog="example: seppo run --config tiny train.n_rounds=2 sampling.n_shards=2",
    )
    p.add_argument("--config", "-c", default=None,
                   help=f"preset name or YAML file (default: {DEFAULT_RUN_PRESET}, the built-in world from builtin:world-base)")
    p.add_argument("overrides", nargs="*", metavar="a.b=value", help="config overrides, e.g. train.n_rounds=2 (values parsed as YAML)")
    p.set_defaults(func=_run)

    pipe = sub.add_parser("pipeline", help="compile, submit or schedule the Kubeflow pipeline",
                          description="Compile the pipeline for a config, submit it to a KFP cluster, or schedule it.")
    cmds = pipe.add_subparsers(dest="pipeline_command", metavar="COMMAND")
    pipe.set_defaults(func=lambda _args: pipe.print_help() or 2)

    p = cmds.add_parser("compile", help="write the KFP IR YAML for a config",
                        description="Unroll the config's rounds and shards into a KFP v2 pipeline and write its IR YAML "
                        "(default name seppo-<version>-<config hash[:10]>.yaml).")
    add_config_args(p)
    p.add_argument("--out", "-o", default=None, help="output YAML path")
    p.add_argument("--image", default=None, help="component image (default ghcr.io/seppo-ml/seppo:<version>)")
    p.set_defaults(func=_compile)

    p = cmds.add_parser("submit", help="compile and start one run on a KFP cluster",
                        description="Compile and submit one run; the run name carries the git SHA and the config hash "
                        "(seppo-<name>-<sha>-<hash[:10]>).",
                        epilog="example: KFP_HOST=http://localhost:8888 seppo pipeline submit --config sd15-pickapic "
                        "data.dvc_rev=v2")  # fmt: skip
    add_config_args(p)
    _cluster_args(p)
    p.add_argument("--no-cache", action="store_true", help="disable KFP caching for every task of this run")
    p.set_defaults(func=_submit)

    p = cmds.add_parser(
        "schedule", help="create a KFP recurring run (six-field cron)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Create a KFP recurring run of the compiled pipeline: at most one run at a time "
        "(max_concurrency=1) and no backfill after downtime (no_catchup).\n\n"
        "KFP cron has SIX fields, seconds first:\n"
        "  SECONDS MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK\n"
        "  '0 0 3 * * 1'  = every Monday at 03:00:00\n"
        "  '0 30 2 * * *' = every day at 02:30:00\n"
        "A five-field crontab line such as '0 3 * * 1' (the k8s CronJob's) needs a leading seconds field.",
        epilog="example: seppo pipeline schedule --config sd15-pickapic --cron '0 0 3 * * 1'",
    )
    add_config_args(p)
    _cluster_args(p)
    p.add_argument("--cron", default="0 0 3 * * 1", help="six-field cron, seconds first (default '0 0 3 * * 1' = Mondays 03:00)")
    p.add_argument("--name", default=None, help="recurring run name (default seppo-<config name>-<hash[:10]>)")
    p.add_argument("--start-time", default=None, help="RFC3339 time of the first possible run (default: now)")
    p.set_defaults(func=_schedule)
