"""Argparse helpers every command area shares: the output option and plain-text tables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from seppo_lib.errors import SeppoError

OUTPUT_FLAGS = ("--out", "--output", "-o")


def add_output_arg(
    parser: argparse.ArgumentParser, help: str, *, required: bool = False, metavar: str = "PATH"
) -> None:
    """`--out` / `--output` / `-o`, one option (dest `out`) on every command that writes a file or folder."""
    parser.add_argument(*OUTPUT_FLAGS, dest="out", metavar=metavar, required=required, default=None, help=help)


def add_output_positional(parser: argparse.ArgumentParser, metavar: str, help: str) -> None:
    """An optional positional destination that `--out/--output/-o` may give instead (`seppo export URI OUT`)."""
    parser.add_argument("out_positional", metavar=metavar, nargs="?", default=None, help=f"{help}; or give it as --out")
    add_output_arg(parser, f"the positional {metavar}, as an option", metavar=metavar)


def output_from(args: argparse.Namespace, metavar: str) -> str:
    """The destination of a command built with `add_output_positional`.

    With `--out`, an `a.b=value` word argparse put in the positional slot is the first of the
    overrides that follow it (`seppo export URI --out DIR train.beta=1`); any other word is a
    second destination, refused.
    """
    if args.out is None:
        if args.out_positional is None:
            raise SeppoError(f"missing the destination {metavar}: give it after the model or as --out {metavar}")
        return str(args.out_positional)
    if args.out_positional is not None:
        if not hasattr(args, "overrides") or "=" not in args.out_positional:
            raise SeppoError(f"the destination is given twice ({args.out_positional} and --out {args.out}); give one")
        args.overrides.insert(0, args.out_positional)
    return str(args.out)


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Left-aligned columns with an upper-case header; None cells are empty."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(header)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
