"""`seppo run` (the whole pipeline on this machine) and `seppo pipeline compile | submit | schedule`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from seppo_lib.cli.common import add_output_arg
from seppo_lib.cli.train import add_config_args, config_from
from seppo_lib.config import SeppoConfig, load_config


#: The embedded default of `seppo run`: the built-in world from the shipped base model.
DEFAULT_RUN_PRESET = "world"


def _run(args: argparse.Namespace) -> int:
    from seppo_lib.bank import CheckpointBank
    from seppo_lib.identity import already_trained_line, resolve
    from seppo_lib.orchestrate import committed_rounds
    from seppo_lib.pipeline_runner import run_local
    from seppo_lib.steps import validate_config
    from seppo_lib.steps.common import run_dir

    cfg = load_config(args.config or DEFAULT_RUN_PRESET, args.overrides)
    validate_config.run(cfg.to_json())  # a bad config fails here, in a second, before kfp starts anything
    cfg = resolve(cfg)  # the run id: seppo_lib.identity
    header = (f"seppo run: config {cfg.name} ({cfg.config_hash()[:10]}), run {cfg.run_id}, {cfg.train.n_rounds} round(s) "
              f"through kfp.local; log {Path(cfg.workdir) / cfg.run_id / 'kfp-local.log'}")  # fmt: skip
    print(header)
    if committed_rounds(cfg, 1, cfg.train.n_rounds):  # the rounds are skipped; evaluate and register still run
        print(f"{already_trained_line(cfg)}; evaluating it")
    start = time.monotonic()
    res = run_local(cfg, verbose=args.verbose)
    bank = CheckpointBank.open(cfg.bank.uri, cfg.run_id, cfg.bank.cache_dir, cfg.storage)
    minutes, seconds = divmod(int(time.monotonic() - start), 60)
    lines = [f"\nfinished in {minutes}m{seconds:02d}s", f"model:    bank:{res.checkpoint} (pointer {res.model_pointer})"]
    if res.exported_model:
        lines.append(f"          exported model folder: {res.exported_model}")
    grid = "grid.gif" if (res.report_dir / "grid.gif").is_file() else "grid.png"
    lines.append(f"report:   {res.report_md} and {res.report_html.name} (config, lineage, training curves, evaluation, gate, samples)")
    lines.append(f"          evaluation files: {res.report_dir} (metrics.json, per_prompt.csv, {grid}, accuracy_/hist_*.png)")
    lines.append(f"registry: {registry_summary(res.registration, res.gate_passes)}")
    lines.append(f"bank:     {bank.uri} ({', '.join(bank.ids())})")
    if cfg.tracking.enabled:
        from seppo_lib.tracking.mlflow_logger import resolve_tracking_uri

        lines.append(f"mlflow:   {resolve_tracking_uri(cfg)} (experiment {cfg.tracking.experiment})")
    lines.append(f"log:      {res.log_file}")
    summary = run_dir(cfg).resolve() / "summary.txt"
    lines.append(f"summary:  {summary} (this summary)")
    print("\n".join(lines))
    summary.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return 0


def registry_summary(registration: dict[str, Any] | None, gate_passes: bool) -> str:
    """What register did, e.g. 'gate failed -> seppo-world v2 (challenger; champion unchanged: v1)'."""
    if registration is None:  # tracking.enabled=false: the pipeline has no register step
        return f"gate {'passed' if gate_passes else 'failed'} -> not registered (tracking.enabled=false; the registry is MLflow's)"
    reg, previous = registration, registration.get("previous_champion")
    where = f"{reg['model_name']} v{reg['version']}"
    if reg.get("already_registered"):  # a rerun that trained nothing new: its checkpoint is a version already
        champion = f"v{reg['champion']}" if reg.get("champion") else "none"
        return f"already registered -> {where} ({', '.join(reg.get('aliases') or []) or 'no alias'}; champion: {champion})"
    if reg["decision"] == "promoted":
        return f"gate passed -> {where} (champion; {f'was v{previous}' if previous else 'the first champion'})"
    return f"gate failed -> {where} (challenger; {f'champion unchanged: v{previous}' if previous else 'no champion yet'})"


def _compile(args: argparse.Namespace) -> int:
    from seppo_lib.pipeline_runner import check_for_cluster, compile_package

    cfg = config_from(args)
    # validate_config's checks before anything is written; the cluster's storage rules (remote bank, MLflow
    # server) are submit's and schedule's: a package may be compiled here and given its config_json later
    check_for_cluster(cfg, shared_storage=False)
    path = compile_package(cfg, args.out, args.image)
    print(f"compiled {cfg.name} ({cfg.train.n_rounds} round(s), {cfg.sampling.n_shards} shard(s)) -> {path}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from seppo_lib.pipeline_runner import submit

    cfg = config_from(args)
    done = submit(cfg, host=args.host, experiment=args.experiment, namespace=args.namespace,
                  service_account=args.service_account, image=args.image,
                  enable_caching=False if args.no_cache else None, package=args.out,
                  data_rev=args.data_rev or "", base_model=args.base_model or "")  # fmt: skip
    v = done.version
    print(f"submitted run {done.run_name} (KFP run id {done.run_id}) of pipeline {v.pipeline_name} version {v.version_name} "
          f"({'uploaded from' if v.uploaded else 'existing; same package as'} {done.package})")  # fmt: skip
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from seppo_lib.pipeline_runner import schedule

    cfg = config_from(args)
    data_rev, base_model = schedule_parameters(cfg, args.data_rev, args.base_model)
    job = schedule(cfg, args.cron, host=args.host, experiment=args.experiment, job_name=args.name,
                   namespace=args.namespace, service_account=args.service_account, image=args.image,
                   start_time=args.start_time, package=args.out, data_rev=data_rev, base_model=base_model)  # fmt: skip
    print(f"every run: data {f'data.dvc_rev={data_rev} (its latest commit)' if data_rev else cfg.data.source}, "
          f"base model {base_model or cfg.model.pretrained}")  # fmt: skip
    if base_model.startswith("models:/") and not cfg.model.fallback:
        print(f"note: model.fallback is unset, so a run fails while {base_model} does not exist "
              f"(set model.fallback={cfg.model.pretrained} to start the first run from the base model)")  # fmt: skip
    print(f"recurring run {job.name} (id {job.recurring_run_id}): cron '{args.cron}', one run at a time, no catch-up; "
          f"pipeline {job.version.pipeline_name} version {job.version.version_name} (package {job.package})")  # fmt: skip
    return 0


def schedule_parameters(cfg: SeppoConfig, data_rev: str | None, base_model: str | None) -> tuple[str, str]:
    """A recurring run's data_rev / base_model: given, else the branch `main` for DVC data and the registry's
    champion, so each run picks up the latest data and starts from (and is gated against) the current champion."""
    from seppo_lib.steps.register import model_name

    return (data_rev if data_rev is not None else ("main" if cfg.data.dvc_repo else ""),
            base_model if base_model is not None else f"models:/{model_name(cfg)}@champion")  # fmt: skip


def _parameter_args(p: argparse.ArgumentParser, scheduled: bool) -> None:
    """--data-rev / --base-model: the pipeline parameters data_rev and base_model, resolved inside each run."""
    rev_default = "main when data.dvc_repo is set: each run reads the branch's latest commit" if scheduled else "data.dvc_rev"
    p.add_argument("--data-rev", default=None, metavar="REV",
                   help=f"git revision (branch, tag or SHA) of data.dvc_repo to read data.source at; resolved to its "
                   f"commit SHA inside the run (default {rev_default})")  # fmt: skip
    base_default = ("models:/<registry.model_name>@champion: each run starts from the current champion (set "
                    "model.fallback for the first run)") if scheduled else "model.pretrained"  # fmt: skip
    p.add_argument("--base-model", default=None, metavar="URI",
                   help=f"base model: models:/NAME@ALIAS, models:/NAME/VERSION, a folder, s3:// or builtin:; resolved to "
                   f"the exact version inside the run (default {base_default})")  # fmt: skip


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="KFP API endpoint (default: env KFP_HOST), e.g. http://localhost:8888")
    p.add_argument("--experiment", default="seppo", help="KFP experiment (created if missing; default seppo)")
    p.add_argument("--namespace", default=None, help="KFP namespace / profile (multi-user Kubeflow)")
    p.add_argument("--service-account", default="seppo-pipeline-runner",
                   help="service account of the run's pods (default seppo-pipeline-runner, k8s/base/rbac.yaml; '' = KFP's)")
    p.add_argument("--image", default=None, help="component image (default ghcr.io/seppo-ml/seppo:<version>)")
    add_output_arg(p, "keep the compiled YAML here (default: a temporary file)", metavar="FILE")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run", help="run the whole pipeline on this machine (kfp.local), then say where the model and report are",
        description="Run validate_config -> prepare_data -> rounds of sample_reference/train_round -> evaluate -> "
        "register through kfp.local.SubprocessRunner on this machine, on embedded defaults: the built-in world "
        "data, local storage under ./seppo-runs/ and a local MLflow sqlite db. Prints where the model (bank "
        "checkpoint and exported folder), the run report (<workdir>/<run id>/report.md and report.html) and the "
        "bank are, and saves that summary as <workdir>/<run id>/summary.txt.",
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
                        description="Check the config with validate_config's cluster rules (an s3:// bank, an MLflow "
                        "server: tracking.mlflow_uri or MLFLOW_TRACKING_URI), then unroll its rounds and shards into a "
                        "KFP v2 pipeline and write its IR YAML (default name seppo-<version>-<config hash[:10]>.yaml).")
    add_config_args(p)
    add_output_arg(p, "output YAML path (default seppo-<version>-<config hash[:10]>.yaml here)", metavar="FILE")
    p.add_argument("--image", default=None, help="component image (default ghcr.io/seppo-ml/seppo:<version>)")
    p.set_defaults(func=_compile)

    p = cmds.add_parser("submit", help="compile and start one run on a KFP cluster",
                        description="Check the config with the cluster's rules (as `compile`), compile, upload it as the "
                        "pipeline version <package version>-<config hash[:10]>-<git sha[:7]> of the KFP pipeline "
                        "seppo-<config name> (reused when it exists with the same package) and start one run of that "
                        "version; the run name carries the git SHA and the config hash (seppo-<name>-<sha>-<hash[:10]>).",
                        epilog="example: KFP_HOST=http://localhost:8888 MLFLOW_TRACKING_URI=http://mlflow.seppo.svc:5000 "
                        "seppo pipeline submit --config sd15-pickapic data.dvc_repo=https://github.com/acme/seppo-data "
                        "data.source=pickapic_v2/train data.dvc_rev=v2")  # fmt: skip
    add_config_args(p)
    _cluster_args(p)
    p.add_argument("--no-cache", action="store_true", help="disable KFP caching for every task of this run")
    _parameter_args(p, scheduled=False)
    p.set_defaults(func=_submit)

    p = cmds.add_parser(
        "schedule", help="create a KFP recurring run (six-field cron)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check the config with the cluster's rules (as `compile`), upload or reuse its pipeline version "
        "(as `submit`) and create a KFP recurring run of that version: at most one run at a time "
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
    _parameter_args(p, scheduled=True)
    p.set_defaults(func=_schedule)
