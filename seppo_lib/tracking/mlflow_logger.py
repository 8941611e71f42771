"""`RunLogger` on MLflow: one run tree per pipeline run, and a spool when the server is away.

Every step opens its own `MlflowLogger` (separate processes under KFP). All steps of one
pipeline run share a parent run, found or created by the tag `seppo.run_id`; each step is
a child run (`mlflow.parentRunId`). Only `mlflow.MlflowClient` is used, never the fluent
API, so several loggers coexist in one process.

Tracking must never break training: when the server cannot be reached, calls are kept in
memory and appended to a JSONL spool file, one WARNING names the URI and the file, and
`close()` uploads the buffer if the server is back. Otherwise `replay_spool(file, uri)`
(`seppo tracking replay FILE`) uploads it later.

Replay is idempotent: each spool has a `spool_id`, its run is tagged `seppo.spool.<id>`
(`started`, then `done`), and a replayed file gets a final 'replayed' record and the
`.replayed` suffix. Replaying it again, a copy of it, or after a crash between upload and
rename finds the run and uploads nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from seppo_lib.tracking.base import flatten

# Re-exported: callers import the tracking API from this module.
from seppo_lib.tracking.mlflow_env import (  # noqa: F401
    PARENT_TAG,
    ROLE_TAG,
    SEPPO_RUN_ID_TAG,
    TrackingError,
    _param_value,
    config_params,
    default_artifact_location,
    discover_git_sha,
    ensure_reachable,
    fail_fast,
    lineage_tags,
    probe,
    resolve_tracking_uri,
)

log = logging.getLogger(__name__)


# ---- runs ------------------------------------------------------------------------


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))
        except MlflowException as err:  # created meanwhile by another step
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(f"cannot create MLflow experiment {name!r} at {tracking_uri}: {err}") from None
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore`) "
            "or set tracking.experiment to another name"
        )
    return exp.experiment_id


def _pipeline_runs(client: MlflowClient, experiment_id: str, seppo_run_id: str) -> list[Any]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SEPPO_RUN_ID_TAG}` = '{seppo_run_id}' and tags.`{ROLE_TAG}` = 'pipeline'",
        max_results=50,
    )
    return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


def find_or_create_parent(
    client: MlflowClient, experiment_id: str, seppo_run_id: str, tags: dict[str, str] | None = None
) -> str:
    """The parent run tagged `seppo.run_id`; two processes racing to create it converge on the oldest."""
    if "'" in seppo_run_id or "`" in seppo_run_id:
        raise TrackingError(f"seppo run id {seppo_run_id!r} must not contain quotes")
    found = _pipeline_runs(client, experiment_id, seppo_run_id)
    if found:
        return str(found[0].info.run_id)
    run_tags = {**(tags or {}), SEPPO_RUN_ID_TAG: seppo_run_id, ROLE_TAG: "pipeline"}
    mine = client.create_run(experiment_id, run_name=seppo_run_id, tags=run_tags).info.run_id
    winner = str(_pipeline_runs(client, experiment_id, seppo_run_id)[0].info.run_id)
    if winner != mine:
        client.delete_run(mine)
    return winner


def _start_run(
    client: MlflowClient, tracking_uri: str, spec: dict[str, Any], must_exist: bool = True
) -> tuple[str, str | None]:
    """Create the run described by an 'open' record, or reopen spec['run_id'].

    A missing spec['run_id'] is an error when `must_exist`, else a new run is created.
    """
    if spec.get("run_id"):
        try:
            run = client.get_run(spec["run_id"])
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            if must_exist:
                raise TrackingError(
                    f"MLflow run {spec['run_id']} does not exist at {tracking_uri}; pass an existing run id or none"
                ) from None
            run = None
        if run is not None:
            client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id, run.data.tags.get(PARENT_TAG)
    exp_id = get_or_create_experiment(client, spec["experiment"], tracking_uri)
    tags = dict(spec.get("tags") or {})
    parent = spec.get("parent_run_id")
    if spec.get("seppo_run_id"):
        tags[SEPPO_RUN_ID_TAG] = spec["seppo_run_id"]
        parent = parent or find_or_create_parent(client, exp_id, spec["seppo_run_id"], spec.get("parent_tags"))
    if parent:
        tags[PARENT_TAG] = parent
    tags.setdefault(ROLE_TAG, "step")
    run = client.create_run(exp_id, run_name=spec["run_name"], tags=tags)
    return run.info.run_id, parent


def _apply(client: MlflowClient, run_id: str, record: dict[str, Any]) -> None:
    kind = record["kind"]
    if kind == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in record["params"].items()])
    elif kind == "metrics":
        ts, step = record["timestamp"], record["step"]
        client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v in record["metrics"].items()])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["tags"].items()])
    elif kind == "artifact":
        path = Path(record["path"])
        if not path.exists():
            log.warning("artifact %s no longer exists; not uploaded to run %s", path, run_id)
        elif path.is_dir():
            client.log_artifacts(run_id, str(path), record["artifact_path"])
        else:
            client.log_artifact(run_id, str(path), record["artifact_path"])
    elif kind == "end":
        client.set_terminated(run_id, record["status"])
    elif kind == "end_parent":  # spooled offline: the parent is the one the replayed run was filed under
        parent = record.get("parent_run_id") or client.get_run(run_id).data.tags.get(PARENT_TAG)
        if parent:
            client.set_terminated(parent, record["status"])
    else:
        raise TrackingError(f"unknown spool record kind {kind!r}")


def _spool_tag(spec: dict[str, Any]) -> str:
    """Tag key marking the run a spool went to (old spools: a hash of their 'open' record)."""
    spool_id = spec.get("spool_id") or hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
    return f"seppo.spool.{spool_id}"


def _uploaded_run(client: MlflowClient, spec: dict[str, Any]) -> tuple[str, str] | None:
    """(run id, 'started' | 'done') of an earlier upload of this spool, if any."""
    exp = client.get_experiment_by_name(spec["experiment"])
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{_spool_tag(spec)}` LIKE '%'", max_results=1)
    return (runs[0].info.run_id, runs[0].data.tags[_spool_tag(spec)]) if runs else None


def _upload(tracking_uri: str, spec: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """Create/reopen the spooled run and apply its records, once per spool; a run whose spool
    has no 'end' record (the step died) is ended as KILLED so it does not stay RUNNING forever."""
    client = MlflowClient(tracking_uri)
    tag = _spool_tag(spec)
    with fail_fast(short_timeout=False):
        earlier = _uploaded_run(client, spec)
        if earlier and earlier[1] == "done":
            return earlier[0]
        if earlier:
            run_id = earlier[0]
        else:
            run_id, _ = _start_run(client, tracking_uri, spec, must_exist=False)
            client.set_tag(run_id, tag, "started")
        for record in records:
            _apply(client, run_id, record)
        if not any(record["kind"] == "end" for record in records):
            client.set_terminated(run_id, "KILLED")
        client.set_tag(run_id, tag, "done")
    return run_id


def _mark_replayed(path: Path, run_id: str) -> None:
    """Append the 'replayed' record and rename to `<file>.replayed`."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": "replayed", "run_id": run_id}) + "\n")
    if not path.name.endswith(".replayed"):
        path.rename(path.with_name(path.name + ".replayed"))


def replay_spool(path: str | Path, tracking_uri: str) -> str:
    """Upload a spool file written while the server was unreachable; returns the MLflow run id.

    The file is marked and renamed to `<file>.replayed` afterwards; replaying a replayed
    spool (by either name) is a no-op that returns the same run id.
    """
    path = Path(path)
    if not path.is_file() and path.with_name(path.name + ".replayed").is_file():
        path = path.with_name(path.name + ".replayed")
    if not path.is_file():
        raise FileNotFoundError(f"spool file {path} does not exist")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        records = [json.loads(line) for line in lines]
    except json.JSONDecodeError as err:
        raise TrackingError(f"{path}: line {err.lineno} is not JSON; is this a seppo spool file?") from None
    if not records or records[0].get("kind") != "open":
        raise TrackingError(f"{path} is not a seppo MLflow spool (its first line must be an 'open' record)")
    if records[-1].get("kind") == "replayed":
        log.info("%s was already replayed into MLflow run %s; nothing to do", path, records[-1]["run_id"])
        return str(records[-1]["run_id"])
    ensure_reachable(tracking_uri)
    try:
        run_id = _upload(tracking_uri, records[0], records[1:])
    except MlflowException as err:
        raise TrackingError(f"replaying {path} to {tracking_uri} failed: {err.message}") from None
    _mark_replayed(path, run_id)
    log.info("replayed %d records from %s into MLflow run %s", len(records) - 1, path, run_id)
    return run_id


# ---- the logger --------------------------------------------------------------------


def _default_spool(run_name: str) -> Path:
    root = Path(os.environ.get("SEPPO_SPOOL_DIR") or tempfile.gettempdir()) / "seppo-mlflow-spool"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_name)
    return root / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.jsonl"


class MlflowLogger:
    """A `RunLogger` writing to one MLflow run; use `MlflowLogger.open(...)`."""

    def __init__(self, tracking_uri: str, spec: dict[str, Any], spool_path: Path) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.spec = spec
        self.spool_path = spool_path
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self.pending: list[dict[str, Any]] = []  # records not yet on the server
        self._online = False
        self._warned = False
        self._closed = False

    @classmethod
    def open(
        cls,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        *,
        seppo_run_id: str | None = None,
        parent_tags: dict[str, str] | None = None,
        spool_path: str | Path | None = None,
    ) -> MlflowLogger:
        """Start a run (or reopen `run_id`) under `parent_run_id`, or under the parent tagged
        `seppo.run_id=<seppo_run_id>` (created with `parent_tags` if missing).

        Never raises for an unreachable server: the logger then spools (see module doc).
        Raises TrackingError for an unknown `run_id` or a deleted experiment.
        """
        spec = {
            "kind": "open", "spool_id": uuid.uuid4().hex, "experiment": experiment, "run_name": run_name, "run_id": run_id,
            "parent_run_id": parent_run_id, "seppo_run_id": seppo_run_id,
            "tags": dict(tags or {}), "parent_tags": dict(parent_tags or {}),
        }  # fmt: skip
        logger = cls(tracking_uri, spec, Path(spool_path) if spool_path else _default_spool(run_name))
        reason = probe(tracking_uri)
        if reason is not None:
            logger._go_offline(reason)
            return logger
        try:
            with fail_fast():
                logger.run_id, logger.parent_run_id = _start_run(logger.client, tracking_uri, spec)
        except TrackingError:
            raise
        except Exception as err:  # noqa: BLE001 - tracking must never break training
            logger._go_offline(str(err).splitlines()[0] if str(err) else type(err).__name__)
            return logger
        logger.spec["run_id"] = logger.run_id
        logger._online = True
        return logger

    @property
    def online(self) -> bool:
        return self._online

    # ---- RunLogger ------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        flat = flatten(params)
        self._record({"kind": "params", "params": {k: _param_value(v) for k, v in flat.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        self._record({"kind": "metrics", "metrics": values, "step": int(step), "timestamp": int(time.time() * 1000)})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._record({"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._record({"kind": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    # ---- lifecycle ------------------------------------------------------------
    def close(self, status: str = "FINISHED", end_parent: bool = False) -> None:
        """End the run (FINISHED/FAILED/KILLED); `end_parent` also ends the pipeline's parent run (spooled when offline)."""
        if self._closed:
            return
        self._closed = True
        self._record({"kind": "end", "status": status})
        if end_parent:
            self._record({"kind": "end_parent", "status": status, "parent_run_id": self.parent_run_id})
        if not self._online and self.pending:
            self._flush_offline()

    def __enter__(self) -> MlflowLogger:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close("FAILED" if exc_type else "FINISHED")

    # ---- internals ------------------------------------------------------------
    def _record(self, record: dict[str, Any]) -> None:
        if self._online:
            try:
                with fail_fast(short_timeout=record["kind"] != "artifact"):
                    _apply(self.client, str(self.run_id), record)
                return
            except Exception as err:  # noqa: BLE001 - tracking must never break training
                reason = probe(self.tracking_uri) if self.tracking_uri.startswith("http") else str(err)
                if reason is None:
                    log.warning("MLflow at %s rejected %s for run %s: %s", self.tracking_uri, record["kind"], self.run_id, err)
                    return
                self._go_offline(reason)
        self._spool(record)

    def _go_offline(self, reason: str) -> None:
        self._online = False
        if not self._warned:
            self._warned = True
            log.warning(
                "MLflow at %s unreachable (%s): metrics spooled to %s; rerun the step or "
                "`seppo tracking replay %s` to upload",
                self.tracking_uri, reason, self.spool_path, self.spool_path,
            )  # fmt: skip

    def _spool(self, record: dict[str, Any]) -> None:
        self.pending.append(record)
        try:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spool_path, "a", encoding="utf-8") as f:
                if f.tell() == 0:
                    f.write(json.dumps(self.spec) + "\n")
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            log.warning(
                "cannot write MLflow spool %s (%s); %d records kept in memory only", self.spool_path, err, len(self.pending)
            )

    def _flush_offline(self) -> None:
        """At close: upload what was spooled if the server is back; else keep the spool."""
        if probe(self.tracking_uri) is not None:
            return
        try:
            self.run_id = _upload(self.tracking_uri, self.spec, self.pending)
        except Exception as err:  # noqa: BLE001 - tracking must never break training
            log.warning(
                "MLflow upload of %s failed (%s); run `seppo tracking replay %s` later", self.spool_path, err, self.spool_path
            )
            return
        self.pending.clear()
        if self.spool_path.exists():
            _mark_replayed(self.spool_path, self.run_id)
        log.info("MLflow at %s is back: spooled records uploaded to run %s", self.tracking_uri, self.run_id)
