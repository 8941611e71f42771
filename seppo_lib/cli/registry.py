"""`seppo registry ls|promote|rollback|download` and `seppo tracking replay`."""

from __future__ import annotations

import argparse
import os

from seppo_lib.cli.common import add_output_positional, output_from, table
from seppo_lib.errors import SeppoError

LS_COLUMNS = ["version", "aliases", "decision", "gate_metric", "score", "champion_score", "created", "run_id"]


def _tracking_uri(args: argparse.Namespace, *, writes: bool = False) -> str:
    """The registry's URI; a sqlite db must already exist unless the command `writes` (replay creates runs)."""
    from seppo_lib.tracking.mlflow_env import require_existing_db

    if not args.tracking_uri:
        raise SeppoError("no MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    uri = str(args.tracking_uri)
    if not writes:
        require_existing_db(uri)
    return uri


def _add_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking/registry URI (default: env MLFLOW_TRACKING_URI)",
    )


def _ls(args: argparse.Namespace) -> int:
    uri = _tracking_uri(args)  # before importing mlflow: a wrong URI fails in a blink
    from seppo_lib.registry import list_versions

    rows = list_versions(args.name, tracking_uri=uri)
    for row in rows:
        row["aliases"] = ",".join(row["aliases"])
        row["run_id"] = (row["run_id"] or "")[:12]
    print(table([[row.get(c) for c in LS_COLUMNS] for row in rows], LS_COLUMNS))
    return 0


def _promote(args: argparse.Namespace) -> int:
    uri = _tracking_uri(args)
    from seppo_lib.registry import promote

    previous = promote(args.name, args.version, tracking_uri=uri)
    print(f"{args.name}: champion {'v' + previous if previous else 'none'} -> v{args.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    uri = _tracking_uri(args)
    from seppo_lib.registry import rollback

    version = rollback(args.name, tracking_uri=uri)
    print(f"{args.name}: champion rolled back to v{version}")
    return 0


def _download(args: argparse.Namespace) -> int:
    uri, out = _tracking_uri(args), output_from(args, "DEST")
    from seppo_lib.registry import download

    dest = download(args.model, out, tracking_uri=uri)
    print(dest)
    return 0


def _replay(args: argparse.Namespace) -> int:
    uri = _tracking_uri(args, writes=True)
    from seppo_lib.tracking.mlflow_logger import replay_spool

    run_id = replay_spool(args.spool_file, uri)
    print(f"replayed {args.spool_file} into MLflow run {run_id}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reg = subparsers.add_parser("registry", help="list, promote, roll back and download registered models")
    reg_sub = reg.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    p = reg_sub.add_parser("ls", help="versions of a registered model with aliases and gate decisions")
    p.add_argument("name", help="registered model name")
    p.set_defaults(func=_ls)

    p = reg_sub.add_parser("promote", help="point the champion alias at a version (recorded for rollback)")
    p.add_argument("name", help="registered model name")
    p.add_argument("version", help="version number")
    p.set_defaults(func=_promote)

    p = reg_sub.add_parser("rollback", help="move champion back to the previous champion")
    p.add_argument("name", help="registered model name")
    p.set_defaults(func=_rollback)

    p = reg_sub.add_parser("download", help="download a model version's files")
    p.add_argument("model", help="NAME (= NAME@champion), NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS")
    add_output_positional(p, "DEST", "destination folder (must not exist or be empty)")
    p.set_defaults(func=_download)

    trk = subparsers.add_parser("tracking", help="MLflow tracking utilities")
    trk_sub = trk.add_subparsers(dest="tracking_command", metavar="ACTION", required=True)
    p = trk_sub.add_parser("replay", help="upload a spool file written while MLflow was unreachable")
    p.add_argument("spool_file", help="the .jsonl spool named in the training log's warning")
    p.set_defaults(func=_replay)

    for parser in (*reg_sub.choices.values(), *trk_sub.choices.values()):
        _add_uri(parser)
