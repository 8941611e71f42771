"""data.dvc tracks the built-in world's training set; regenerating it gives the same DVC md5."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from seppo_lib.world.generate import generate_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_regenerated_world_data_matches_data_dvc(tmp_path: Path) -> None:
    tracked = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"][0]
    data = tmp_path / "data"
    generate_dataset(data / "world-train", split="train", seed=0)
    generate_dataset(data / "world-train-paired", split="train", seed=0, paired=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    run = lambda *a: subprocess.run(a, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "add", "-q", "data")
    regenerated = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]
    assert (regenerated["md5"], regenerated["nfiles"], regenerated["size"]) == (tracked["md5"], tracked["nfiles"], tracked["size"])
