"""`seppo config show | fields | docs`: the resolved config, the field listing and the field reference."""

from __future__ import annotations

import argparse
import json

import yaml

from seppo_lib.cli.train import add_config_args, config_from


def _show(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    print(yaml.safe_dump(json.loads(cfg.to_json()), sort_keys=False), end="")
    from seppo_lib.errors import SeppoError
    from seppo_lib.identity import describe

    try:  # the run id needs the data version and base model: resolving may need git, S3 or MLflow
        run = f"run id {cfg.run_id} ({describe(cfg)})"
    except SeppoError as err:
        run = f"run id unknown here: its inputs do not resolve ({err})"
    print(f"# config hash {cfg.config_hash()}  {run}")
    return 0


def _fields(args: argparse.Namespace) -> int:
    from seppo_lib.cli.common import table
    from seppo_lib.config_docs import field_rows, unknown_key_message
    from seppo_lib.errors import ConfigError

    rows = field_rows(args.prefix)
    if not rows:
        raise ConfigError(f"{args.prefix}: {unknown_key_message(args.prefix)}")
    print(table(rows, ["key", "type", "default", "description"]))
    return 0


def _docs(args: argparse.Namespace) -> int:
    from seppo_lib.config_docs import config_reference

    print(config_reference(), end="")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="show the resolved config or the field reference",
                       description="Show a resolved config, list every field (key, type, default, summary) or print "
                       "the markdown field reference. Any field can be overridden as section.key=value.")
    inner = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda _args: p.print_help() or 2)
    show = inner.add_parser("show", help="print the resolved config (preset + overrides) as YAML with its hash",
                            epilog="example: seppo config show --config tiny train.beta=2500")
    add_config_args(show)
    show.set_defaults(func=_show)
    fields = inner.add_parser("fields", help="list every config field: dotted key, type, default, first sentence",
                              description="List every field a config file or a.b=value override may set, with its "
                              "type, default and the first sentence of its description (docs/config.md has the rest).",
                              epilog="example: seppo config fields train")
    fields.add_argument("prefix", nargs="?", default=None, metavar="SECTION",
                        help="only this section (train, bank, ...) or field (train.beta)")
    fields.set_defaults(func=_fields)
    docs = inner.add_parser("docs", help="print the markdown reference of every field (docs/config.md)")
    docs.set_defaults(func=_docs)
