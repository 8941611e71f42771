"""The `seppo` CLI: the tiny preset end to end, one-line errors for bad input, model URIs from any directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seppo_lib.cli import main
from seppo_lib.world.builtin import BUILTIN_WORLD_BASE
from tests.helpers import make_image_folder


def _error_line(stderr: str) -> str:
    """The CLI's error is exactly one line (logging may print others before it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("seppo: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _args(tmp: Path, data: Path) -> list[str]:
    return [
        f"workdir={tmp / 'w'}", f"bank.uri={tmp / 'bank'}", f"bank.cache_dir={tmp / 'cache'}", f"data.source={data}",
        "train.updates_per_round=2", "sampling.num_inference_steps=2",
    ]


def test_train_tiny_preset_all_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_image_folder(tmp_path / "d", n=8)
    assert main(["train", "--config", "tiny", *_args(tmp_path, data)]) == 0
    out = capsys.readouterr().out
    assert "round 3: ckpt-000006" in out
    assert main(["train", "--config", "tiny", *_args(tmp_path, data)]) == 0  # rerun resumes: nothing to do
    assert "already trained: " in capsys.readouterr().out  # the whole run is committed: nothing loaded or trained


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.nope=1", "train.nope: unknown key"),
        ("train.beta=0", "train.beta: Input should be greater than 0"),
        ("train.criterion=maybe", "train.criterion"),
        ("bank.reference=best", "bank.reference"),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, needle: str) -> None:
    assert main(["train", "--config", "tiny", override]) == 2
    err = _error_line(capsys.readouterr().err)
    assert err.startswith("seppo: error: invalid config") and needle in err


def test_empty_source_fails_with_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_image_folder(tmp_path / "d", n=2)
    for p in data.glob("*.png"):
        p.write_bytes(b"garbage")
    assert main(["prepare", "--config", "tiny", *_args(tmp_path, data)]) == 2
    err = _error_line(capsys.readouterr().err)
    assert "no valid rows" in err and "2 corrupt_image" in err


def test_world_accuracy_takes_model_uris_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # not the repository root
    small = ["--prompts", "2", "--samples", "1"]
    copy = Path(shutil.copytree(BUILTIN_WORLD_BASE, tmp_path / "copy"))
    assert main(["world", "accuracy", "--model", f"file://{copy}", *small, "--record"]) == 0  # --record on the resolved folder
    measured = json.loads(capsys.readouterr().out)
    assert set(measured) >= {"test", "train", "sampler"}
    assert json.loads((copy / "recipe.json").read_text())["measured_accuracy"] == measured
    assert main(["world", "accuracy", "--model", "seppo_lib/world/base_model", *small]) == 2
    assert "is not a diffusers model folder" in capsys.readouterr().err

