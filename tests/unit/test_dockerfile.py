"""The container images: the seppo image (Dockerfile) and the dev MLflow server image.

The Dockerfiles are parsed into (instruction, argument) pairs (comments dropped, line
continuations joined) and checked for the rules the deployment relies on: non-root user,
pinned dependencies without replacing the base image's CUDA torch, no secrets baked in,
HF_HUB_OFFLINE left to the user.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
MLFLOW_DOCKERFILE = ROOT / "k8s" / "images" / "mlflow-server" / "Dockerfile"
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|ACCESS_KEY|CREDENTIAL|API_KEY", re.IGNORECASE)


def parse(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments removed, continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def args_of(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for key, rest in instructions if key == keyword]


def env_names(instructions: list[tuple[str, str]]) -> set[str]:
    names = set()
    for key, rest in instructions:
        if key == "ENV":
            names |= {word.split("=", 1)[0] for word in shlex.split(rest) if "=" in word}
        elif key == "ARG":
            names.add(rest.split("=", 1)[0])
    return names


def labels(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(word.split("=", 1) for rest in args_of(instructions, "LABEL") for word in shlex.split(rest))


def _check_non_root_after_install(instructions: list[tuple[str, str]]) -> None:
    users = [(i, rest) for i, (key, rest) in enumerate(instructions) if key == "USER"]
    assert users, "no USER instruction: the image would run as root"
    index, user = users[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"final USER must be a numeric non-root uid (runAsNonRoot), got {user!r}"
    installs = [i for i, (key, rest) in enumerate(instructions) if key == "RUN" and "pip install" in rest]
    assert installs and max(installs) < index, "USER must come after the installs"


@pytest.fixture(scope="module")
def seppo_image() -> list[tuple[str, str]]:
    return parse(DOCKERFILE)


def test_base_image_is_the_pinned_cuda_pytorch(seppo_image: list[tuple[str, str]]) -> None:
    assert args_of(seppo_image, "FROM") == ["pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime"]


def test_runs_as_non_root_uid_1000(seppo_image: list[tuple[str, str]]) -> None:
    _check_non_root_after_install(seppo_image)
    assert args_of(seppo_image, "USER")[-1] == "1000:1000"


def test_copies_the_project_and_its_constraints(seppo_image: list[tuple[str, str]]) -> None:
    copied = {src.rstrip("/") for rest in args_of(seppo_image, "COPY") for src in shlex.split(rest)[:-1]}
    needed = {"requirements/constraints.txt", "pyproject.toml", "README.md", "seppo_lib", "components", "pipelines"}
    assert copied >= needed


def test_installs_pinned_but_keeps_the_image_torch(seppo_image: list[tuple[str, str]]) -> None:
    [install] = [rest for rest in args_of(seppo_image, "RUN") if "pip install" in rest]
    assert "--no-cache-dir" in install
    stripped = re.search(r"grep -v -E '\^\(([^)]*)\)==' requirements/constraints\.txt > (\S+);", install)
    assert stripped, "the constraints must be filtered with grep -v before pip sees them"
    assert "torch" in stripped.group(1).split("|"), "the torch== pin must be stripped"
    constraints_file = stripped.group(2)
    assert re.search(rf"pip install --no-cache-dir -c {re.escape(constraints_file)} \.", install)
    assert "-c requirements/constraints.txt" not in install, "the unfiltered pins would replace the CUDA torch"
    assert re.search(rf'echo "torch==\$\{{torch_before%%\+\*\}}" >> {re.escape(constraints_file)}', install), (
        "torch must be pinned to the version already in the image"
    )
    assert 'test "${torch_before}" = "${torch_after}"' in install


def test_no_secrets_and_no_hub_policy_baked_in(seppo_image: list[tuple[str, str]]) -> None:
    names = env_names(seppo_image)
    assert not [n for n in names if SECRET_NAME.search(n)], f"secret-looking ENV/ARG: {sorted(names)}"
    assert not [rest for _, rest in seppo_image if "HF_HUB_OFFLINE" in rest], "HF_HUB_OFFLINE is the user's choice"


def test_records_the_build_commit(seppo_image: list[tuple[str, str]]) -> None:
    """MLflow tags runs with SEPPO_GIT_SHA; inside the image there is no .git to ask."""
    env = " ".join(args_of(seppo_image, "ENV"))
    assert "SEPPO_GIT_SHA=${VCS_REF}" in env and "VCS_REF=" in args_of(seppo_image, "ARG")


def test_entrypoint_and_default_command(seppo_image: list[tuple[str, str]]) -> None:
    assert [json.loads(e) for e in args_of(seppo_image, "ENTRYPOINT")] == [[]]
    assert [json.loads(c) for c in args_of(seppo_image, "CMD")] == [["seppo", "--help"]]


def test_oci_labels(seppo_image: list[tuple[str, str]]) -> None:
    found = labels(seppo_image)
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}" in found, key
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG SEPPO_VERSION={version}" in DOCKERFILE.read_text()


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, close enough for this file: patterns are anchored at the
    context root, excluding a directory excludes what is below it, `**/` matches any depth
    (also none), a later `!pattern` re-includes. (fnmatch's `*` also crosses `/`.)"""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for line in patterns:
        pattern = line.lstrip("!").strip("/")
        variants = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(prefix, v) for prefix in prefixes for v in variants):
            result = not line.startswith("!")
    return result


def test_dockerignore_keeps_local_state_out_and_sources_in(seppo_image: list[tuple[str, str]]) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    for excluded in (".venv", "seppo-runs", ".git", "data", ".pytest_cache", "seppo_lib/__pycache__", "mlruns"):
        assert _ignored(excluded, patterns), f"{excluded} must be excluded from the build context"
    copied = [src for rest in args_of(seppo_image, "COPY") for src in shlex.split(rest)[:-1]]
    for src in copied + ["seppo_lib/data/__init__.py"]:
        assert not _ignored(src.rstrip("/"), patterns), f"{src} is copied but excluded by .dockerignore"


def test_mlflow_server_image() -> None:
    instructions = parse(MLFLOW_DOCKERFILE)
    [base] = args_of(instructions, "FROM")
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), f"pin the base image by full version, got {base}"
    _check_non_root_after_install(instructions)
    [install] = [rest for rest in args_of(instructions, "RUN") if "pip install" in rest]
    assert "--no-cache-dir -c /tmp/constraints.txt mlflow boto3 psycopg2-binary==" in install
    assert not [n for n in env_names(instructions) if SECRET_NAME.search(n)]
    lines = (ROOT / "requirements/constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line)
    assert f"mlflow-server:{pins['mlflow']}" in MLFLOW_DOCKERFILE.read_text(), "build command documents the pinned tag"
