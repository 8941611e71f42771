"""`seppo bank ls|show|gc`: inspect and garbage-collect a checkpoint bank."""

from __future__ import annotations

import argparse
import os

from seppo_lib.cli.common import table
from seppo_lib.errors import SeppoError

URI_HELP = (
    "bank root: local path, file:// or s3://bucket/prefix "
    "(S3 endpoint from AWS_ENDPOINT_URL, credentials from the environment)"
)


def _ls(args: argparse.Namespace) -> int:
    from seppo_lib.bank_admin import human_bytes, list_runs

    runs = list_runs(args.uri)
    if not runs:
        print(f"no runs under {args.uri}")
        return 0
    rows = [
        [r.run_id, str(r.entries) if r.has_manifest else "0 (no manifest)", str(r.rounds), r.latest or "-",
         str(r.files), human_bytes(r.bytes)]
        for r in runs
    ]  # fmt: skip
    print(table(rows, ["RUN_ID", "ENTRIES", "ROUNDS", "LATEST", "FILES", "SIZE"]))
    return 0


def _show(args: argparse.Namespace) -> int:
    from seppo_lib.bank_admin import human_bytes, show_run

    entries, leftovers = show_run(args.uri, args.run_id)
    rows = [[e.id, str(e.round), str(e.step), e.parent or "-", str(e.files), str(e.bytes)] for e in entries]
    print(table(rows, ["ID", "ROUND", "STEP", "PARENT", "FILES", "BYTES"]))
    total = sum(e.bytes for e in entries)
    print(f"{len(entries)} committed checkpoint(s), {human_bytes(total)}")
    if leftovers:
        print(f"{len(leftovers)} uncommitted file(s), {human_bytes(sum(leftovers.values()))} "
              f"(crashed uploads; `seppo bank gc {args.uri} {args.run_id}` deletes them)")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from seppo_lib.bank_admin import gc, human_bytes, registered_checkpoints

    if args.keep_last is not None and not (args.tracking_uri and args.model_name):
        raise SeppoError(
            "--keep-last removes committed checkpoints, so gc must know which ones registered models point to: "
            "pass --tracking-uri (or set MLFLOW_TRACKING_URI) and --model-name NAME (repeat for every model of this bank)"
        )
    if args.model_name and not args.tracking_uri:
        raise SeppoError("--model-name needs the registry: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    if args.model_name:
        from seppo_lib.tracking.mlflow_env import require_existing_db

        require_existing_db(args.tracking_uri)
    registered = registered_checkpoints(args.run_id, args.model_name, args.tracking_uri) if args.model_name else {}
    plan = gc(args.uri, args.run_id, keep_last=args.keep_last, dry_run=args.dry_run, force=args.force,
              registered=registered)  # fmt: skip
    verb = "would delete" if args.dry_run else "deleted"
    print(f"bank run {plan.uri}")
    for key, size in plan.leftovers.items():
        print(f"  {verb} uncommitted {key} ({human_bytes(size)})")
    for e in plan.remove:
        print(f"  {verb} committed {e.id} (round {e.round}, step {e.step}, {e.files} files, {human_bytes(e.bytes)}):")
    for key, size in plan.remove_keys.items():
        print(f"    {verb} {key} ({human_bytes(size)})")
    for ckpt, why in plan.keep.items():
        print(f"  kept {ckpt}: {why}")
    for key in plan.ignored:
        print(f"  left alone {key} (not a checkpoint file)")
    freed = "would free" if args.dry_run else "freed"
    print(f"{len(plan.leftovers)} uncommitted file(s) and {len(plan.remove)} checkpoint(s) ({len(plan.remove_keys)} file(s)) "
          f"{verb}; {freed} {human_bytes(plan.bytes_freed)} ({plan.bytes_freed} bytes)"
          + (" -- dry run, nothing deleted" if args.dry_run else ""))
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bank = subparsers.add_parser(
        "bank", help="list, inspect and garbage-collect checkpoint banks",
        description="A bank root holds one folder per run: <root>/<run_id>/manifest.json lists the committed "
        "checkpoints (θ_0 = 'initial', then one per round); files the manifest does not list are uploads that "
        "never committed.",
    )  # fmt: skip
    sub = bank.add_subparsers(dest="bank_command", metavar="ACTION", required=True)

    p = sub.add_parser("ls", help="runs under a bank root with their committed checkpoint counts",
                       description="List every run under the bank root: committed entries, highest round, latest "
                       "checkpoint, and the files / bytes under the run (committed or not).")
    p.add_argument("uri", help=URI_HELP)
    p.set_defaults(func=_ls)

    p = sub.add_parser("show", help="a run's committed checkpoints (id, round, step, parent, files, bytes)",
                       description="Show the manifest of one run: each committed checkpoint with its round, optimizer "
                       "step, parent, file count and total bytes, plus a count of uncommitted leftovers.")
    p.add_argument("uri", help=URI_HELP)
    p.add_argument("run_id", help="run id (a folder under the bank root; see `seppo bank ls`)")
    p.set_defaults(func=_show)

    p = sub.add_parser(
        "gc", help="delete uncommitted leftovers and (--keep-last) old checkpoints of a run",
        description="Delete files under the run's checkpoint folders that the manifest does not list (uploads of "
        "crashed or losing writers), by exact key; refuse without a valid manifest unless --force. With "
        "--keep-last N also remove committed checkpoints older than the last N rounds, but never θ_0 ('initial') and "
        "never a checkpoint a registered model version points to (version tag seppo.checkpoint; give --tracking-uri "
        "and --model-name). Removed checkpoints leave the manifest (conditional write) before their files are "
        "deleted. Run gc only when no training writes to this run: an upload in flight looks like a crashed one. "
        "Removing checkpoints shrinks the reference pool of later rounds; use --keep-last on finished runs.",
        epilog="example: seppo bank gc s3://seppo/bank tiny-0123456789 --keep-last 2 --dry-run "
        "--tracking-uri http://mlflow:5000 --model-name seppo-tiny",
    )  # fmt: skip
    p.add_argument("uri", help=URI_HELP)
    p.add_argument("run_id", help="run id (see `seppo bank ls`)")
    p.add_argument("--keep-last", type=int, default=None, metavar="N",
                   help="also remove committed checkpoints beyond the last N (θ_0 and registered ones always stay)")
    p.add_argument("--dry-run", action="store_true", help="print every key gc would delete and the bytes freed; delete nothing")
    p.add_argument("--force", action="store_true",
                   help="run even without a manifest or with an invalid one: then no checkpoint counts as committed and "
                   "every checkpoint file of the run is deleted (the manifest itself never is); --dry-run first")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                   help="MLflow registry whose versions protect their checkpoints (default: env MLFLOW_TRACKING_URI)")
    p.add_argument("--model-name", action="append", default=None, metavar="NAME",
                   help="registered model whose versions protect their checkpoints (repeatable; the pipeline registers as "
                   "registry.model_name, by default seppo-<config name>)")
    p.set_defaults(func=_gc)
