"""`seppo registry ls|promote|rollback|download` and `seppo tracking replay`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from seppo_lib.errors import SeppoError


def _tracking_uri(args: argparse.Namespace) -> str:
    if not args.tracking_uri:
        raise SeppoError("no MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return str(args.tracking_uri)


def _add_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking/registry URI (default: env MLFLOW_TRACKING_URI)",
    )


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _ls(args: argparse.Namespace) -> int:
    from seppo_lib.registry import list_versions

    rows = list_versions(args.name, tracking_uri=_tracking_uri(args))
    for row in rows:
        row["aliases"] = ",".join(row["aliases"])
        row["run_id"] = (row["run_id"] or "")[:12]
    print(_table(rows, ["version", "aliases", "decision", "gate_metric", "score", "champion_score", "created", "run_id"]))
    return 0


def _promote(args: argparse.Namespace) -> int:
    from seppo_lib.registry import promote

    previous = promote(args.name, args.version, tracking_uri=_tracking_uri(args))
    print(f"{args.name}: champion {'v' + previous if previous else 'none'} -> v{args.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from seppo_lib.registry import rollback

    version = rollback(args.name, tracking_uri=_tracking_uri(args))
    print(f"{args.name}: champion rolled back to v{version}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from seppo_lib.registry import download

    dest = download(args.model, args.dest, tracking_uri=_tracking_uri(args))
    print(dest)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from seppo_lib.tracking.mlflow_logger import replay_spool

    run_id = replay_spool(args.spool_file, _tracking_uri(args))
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
    p.add_argument("dest", help="destination folder (must not exist or be empty)")
    p.set_defaults(func=_download)

    trk = subparsers.add_parser("tracking", help="MLflow tracking utilities")
    trk_sub = trk.add_subparsers(dest="tracking_command", metavar="ACTION", required=True)
    p = trk_sub.add_parser("replay", help="upload a spool file written while MLflow was unreachable")
    p.add_argument("spool_file", help="the .jsonl spool named in the training log's warning")
    p.set_defaults(func=_replay)

    for parser in (*reg_sub.choices.values(), *trk_sub.choices.values()):
        _add_uri(parser)
