"""Step validate_config: cheap checks of a resolved config before any data or GPU is touched.

Parses the config JSON (schema errors come from `SeppoConfig`), then checks what can be
checked in milliseconds without credentials or torch: local paths exist, a local model
folder has unet/ and scheduler/, S3 URIs are well formed, the MLflow URI has a known scheme, the
eval scorers fit the model (image scorers for image models, video scorers for video models) and the
gate metric is scored, and (on a cluster, `shared_storage=True`) that every location the steps share
is remote, since each step runs in its own pod. A pipeline compiled for one shape (rounds,
shards, method) also checks that the submitted config has the same shape.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from seppo_lib import plugins
from seppo_lib.config import ConfigError, SeppoConfig
from seppo_lib.evaluation.scorer_choices import check_eval_config, config_is_video
from seppo_lib.methods import method_spec

MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def pipeline_shape(cfg: SeppoConfig) -> dict[str, Any]:
    """What a compiled pipeline fixes at compile time (its tasks and GPU requests)."""
    return {
        "n_rounds": cfg.train.n_rounds,
        "n_shards": cfg.sampling.n_shards,
        "needs_sampling": method_spec(cfg.train.method).needs_samples,
        "num_processes": cfg.train.num_processes,
        "registers": cfg.tracking.enabled,  # the model registry is MLflow's
    }


def check_s3_uri(field: str, uri: str) -> None:
    bucket, _, _ = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"{field}={uri!r} is not a valid S3 URI: bucket {bucket!r} must be 3-63 lowercase letters, digits, '.' or '-' "
            "(use s3://bucket/prefix)"
        )


def _check_location(field: str, uri: str, *, kind: str = "path") -> None:
    """s3:// well formed, file:// or plain path existing; `kind` says what the path must be."""
    if uri.startswith("s3://"):
        check_s3_uri(field, uri)
        return
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"{field}={uri!r} has an unsupported scheme; use a local path, file:// or s3://bucket/prefix")
    path = Path(uri.removeprefix("file://")).expanduser()
    if kind == "model":
        from seppo_lib.families.base import is_model_folder

        if not is_model_folder(path):
            raise ConfigError(
                f"{field}={uri!r} is not a diffusers model folder (needs unet/ or transformer/, and scheduler/); "
                "use a model folder, an s3:// URI, models:/NAME@ALIAS or a builtin: model"
            )
    elif not path.exists():
        raise ConfigError(f"{field}={uri!r} does not exist; fix the path or use an s3:// URI")


def _check_model(cfg: SeppoConfig, field: str, uri: str) -> None:
    """A registry reference is well formed and has a registry; builtin: models are seppo_lib.models' to check."""
    if uri.startswith("builtin:"):
        return
    if uri.startswith("models:/"):
        from seppo_lib.registry import RegistryError, parse_model_uri

        try:
            parse_model_uri(uri)
        except RegistryError as err:
            raise ConfigError(f"{field}: {err}") from None
        if not cfg.tracking.enabled:
            raise ConfigError(f"{field}={uri!r} names an MLflow registry version, but tracking.enabled is false")
        return
    _check_location(field, uri, kind="model")


def _check_data(cfg: SeppoConfig) -> None:
    d = cfg.data
    if d.dvc_rev and not d.dvc_repo:
        raise ConfigError("data.dvc_rev is set but data.dvc_repo is not; set data.dvc_repo to the data's git repository")
    if d.dvc_repo:
        if "://" not in d.dvc_repo and not d.dvc_repo.startswith("git@") and not Path(d.dvc_repo).expanduser().exists():
            raise ConfigError(f"data.dvc_repo={d.dvc_repo!r} does not exist; use a local repository path or a git URL")
        return  # data.source is a path inside that repository, resolved by prepare_data
    if not d.source.startswith("builtin:"):  # built-in sets are checked by prepare_data, which owns them
        _check_location("data.source", d.source)


def _check_tracking(cfg: SeppoConfig, shared_storage: bool) -> None:
    uri = cfg.tracking.mlflow_uri
    if uri:
        scheme = urlsplit(uri).scheme.split("+")[0]
        if scheme and scheme not in MLFLOW_SCHEMES:
            raise ConfigError(
                f"tracking.mlflow_uri={uri!r}: unsupported scheme {scheme!r}; use http(s)://host:port, "
                "sqlite:///path/mlflow.db, file:///path or a database URI"
            )
    if shared_storage and cfg.tracking.enabled:
        resolved = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        if not resolved.startswith(("http://", "https://", "databricks", "postgresql", "mysql", "mssql")):
            raise ConfigError(
                f"tracking: MLflow at {resolved or 'the default local sqlite db'} would be private to each pod; "
                "set tracking.mlflow_uri (or MLFLOW_TRACKING_URI) to the MLflow server, or tracking.enabled=false"
            )


def _check_shape(cfg: SeppoConfig, expect: dict[str, Any]) -> None:
    shape = pipeline_shape(cfg)
    diff = [f"{k}: compiled {expect[k]!r}, got {shape.get(k)!r}" for k in expect if shape.get(k) != expect[k]]
    if diff:
        raise ConfigError(
            f"config does not match the compiled pipeline ({'; '.join(diff)}); recompile with `seppo pipeline compile`"
        )


def run(config_json: str, *, expect: dict[str, Any] | None = None, shared_storage: bool = False) -> dict[str, Any]:
    """Validate `config_json`; returns its hash, shape and canonical JSON.

    `expect`: the shape the pipeline was compiled for (see `pipeline_shape`).
    `shared_storage`: steps run in separate pods, so the bank and MLflow must be remote.
    No run id: it names the resolved data and base model (`seppo_lib.identity`), which the
    pipeline's resolve_inputs step pins after this one; nothing here reads data, models or S3.
    """
    cfg = SeppoConfig.from_json(config_json)
    if expect:
        _check_shape(cfg, expect)
    _check_data(cfg)
    for field, uri in (("model.pretrained", cfg.model.pretrained), ("model.fallback", cfg.model.fallback)):
        if uri is not None:
            _check_model(cfg, field, uri)
    if cfg.bank.uri.startswith("s3://"):
        check_s3_uri("bank.uri", cfg.bank.uri)
    elif shared_storage:
        raise ConfigError(
            f"bank.uri={cfg.bank.uri!r} is local, but on a cluster every step runs in its own pod; "
            "set bank.uri=s3://bucket/prefix"
        )
    if cfg.eval.prompts not in plugins.prompt_sets:
        _check_location("eval.prompts", cfg.eval.prompts)
    # scorers fit the model kind, the gate is scored; scorer weights are checked by the evaluate step (on a
    # cluster they may be mounted in its pod only)
    check_eval_config(cfg, video=config_is_video(cfg))
    _check_tracking(cfg, shared_storage)
    return {
        "config_hash": cfg.config_hash(),
        "name": cfg.name,
        "method": cfg.train.method,
        "bank_uri": cfg.bank.uri,
        **pipeline_shape(cfg),
        "config_json": cfg.to_json(),
    }
