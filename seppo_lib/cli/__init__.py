"""`seppo` command line: one argparse tree; each area adds its commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from seppo_lib import __version__

# Modules under seppo_lib/cli/ that expose add_commands(subparsers).
AREAS = ["train", "config", "registry", "evaluate", "pipeline", "bank", "world", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seppo",
        description="SePPO preference optimization for diffusion models, as a Kubeflow pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"seppo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        importlib.import_module(f"seppo_lib.cli.{area}").add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from seppo_lib.errors import user_errors

    try:
        return int(args.func(args) or 0)
    except user_errors() as err:
        print(f"seppo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
