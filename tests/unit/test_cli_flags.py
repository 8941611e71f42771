"""CLI friction: global flags in either position, `seppo bank ls` on a missing root."""

from __future__ import annotations

from pathlib import Path

import pytest

from seppo_lib.cli import build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "train", "--config", "tiny"],
        ["train", "--config", "tiny", "-v"],
        ["train", "--verbose", "--config", "tiny"],
        ["bank", "ls", "/x", "-v"],
        ["bank", "-v", "ls", "/x"],
    ],
)
def test_verbose_before_or_after_the_subcommand(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).verbose is True


@pytest.mark.parametrize("argv", [["train", "--config", "tiny"], ["bank", "ls", "/x"]])
def test_verbose_defaults_off(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).verbose is False


def test_bank_ls_missing_local_root_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such"
    assert main(["bank", "ls", str(missing)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert errors == [errors[-1]] and errors[0].startswith("seppo: error:") and str(missing) in errors[0], captured
    assert captured.out == ""
    assert main(["bank", "ls", f"file://{missing}"]) == 2
    assert not missing.exists()  # ls never creates the root


def test_bank_ls_existing_empty_root_says_no_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bank", "ls", str(tmp_path)]) == 0
    assert f"no runs under {tmp_path}" in capsys.readouterr().out
