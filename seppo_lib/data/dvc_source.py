"""Materialize a DVC-tracked directory at a git revision (the data a run trained on is pinned).

`dvc_version("data/pickapic", repo="https://git.example/seppo-data.git", rev="main")` resolves a
branch, tag or SHA to the commit SHA it points at now and reads the directory's md5 from its `.dvc`
file at that commit, without downloading data (the run identity, `seppo_lib.identity`).
`resolve_dvc_path(path, repo, rev, out_dir)` does the same and downloads the files from the DVC
cache or remote (S3 / MinIO: endpoint and credentials come from the repo's `.dvc/config`,
`.dvc/config.local` and the AWS_* environment).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seppo_lib.errors import DataError
from seppo_lib.storage.base import StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DvcVersion:
    rev: str  # full git commit SHA the path is read at
    md5: str  # DVC's hash of the directory as recorded in its .dvc file ("<md5>.dir")
    repo: str  # the repository as given (URL or path), or the local repo root when None


@dataclass(frozen=True)
class DvcResolved(DvcVersion):
    local_dir: Path  # where the files are now


def dvc_version(path: str, repo: str | None, rev: str | None) -> DvcVersion:
    """The commit SHA `rev` (a branch, tag or SHA; None: HEAD) of `repo` points at now and the md5 its
    `.dvc` file records for DVC-tracked directory `path` there. Reads git only, no data.
    Raises DataError for a bad repo / rev / path."""
    with _open(repo, rev) as (fs, where, sha):
        md5 = _tracked_md5(fs, path, where, sha)
        return DvcVersion(rev=sha, md5=md5, repo=repo or str(fs.repo.scm.root_dir))


def resolve_dvc_path(path: str, repo: str | None, rev: str | None, out_dir: Path) -> DvcResolved:
    """Download DVC-tracked directory `path` of `repo` (None: the repo around the cwd) at git
    revision `rev` (None: HEAD; uncommitted changes are never used) into `out_dir`, which must
    not exist or be empty. Raises DataError for a bad repo / rev / path, StorageError when the
    DVC remote cannot be read."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(f"output folder {out_dir} is not empty: give an empty or new folder for {path}")
    with _open(repo, rev) as (fs, where, sha):
        md5 = _tracked_md5(fs, path, where, sha)
        _download(fs, path, out_dir, where, sha)
        root = repo or str(fs.repo.scm.root_dir)
    log.info("materialized %s of %s at %s (md5 %s) in %s", path, root, sha, md5, out_dir)
    return DvcResolved(local_dir=out_dir, rev=sha, md5=md5, repo=root)


@contextmanager
def _open(repo: str | None, rev: str | None) -> Iterator[tuple[Any, str, str]]:
    """(DVCFileSystem at `rev`, how to name the repo in errors, the commit SHA `rev` resolved to)."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    where = repo or "the repository around the current directory"
    fs = DVCFileSystem(repo, rev=rev or "HEAD")
    try:
        try:
            sha = fs.repo.get_rev()  # opens (or clones) the repository lazily
        except DvcException as exc:
            raise DataError(_open_error(exc, where, rev)) from exc
        yield fs, where, sha
    finally:
        fs.close()


def _open_error(exc: Exception, where: str, rev: str | None) -> str:
    from dvc.repo import NotDvcRepoError
    from dvc.scm import CloneError, RevError

    if isinstance(exc, RevError):
        return f"git revision {rev or 'HEAD'!r} not found in {where}: give a branch, tag or commit that exists there"
    if isinstance(exc, CloneError):
        return f"cannot clone DVC repository {where}: check the git URL or path and your git credentials"
    if isinstance(exc, NotDvcRepoError):
        return f"{where} is not a DVC repository: run `dvc init` there, or point data.source at the right repo"
    return f"cannot open DVC repository {where} at {rev or 'HEAD'}: {exc}"


def _tracked_md5(fs: Any, path: str, where: str, sha: str) -> str:
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist in {where} at {sha[:12]}: check the path and revision") from exc
    dvc_info = info.get("dvc_info") or {}
    if info.get("type") != "directory" or not dvc_info.get("isout") or not dvc_info.get("md5"):
        raise DataError(f"{path} in {where} at {sha[:12]} is not a DVC-tracked directory: `dvc add` the folder itself")
    return str(dvc_info["md5"])


def _download(fs: Any, path: str, out_dir: Path, where: str, sha: str) -> None:
    """Fetch into a sibling temp folder and rename it into place, so a failure leaves nothing."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir()
    try:
        fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
    except Exception as exc:  # dvc / dvc-data / fsspec errors from the remote, re-raised with context
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(_remote_error(fs, path, where, sha, exc)) from exc
    if out_dir.exists():
        out_dir.rmdir()  # checked empty above
    tmp.rename(out_dir)


def _remote_error(fs: Any, path: str, where: str, sha: str, exc: BaseException) -> str:
    config = fs.repo.config
    name = config["core"].get("remote") or "(no default remote)"
    remote = config["remote"].get(name, {})
    cause = exc
    while cause.__cause__ or cause.__context__:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    return (
        f"cannot fetch {path} of {where} at {sha[:12]} from DVC remote {name} "
        f"({remote.get('url', '?')}, endpoint {remote.get('endpointurl', 'AWS')}): {type(cause).__name__}: {cause}; "
        f"check the endpoint (`dvc remote modify --local {name} endpointurl ...`), AWS_* credentials and `dvc push`"
    )
