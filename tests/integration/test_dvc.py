"""DVC with an S3 remote (moto on loopback): push, clone + pull, and resolve_dvc_path at a revision."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from seppo_lib.data.dvc_source import resolve_dvc_path
from seppo_lib.errors import DataError
from seppo_lib.storage import StorageError
from tests.integration.conftest import new_bucket
from tests.servers import free_port

pytestmark = pytest.mark.servers

TRACKED = "data/images"
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "DVC_NO_ANALYTICS": "1"}


def sh(*args: str, cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


def dvc(*args: str, cwd: Path) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


def git(*args: str, cwd: Path) -> str:
    return sh("git", *args, cwd=cwd)


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def md5_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Commit:
    sha: str
    md5: str  # recorded in data/images.dvc
    files: dict[str, str]  # relative path -> md5 of the content


@dataclass(frozen=True)
class Origin:
    path: Path
    remote_url: str
    v1: Commit
    v2: Commit


def _commit(repo: Path, message: str) -> Commit:
    dvc("add", "-q", TRACKED, cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)
    recorded = yaml.safe_load((repo / f"{TRACKED}.dvc").read_text())["outs"][0]["md5"]
    return Commit(git("rev-parse", "HEAD", cwd=repo), recorded, md5_tree(repo / TRACKED))


@pytest.fixture(scope="module")
def origin(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    """A git + DVC repo with two commits of data/images, both pushed to s3://<bucket>/dvcstore."""
    repo = tmp_path_factory.mktemp("dvc") / "origin"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    git("config", "user.name", "seppo-test", cwd=repo)
    git("config", "user.email", "seppo-test@example.invalid", cwd=repo)
    dvc("init", "-q", cwd=repo)
    remote_url = f"s3://{new_bucket(s3_server)}/dvcstore"
    dvc("remote", "add", "-d", "storage", remote_url, cwd=repo)
    dvc("remote", "modify", "storage", "endpointurl", s3_server, cwd=repo)
    write_files(repo / TRACKED, {"a.png": b"\x89PNG v1", "b.png": os.urandom(2048), "sub/c.json": b'{"c": 1}'})
    v1 = _commit(repo, "images v1")
    git("tag", "v1", cwd=repo)
    write_files(repo / TRACKED, {"a.png": b"\x89PNG v2", "d.png": os.urandom(512)})
    v2 = _commit(repo, "images v2")
    dvc("push", "-q", "--all-commits", cwd=repo)
    assert v1.md5 != v2.md5 and v1.md5.endswith(".dir")
    return Origin(repo, remote_url, v1, v2)


def fresh_clone(origin: Origin, dest: Path) -> Path:
    """`git clone` only: no DVC cache, so every file has to come from the S3 remote."""
    git("clone", "-q", str(origin.path), str(dest), cwd=dest.parent)
    return dest


def test_clone_and_dvc_pull_restore_identical_files(origin: Origin, tmp_path: Path) -> None:
    clone = fresh_clone(origin, tmp_path / "clone")
    assert not (clone / TRACKED).exists()
    dvc("pull", "-q", cwd=clone)
    assert md5_tree(clone / TRACKED) == origin.v2.files


def test_resolve_dvc_path_at_a_revision(origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clone = fresh_clone(origin, tmp_path / "clone")
    old = resolve_dvc_path(TRACKED, str(clone), "v1", tmp_path / "v1")
    assert (old.rev, old.md5, old.repo) == (origin.v1.sha, origin.v1.md5, str(clone))
    assert md5_tree(old.local_dir) == origin.v1.files
    (tmp_path / "head").mkdir()  # an existing empty folder is fine
    new = resolve_dvc_path(TRACKED, str(clone), None, tmp_path / "head")
    assert (new.rev, new.md5) == (origin.v2.sha, origin.v2.md5)
    assert md5_tree(new.local_dir) == origin.v2.files
    monkeypatch.chdir(clone / "data")  # repo=None: the repository around the current directory
    here = resolve_dvc_path(TRACKED, None, origin.v1.sha[:8], tmp_path / "here")
    assert (here.repo, here.rev, here.md5) == (str(clone), origin.v1.sha, origin.v1.md5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clone", "head", "here", "v1"]  # no partial folders


def test_resolve_dvc_path_explains_bad_input(origin: Origin, tmp_path: Path) -> None:
    repo, out = str(origin.path), tmp_path / "out"
    with pytest.raises(DataError, match="cannot clone DVC repository .*no-such-repo"):
        resolve_dvc_path(TRACKED, str(tmp_path / "no-such-repo"), None, out)
    with pytest.raises(DataError, match="git revision 'v9' not found in"):
        resolve_dvc_path(TRACKED, repo, "v9", out)
    with pytest.raises(DataError, match="data/missing does not exist in .* at " + origin.v2.sha[:12]):
        resolve_dvc_path("data/missing", repo, None, out)
    with pytest.raises(DataError, match="data in .* is not a DVC-tracked directory"):
        resolve_dvc_path("data", repo, None, out)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="is not empty"):
        resolve_dvc_path(TRACKED, repo, None, tmp_path / "full")
    assert not out.exists()


def test_resolve_dvc_path_unreachable_remote(origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clone = fresh_clone(origin, tmp_path / "clone")
    dead = f"http://127.0.0.1:{free_port()}"
    (clone / ".dvc" / "config.local").write_text(f"['remote \"storage\"']\n    endpointurl = {dead}\n")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # fail fast instead of retrying a closed port
    with pytest.raises(StorageError, match=f"from DVC remote storage \\({origin.remote_url}, endpoint {dead}\\)"):
        resolve_dvc_path(TRACKED, str(clone), None, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clone"]
