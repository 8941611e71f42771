"""`seppo config show | docs`: the resolved config and the field reference."""

from __future__ import annotations

import argparse
import json

import yaml

from seppo_lib.cli.train import add_config_args, config_from


def _show(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    print(yaml.safe_dump(json.loads(cfg.to_json()), sort_keys=False), end="")
    print(f"# config hash {cfg.config_hash()}  run id {cfg.run_id}")
    return 0


def _docs(args: argparse.Namespace) -> int:
    from seppo_lib.config_docs import config_reference

    print(config_reference(), end="")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="show the resolved config or the field reference")
    inner = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    show = inner.add_parser("show", help="print the resolved config (preset + overrides) as YAML with its hash",
                            epilog="example: seppo config show --config tiny train.beta=2500")
    add_config_args(show)
    show.set_defaults(func=_show)
    docs = inner.add_parser("docs", help="print the markdown reference of every field (docs/config.md)")
    docs.set_defaults(func=_docs)
