"""`seppo` command line: one argparse tree; each area adds its commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

from seppo_lib import __version__

# Modules under seppo_lib/cli/ that expose add_commands(subparsers).
AREAS = ["train", "config", "registry", "export", "evaluate", "pipeline", "bank", "world", "bench"]


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")


class _CommandParser(argparse.ArgumentParser):
    """A (sub)command's parser: accepts the global flags after the command too.

    Their default is SUPPRESS here, so `seppo -v train` keeps the value the top-level parser set;
    nested `add_subparsers` calls inherit this class, so `seppo bank ls URI -v` works as well.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_flags(self, argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seppo",
        description="SePPO preference optimization for diffusion models, as a Kubeflow pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"seppo {__version__}")
    _add_global_flags(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for area in AREAS:
        importlib.import_module(f"seppo_lib.cli.{area}").add_commands(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """`parse_args`, except that `a.b=value` overrides may also follow options that come after a
    positional (`seppo export URI OUT --config tiny train.seed=1`), which argparse alone refuses."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in word and not word.startswith("-") for word in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the command; a user error (any `SeppoError`, a disk-full / permission error, an OSError
    naming a file) is one `seppo: error:` line and exit status 2. Programming errors propagate."""
    from seppo_lib.errors import user_errors
    from seppo_lib.storage.base import describe_os_error

    try:
        return int(args.func(args) or 0)
    except user_errors() as err:
        return _fail(str(err))
    except OSError as err:
        line = describe_os_error(err, action="use")
        if line is None:
            raise
        return _fail(line)


def _fail(message: str) -> int:
    print("seppo: error: " + " ".join(message.split()), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
