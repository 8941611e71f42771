"""Hostile and broken config input (issue 16 item 4, issue 13 item 5): one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from seppo_lib.config import ConfigError, SeppoConfig, load_config
from seppo_lib.errors import SeppoError

ROOT = Path(__file__).resolve().parents[2]

# 342 bytes (the was 386); with aliases expanded it is 9**9 = 387 420 489 "lol"s (several GB).
BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{b}: &{b} [*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a}]" for a, b in zip("abcdefgh", "bcdefghi")]
) + "\n"


def _refused(tmp_path: Path, body: str | bytes, *overrides: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(ConfigError) as err:
        load_config(str(path), list(overrides))
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_config_error_is_a_seppo_error_and_a_value_error() -> None:
    assert issubclass(ConfigError, SeppoError) and issubclass(ConfigError, ValueError)


def test_alias_bomb_is_refused_fast_in_a_memory_capped_process(tmp_path: Path) -> None:
    """Never load the bomb in the test process itself: without the fix it takes 20+ GB."""
    assert len(BILLION_LAUGHS) < 400
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    code = (
        "import resource, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"  # 1 GiB address space
        "from seppo_lib.config import ConfigError, load_config\n"
        "started = time.perf_counter()\n"
        "try:\n    load_config(sys.argv[1])\nexcept ConfigError as err:\n"
        "    print(f'REFUSED {time.perf_counter() - started:.4f}s', err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("REFUSED"), out.stderr[-300:]
    assert "anchors and aliases" in out.stdout and "line 1, column 4" in out.stdout
    assert float(out.stdout.split()[1].rstrip("s")) < 0.5, out.stdout


@pytest.mark.parametrize("body", ["train: " + "[" * 5000 + "]" * 5000, "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 200))])
def test_deep_nesting_is_one_line(tmp_path: Path, body: str) -> None:
    assert "nested deeper than" in _refused(tmp_path, body)


def test_binary_file_is_one_line(tmp_path: Path) -> None:
    msg = _refused(tmp_path, b"train:\n  beta: \xff\xfe\x00\x89PNG")
    assert "not UTF-8" in msg and "byte 16" in msg


def test_control_characters_and_bad_numbers_are_one_line(tmp_path: Path) -> None:
    assert "character 8: special characters are not allowed" in _refused(tmp_path, "name: a\x07b\n")
    assert "line 2" in _refused(tmp_path, "train:\n  beta: 0b_\n")
    assert "cannot read '0x_'" in _refused(tmp_path, "train:\n  seed: 0x_\n")


def test_dates_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("data:\n  dvc_rev: 2024-13-45\nworkdir: 2024-01-01\n")
    cfg = load_config(str(path))
    assert cfg.data.dvc_rev == "2024-13-45" and cfg.workdir == "2024-01-01"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.beta=[", "override 'train.beta=[': not valid YAML: line 1, column 2"),
        ("train.beta=*a", "anchors and aliases"),
        ("train.beta={a: [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}", "nested deeper than"),
        ("train.updates_per_round=99999999999999999999", "train.updates_per_round: Input should be less than or equal to"),
        ("train.seed=99999999999999999999", "train.seed"),
        ("train.beta=1e400", "train.beta: Input should be a finite number"),
        ("train.beta=.nan", "train.beta: Input should be a finite number"),
        ("train.lr=.inf", "train.lr"),
        ("sampling.guidance_scale=1e308", "sampling.guidance_scale: Input should be less than or equal to 100"),
        ("bank.run_id=../../x", "bank.run_id: must be 1-64 letters"),
        ("bank.run_id=/tmp/abs", "bank.run_id: must be 1-64 letters"),
        ("bank.run_id=..", "bank.run_id"),
        ("registry.model_name=../m", "registry.model_name: must be"),
        ("name=a/b", "name: must be"),
        ("a.b.c.d.e=1", "keys are up to 4 names"),
        ("train.be ta=1", "keys are up to 4 names"),
    ],
)
def test_bad_overrides_are_one_line(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    msg = str(err.value)
    assert "\n" not in msg and needle in msg, msg


@pytest.mark.parametrize(
    ("override", "env"),
    [
        ("tracking.mlflow_uri=http://alice:s3cr3t@mlflow:5000", "MLFLOW_TRACKING_PASSWORD"),
        ("tracking.mlflow_uri=https://s3cr3t@mlflow.example.com", "MLFLOW_TRACKING_TOKEN"),
        ("tracking.mlflow_uri=https://mlflow.example.com/?token=s3cr3t", "MLFLOW_TRACKING_USERNAME"),
        ("storage.s3_endpoint_url=http://AKIA:s3cr3t@minio:9000", "AWS_SECRET_ACCESS_KEY"),
        ("data.dvc_repo=https://s3cr3t@github.com/org/data.git", "credential helper"),
        ("data.dvc_repo=https://user:s3cr3t@github.com/org/data.git", "credential helper"),
        ("data.source=s3://bucket/data?X-Amz-Signature=s3cr3t", "AWS_ACCESS_KEY_ID"),
        ("model.pretrained=https://u:s3cr3t@host/model", "AWS_ACCESS_KEY_ID"),
        ("eval.scorer_paths={pickscore: 'https://u:s3cr3t@host/w'}", "AWS_ACCESS_KEY_ID"),
    ],
)
def test_credentials_in_uris_are_refused_without_echoing_them(override: str, env: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    msg = str(err.value)
    assert "\n" not in msg and env in msg and "s3cr3t" not in msg, msg


@pytest.mark.parametrize(
    "override",
    [
        "tracking.mlflow_uri=http://mlflow.kubeflow.svc:5000",
        "data.dvc_repo=ssh://git@github.com/org/data.git",
        "data.dvc_repo=git@github.com:org/data.git",
        "storage.s3_endpoint_url=http://minio:9000",
        "bank.run_id=my-run.v2_1",
    ],
)
def test_ordinary_uris_and_names_still_load(override: str) -> None:
    load_config("tiny", [override])


def test_compiled_pipeline_cannot_carry_a_password() -> None:
    """The compiled YAML embeds cfg.to_json(); a config with a password never validates, from any entry point."""
    good = load_config("tiny", ["tracking.mlflow_uri=http://mlflow:5000"])
    doc = good.to_json().replace("http://mlflow:5000", "http://u:s3cr3t@mlflow:5000")
    with pytest.raises(ConfigError, match="tracking.mlflow_uri: URI contains a password"):
        SeppoConfig.from_json(doc)


def test_cli_exits_2_with_one_line_for_non_finite_beta() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "seppo_lib.cli", "config", "show", "--config", "tiny", "train.beta=1e400"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "train.beta: Input should be a finite number" in out.stderr


def test_unreadable_names_are_one_line(tmp_path: Path) -> None:
    for name in ["bad\x00name", "x" * 5000, str(tmp_path)]:
        with pytest.raises(ConfigError) as err:
            load_config(name)
        assert "\n" not in str(err.value)
