"""MLflow plumbing shared by the logger, the steps and the registry: URIs, reachability
probes, fail-fast HTTP settings, lineage tags and config params."""

from __future__ import annotations

import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seppo_lib.errors import SeppoError
from seppo_lib.tracking.base import flatten

if TYPE_CHECKING:
    from seppo_lib.config import SeppoConfig

SEPPO_RUN_ID_TAG = "seppo.run_id"
ROLE_TAG = "seppo.role"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_VALUE_CHARS = 6000  # MLflow's MAX_PARAM_VAL_LENGTH
PROBE_TIMEOUT_S = 2.0
# Applied around this module's own HTTP calls unless the user set them: a dead server is
# detected in seconds instead of minutes of retries (training waits on these calls).
_FAIL_FAST_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
_ENV_LOCK = threading.RLock()


class TrackingError(SeppoError):
    """The tracking server is unreachable or refused a request; the message says what to do."""


# ---- URIs, probing, lineage --------------------------------------------------------


def resolve_tracking_uri(cfg: SeppoConfig) -> str:
    """tracking.mlflow_uri, else env MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db."""
    if cfg.tracking.mlflow_uri:
        return cfg.tracking.mlflow_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    workdir = Path(cfg.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workdir / 'mlflow.db'}"


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (relative, or absolute with four slashes); None otherwise."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def require_existing_db(tracking_uri: str) -> None:
    """For commands that only read the registry: MLflow would silently create an empty sqlite db."""
    db = sqlite_file(tracking_uri)
    if db is not None and not db.is_file():
        raise TrackingError(
            f"MLflow database {db} does not exist (tracking URI {tracking_uri}); `seppo run`, `seppo train` or the "
            "pipeline's register step creates it, so check the path, or --tracking-uri / MLFLOW_TRACKING_URI"
        )


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a local sqlite db (`<dir>/mlartifacts`); None lets the server decide."""
    db = sqlite_file(tracking_uri)
    return None if db is None else (db.parent / "mlartifacts").resolve().as_uri()


def probe(tracking_uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why an http(s) tracking server cannot be reached, or None when it answers (or is not HTTP)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # something answered; real requests report their own errors
    except (urllib.error.URLError, OSError, ValueError) as err:
        return str(getattr(err, "reason", err))


def ensure_reachable(tracking_uri: str) -> None:
    reason = probe(tracking_uri)
    if reason is not None:
        raise TrackingError(
            f"MLflow at {tracking_uri} unreachable ({reason}); start the server or pass the right "
            "--tracking-uri / MLFLOW_TRACKING_URI"
        )


@contextmanager
def fail_fast(short_timeout: bool = True) -> Iterator[None]:
    """One retry (and a 10 s timeout unless uploading artifacts) for MLflow HTTP calls in the block."""
    keys = [k for k in _FAIL_FAST_ENV if short_timeout or k != "MLFLOW_HTTP_REQUEST_TIMEOUT"]
    with _ENV_LOCK:
        added = [key for key in keys if key not in os.environ]
        for key in added:
            os.environ[key] = _FAIL_FAST_ENV[key]
        try:
            yield
        finally:
            for key in added:
                os.environ.pop(key, None)


def discover_git_sha() -> str | None:
    """env SEPPO_GIT_SHA, else `git rev-parse HEAD` of the source tree, else None."""
    if os.environ.get("SEPPO_GIT_SHA"):
        return os.environ["SEPPO_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def lineage_tags(
    config_hash: str,
    git_sha: str | None = None,
    dvc_rev: str | None = None,
    dvc_md5: str | None = None,
    kfp_run_id: str | None = None,
    bank_uri: str | None = None,
    bank_run_id: str | None = None,
) -> dict[str, str]:
    """Tags that tie a run or model version to its code, data, config and pipeline run.

    git SHA is discovered when not given; the KFP run id defaults to env KFP_RUN_ID.
    Unknown values are left out rather than recorded as stand-in values.
    """
    sha = git_sha or discover_git_sha()
    values = {
        "seppo.config_hash": config_hash,
        "seppo.git_sha": sha,
        "mlflow.source.git.commit": sha,
        "seppo.dvc_rev": dvc_rev,
        "seppo.dvc_md5": dvc_md5,
        "seppo.kfp_run_id": kfp_run_id or os.environ.get("KFP_RUN_ID"),
        "seppo.bank_uri": bank_uri,
        "seppo.bank_run_id": bank_run_id,
    }
    return {key: str(value) for key, value in values.items() if value}


def config_params(cfg: SeppoConfig) -> dict[str, Any]:
    """The resolved config as flat MLflow params (`train.beta`, ...)."""
    return flatten(cfg.model_dump(mode="json"))


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_VALUE_CHARS else text[: MAX_PARAM_VALUE_CHARS - 3] + "..."
