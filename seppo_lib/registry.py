"""The MLflow model registry: register checkpoints, gate promotion, aliases, rollback.

One registered model per config name. Every registered checkpoint becomes a new version
with the alias `challenger`; the alias `champion` moves to it only when its gate metric
beats the current champion's by at least `min_margin`. With no champion yet, the first
candidate is compared the same way with the base model's score from its evaluation (when
given; else it becomes champion). The decision, the metric, the margin, both scores and
what was compared are recorded as version tags, so the
registry itself answers "why is this the champion". Versions are never deleted or
overwritten; `rollback` moves `champion` back to the version recorded in
`seppo.previous_champion`.
"""

from __future__ import annotations

import logging
import math
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from seppo_lib.errors import SeppoError
from seppo_lib.tracking.mlflow_logger import ensure_reachable

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION_TAG = "seppo.previous_champion"
METRIC_TAG = "seppo.metric."
GATE = "seppo.gate."
ARTIFACT_PATH = "model"
Direction = Literal["higher", "lower"]


class RegistryError(SeppoError):
    """Unknown model or version, bad gate input, or a refused registry request."""


@dataclass(frozen=True)
class RegistrationResult:
    model_name: str
    version: str
    decision: Literal["promoted", "rejected"]
    reason: str
    gate_metric: str
    candidate_score: float
    champion_score: float | None  # the score compared against (None: nothing to compare with)
    previous_champion: str | None  # champion version before this registration
    champion: str | None  # champion version after it
    compared_with: str = "nothing"  # "champion v<N>", "base model" or "nothing"

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def gate(
    candidate: float, champion: float | None, direction: Direction, min_margin: float, against: str = "the champion"
) -> tuple[bool, str]:
    """Promote when there is nothing to compare with, or the candidate is strictly better by >= min_margin.

    improvement = candidate - champion ("higher") or champion - candidate ("lower"); the margin
    check tolerates float rounding (0.30 - 0.25 meets a 0.05 margin).
    """
    if direction not in ("higher", "lower"):
        raise RegistryError(f"gate direction must be 'higher' or 'lower', got {direction!r}")
    if math.isnan(candidate):
        return False, "candidate score is NaN"
    if champion is None:
        return True, "no champion yet"
    improvement = candidate - champion if direction == "higher" else champion - candidate
    enough = improvement >= min_margin or math.isclose(improvement, min_margin, rel_tol=1e-9, abs_tol=1e-12)
    if improvement > 0 and enough:
        return True, f"improves on {against} by {improvement:.6g} (>= margin {min_margin:g})"
    return False, f"improvement {improvement:.6g} over {against} is not > 0 and >= margin {min_margin:g}"


@contextmanager
def _calls(what: str, tracking_uri: str) -> Iterator[None]:
    """Turn MLflow's refusals into one-line RegistryErrors (`_client` already probed the server)."""
    try:
        yield
    except MlflowException as err:
        raise RegistryError(f"{what} at {tracking_uri} failed: {err.message}") from None


def _client(tracking_uri: str) -> MlflowClient:
    ensure_reachable(tracking_uri)
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def _missing(err: MlflowException) -> bool:
    return err.error_code == "RESOURCE_DOES_NOT_EXIST"


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points at, or None (stores disagree on the error for a missing alias)."""
    version = client.get_registered_model(name).aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def _require_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if not _missing(err):
            raise
        known = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise RegistryError(
            f"no registered model {name!r} (known: {', '.join(known) or 'none'}); check the name or register a checkpoint first"
        ) from None


def _version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    _require_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as err:
        if not _missing(err):
            raise
        known = ", ".join(v["version"] for v in _versions(client, name))
        raise RegistryError(f"model {name!r} has no version {version} (versions: {known or 'none'})") from None


def _score(mv: ModelVersion, metric: str) -> float | None:
    value = mv.tags.get(METRIC_TAG + metric)
    return float(value) if value not in (None, "") else None


def _free_artifact_path(client: MlflowClient, run_id: str) -> str:
    """'model', or 'model-2', ... when this run already holds a registered folder (never overwrite one)."""
    taken = {Path(a.path).name for a in client.list_artifacts(run_id)}
    path, n = ARTIFACT_PATH, 1
    while path in taken:
        n += 1
        path = f"{ARTIFACT_PATH}-{n}"
    return path


def register_checkpoint(
    folder: Path,
    *,
    tracking_uri: str,
    model_name: str,
    run_id: str,
    metrics: dict[str, float],
    gate_metric: str,
    direction: Direction = "higher",
    min_margin: float = 0.0,
    tags: dict[str, str] | None = None,
    champion_score: float | None = None,
    base_score: float | None = None,
) -> RegistrationResult:
    """Upload `folder` as the run's `model` artifacts, register it, and gate `champion`.

    `champion_score` is the champion's gate metric measured in this same evaluation; when
    None the score stored on the champion version (tag `seppo.metric.<gate_metric>`) is used.
    `base_score` is the base model's, measured in this evaluation: the bar when there is no
    champion yet (None: the first candidate becomes champion).
    """
    folder = Path(folder)
    if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
        raise RegistryError(f"checkpoint folder {folder} is missing or empty; pass the folder holding the model files")
    if gate_metric not in metrics:
        raise RegistryError(
            f"gate metric {gate_metric!r} is not among the metrics ({', '.join(sorted(metrics))}); "
            "set eval.gate_metric to one of them"
        )
    if min_margin < 0:
        raise RegistryError(f"min_margin must be >= 0, got {min_margin}")
    if direction not in ("higher", "lower"):
        raise RegistryError(f"gate direction must be 'higher' or 'lower', got {direction!r}")
    client = _client(tracking_uri)
    with _calls(f"registering {folder} as {model_name!r}", tracking_uri):
        return _register(
            client, folder, model_name, run_id, metrics, gate_metric, direction, min_margin, tags or {},
            (champion_score, base_score),
        )  # fmt: skip


def _decide(
    champion: ModelVersion | None, candidate: float, gate_metric: str, direction: Direction, min_margin: float,
    champion_score: float | None, base_score: float | None,
) -> tuple[bool, str, float | None, str]:  # fmt: skip
    """(promote, reason, score compared with, what it was): the champion (re-scored, else its recorded
    score); with no champion the base model's score; with neither, nothing (the candidate is promoted)."""
    if champion is not None:
        against = f"champion v{champion.version}"
        score = champion_score if champion_score is not None else _score(champion, gate_metric)
        if score is None:
            return False, f"{against} has no recorded {gate_metric!r}; promote by hand if intended", None, against
        return (*gate(candidate, score, direction, min_margin, against=f"the {against}"), score, against)
    if base_score is None:
        return (*gate(candidate, None, direction, min_margin), None, "nothing")
    promote_it, reason = gate(candidate, base_score, direction, min_margin, against="the base model")
    return promote_it, f"no champion yet; {reason}", base_score, "base model"


def _register(
    client: MlflowClient, folder: Path, name: str, run_id: str, metrics: dict[str, float], gate_metric: str,
    direction: Direction, min_margin: float, tags: dict[str, str], scores: tuple[float | None, float | None],
) -> RegistrationResult:  # fmt: skip
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if _missing(err):
            raise RegistryError(f"MLflow run {run_id} does not exist; pass the run id of the training/evaluation run") from None
        raise
    artifact_path = _free_artifact_path(client, run_id)
    client.log_artifacts(run_id, str(folder), artifact_path)
    try:
        client.create_registered_model(name, description="seppo checkpoints; aliases champion/challenger")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    champion = _alias(client, name, CHAMPION)
    old = str(champion.version) if champion is not None else None
    candidate = float(metrics[gate_metric])
    promote_it, reason, compared, against = _decide(champion, candidate, gate_metric, direction, min_margin, *scores)
    decision: Literal["promoted", "rejected"] = "promoted" if promote_it else "rejected"
    version_tags = {
        **tags,
        **{METRIC_TAG + k: repr(float(v)) for k, v in metrics.items()},
        GATE + "decision": decision, GATE + "reason": reason, GATE + "metric": gate_metric,
        GATE + "direction": direction, GATE + "min_margin": repr(float(min_margin)),
        GATE + "candidate_score": repr(candidate), GATE + "compared_with": against,
        GATE + "champion_score": repr(float(compared)) if old is not None and compared is not None else "none",
        GATE + "base_score": repr(float(compared)) if against == "base model" and compared is not None else "none",
        GATE + "champion_version": old or "none",
    }  # fmt: skip
    if promote_it and old is not None:
        version_tags[PREVIOUS_CHAMPION_TAG] = old
    source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    new = str(client.create_model_version(name, source=source, run_id=run_id, tags=version_tags).version)
    client.set_registered_model_alias(name, CHALLENGER, new)
    if promote_it:
        client.set_registered_model_alias(name, CHAMPION, new)
    log.info("%s v%s %s: %s", name, new, decision, reason)
    return RegistrationResult(
        model_name=name, version=new, decision=decision, reason=reason, gate_metric=gate_metric,
        candidate_score=candidate, champion_score=compared,
        previous_champion=old, champion=new if promote_it else old, compared_with=against,
    )  # fmt: skip


def promote(name: str, version: str, *, tracking_uri: str) -> str | None:
    """Point `champion` at `version` by hand; returns the previous champion version (or None)."""
    client = _client(tracking_uri)
    with _calls(f"promoting {name} v{version}", tracking_uri):
        target = str(_version(client, name, version).version)
        current = _alias(client, name, CHAMPION)
        old = str(current.version) if current is not None else None
        if old == target:
            return old
        if old is not None:
            client.set_model_version_tag(name, target, PREVIOUS_CHAMPION_TAG, old)
        client.set_model_version_tag(name, target, "seppo.promoted_by", "manual")
        client.set_registered_model_alias(name, CHAMPION, target)
    log.info("%s: champion %s -> v%s", name, f"v{old}" if old else "none", target)
    return old


def rollback(name: str, *, tracking_uri: str) -> str:
    """Move `champion` back to the version recorded in `seppo.previous_champion`; returns it."""
    client = _client(tracking_uri)
    with _calls(f"rolling back {name}", tracking_uri):
        _require_model(client, name)
        current = _alias(client, name, CHAMPION)
        if current is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        previous = current.tags.get(PREVIOUS_CHAMPION_TAG)
        if not previous:
            raise RegistryError(
                f"{name} v{current.version} records no previous champion; use `seppo registry promote {name} VERSION`"
            )
        _version(client, name, previous)
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_model_version_tag(name, current.version, "seppo.rolled_back_to", previous)
    log.info("%s: champion rolled back v%s -> v%s", name, current.version, previous)
    return previous


def _versions(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'", max_results=10000):
        metric = mv.tags.get(GATE + "metric", "")
        rows.append({
            "version": str(mv.version),
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "decision": mv.tags.get(GATE + "decision", ""),
            "gate_metric": metric,
            "score": _score(mv, metric) if metric else None,
            "champion_score": mv.tags.get(GATE + "champion_score", ""),
            "previous_champion": mv.tags.get(PREVIOUS_CHAMPION_TAG, ""),
            "run_id": mv.run_id,
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds"),
            "source": mv.source,
            "tags": dict(mv.tags),
        })  # fmt: skip
    return sorted(rows, key=lambda row: int(row["version"]))


def list_versions(name: str, *, tracking_uri: str) -> list[dict[str, Any]]:
    """Every version of `name`, oldest first, with aliases, gate decision and score."""
    client = _client(tracking_uri)
    with _calls(f"listing versions of {name}", tracking_uri):
        _require_model(client, name)
        return _versions(client, name)


def parse_model_uri(text: str) -> tuple[str, str | None, str | None]:
    """'models:/name@alias' | 'models:/name/3' | 'name@alias' | 'name' (= @champion) -> (name, alias, version)."""
    body = text[len("models:/") :] if text.startswith("models:/") else text
    if "@" in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in body:
        name, version = body.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    elif body:
        return body, CHAMPION, None
    raise RegistryError(f"bad model reference {text!r}; use NAME, NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS")


def download(model_uri: str, dest: str | Path, *, tracking_uri: str) -> Path:
    """Download the files of e.g. `models:/<name>@champion` into `dest` (must be absent or empty)."""
    name, alias, version = parse_model_uri(model_uri)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RegistryError(f"destination {dest} exists and is not an empty folder; choose a new path")
    client = _client(tracking_uri)
    with _calls(f"downloading {model_uri}", tracking_uri):
        if alias is not None:
            _require_model(client, name)
            mv = _alias(client, name, alias)
            if mv is None:
                raise RegistryError(f"model {name!r} has no alias {alias!r}; see `seppo registry ls {name}`")
        else:
            mv = _version(client, name, str(version))
        staging = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=str(staging), tracking_uri=tracking_uri
            )
            if dest.exists():
                dest.rmdir()
            Path(local).rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("downloaded %s v%s to %s", name, mv.version, dest)
    return dest
