"""Run identity: what determines a run's trained weights, and the run id named after it.

`resolve(cfg)` pins a config's inputs and records them in `cfg.resolved` (`ResolvedInputs`), so
they travel in the config JSON between pipeline steps and are never resolved twice:

- **data version** (`resolved.data_version`): a DVC source (`data.dvc_repo`) is read at the commit
  SHA `data.dvc_rev` (a branch, tag or SHA) points at now, plus the md5 its `.dvc` file records
  (`dvc:<sha>:<md5>`); `data.dvc_rev` is rewritten to that SHA. A local folder or parquet file:
  `md5:<content md5>` (`content_digest`). An s3:// prefix: `s3:<md5 of the key/size listing>` (an
  object rewritten with the same size is not seen: use versioned prefixes). `builtin:world` /
  `builtin:world-video`: the generator's code hash and parameters (`data.sources.builtin_source_version`).
- **base model** (`resolved.base_model`): `models:/NAME@ALIAS` or `models:/NAME/VERSION` become
  `models:/NAME/<version>` as the registry has it now (`model.pretrained` is rewritten to it); when
  an alias or the model does not exist yet and `model.fallback` is set, the fallback is resolved
  instead (`resolved.fallback`, part of the identity; logged). A folder (and the shipped
  `builtin:world-base` / `builtin:world-video-base`): `md5:<content md5>` of its files, cached by
  path, size and mtime under `<bank.cache_dir>/digests/`, so a 5 GB model is read once.
  `builtin:tiny-random[:variant]`: its builder's code hash. `s3://`: `s3:<md5 of the listing>`.

The run id is `<name>-<sha256[:10]>` of `payload(cfg)`: the values of `INCLUDED` (training fields,
the data version and the base model). `EXCLUDED` fields never change it: evaluation, registry,
tracking and storage settings, every location (workdir, bank, cache, where the data and model live:
their content is in the versions), the requested (unpinned) revision and model, and `name`, the
id's prefix. Every config field is in exactly one of the two (tests/unit/test_identity.py).
`bank.run_id` set explicitly still wins: an old bank (ids from before this scheme) keeps resuming
with `bank.run_id=<old id>`.

Steps resolve on entry; pipeline components read the resolved config their input artifact carries
(`write_resolved` / `bind`), so a branch or a champion moving mid-run cannot change a running
pipeline's run id. `lineage_tags` are the MLflow tags of every part.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seppo_lib.config import ConfigError, SeppoConfig
from seppo_lib.errors import DataError, ModelError
from seppo_lib.methods import method_spec

logger = logging.getLogger(__name__)

RESOLVED_CONFIG = "resolved_config.json"
PINNED = ("data.dvc_rev", "model.pretrained")  # rewritten by resolve; the request is kept in resolved.*
#: id(unresolved config) -> (a weak reference to it, its resolved config): each instance resolves once
_MEMO: dict[int, tuple[weakref.ref[SeppoConfig], SeppoConfig]] = {}

_TRAIN = ("method", "beta", "criterion", "n_rounds", "updates_per_round", "batch_size", "grad_accum", "num_processes",
          "lr", "warmup_steps", "lr_scheduler", "adam_beta1", "adam_beta2", "weight_decay", "max_grad_norm", "mixed_precision", "seed",
          "gradient_checkpointing", "channels_last", "adamw_impl", "compile")  # fmt: skip
_SAMPLING = ("scheduler", "num_inference_steps", "guidance_scale", "eta", "batch_size", "n_shards", "decode_roundtrip",
             "precision", "channels_last", "compile")  # fmt: skip
_DATA = ("format", "resolution", "num_frames", "frame_stride", "random_flip", "caption_dropout", "max_rows", "shard_size",
         "max_caption_tokens", "max_image_pixels")  # fmt: skip
_LORA = ("rank", "alpha", "dropout", "target_modules")
#: fields that shape the weights only under a setting (path prefix -> (field, value)): elsewhere they stay out of the
#: payload, so a full run's id is what it was before model.lora existed
ONLY_WHEN: dict[str, tuple[str, str]] = {"model.lora.": ("model.trainable", "lora")}
#: What determines the weights (dotted config paths). Speed switches (channels_last, compile, adamw_impl,
#: sampling batch size and shards) stay in: they agree "within float rounding", not bit for bit, and a
#: bank's rounds must come from one numerics. Move a switch to EXCLUDED only once it is bit-identical.
INCLUDED: tuple[str, ...] = (
    *(f"data.{k}" for k in _DATA),
    "model.trainable",
    *(f"model.lora.{k}" for k in _LORA),
    *(f"train.{k}" for k in _TRAIN),
    "bank.reference", "bank.reference_resample",
    *(f"sampling.{k}" for k in _SAMPLING),
    "resolved.data_version", "resolved.base_model", "resolved.fallback",
)  # fmt: skip
#: Never part of the identity, with the reason.
EXCLUDED: dict[str, str] = {
    "name": "the run id's prefix",
    "workdir": "a location",
    "data.source": "a location; resolved.data_version is its content",
    "data.dvc_repo": "a location; resolved.data_version is its content",
    "data.dvc_rev": "pinned to resolved.data_rev; resolved.data_version is its content",
    "model.pretrained": "pinned; resolved.base_model is the exact model",
    "model.fallback": "resolved.base_model / resolved.fallback say whether and which fallback was used",
    "bank.uri": "a location", "bank.run_id": "overrides the id itself", "bank.cache_dir": "a location",
    **{f"eval.{k}": "evaluation" for k in ("prompts", "max_prompts", "images_per_prompt", "seed", "scorers",
                                           "scorer_paths", "gate_metric", "bootstrap")},
    **{f"storage.{k}": "storage access" for k in ("s3_endpoint_url", "s3_region", "s3_addressing_style",
                                                  "s3_max_attempts", "s3_time_budget_s")},
    **{f"tracking.{k}": "tracking" for k in ("mlflow_uri", "experiment", "enabled")},
    **{f"registry.{k}": "the registry" for k in ("model_name", "gate_direction", "min_margin")},
    "resolved.data_rev": "in resolved.data_version", "resolved.data_md5": "in resolved.data_version",
    "resolved.data_rev_requested": "a branch name is not a version",
    "resolved.base_model_requested": "an alias is not a version",
}  # fmt: skip


@dataclass(frozen=True)
class _Version:
    version: str  # what enters the identity
    pinned: str | None  # what the config field is rewritten to (None: unchanged)
    md5: str | None = None
    fallback: bool = False


# ---- the identity --------------------------------------------------------------------


def _get(doc: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        doc = doc[part]
    return doc


def payload(cfg: SeppoConfig) -> dict[str, Any]:
    """The values the run id hashes (`INCLUDED`), of the resolved config."""
    doc = resolve(cfg).model_dump(mode="json")
    off = [prefix for prefix, (field, value) in ONLY_WHEN.items() if _get(doc, field) != value]
    return {path: _get(doc, path) for path in INCLUDED if not any(path.startswith(prefix) for prefix in off)}


def identity_hash(cfg: SeppoConfig) -> str:
    return hashlib.sha256(json.dumps(payload(cfg), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_id(cfg: SeppoConfig) -> str:
    """'<name>-<identity hash[:10]>' (`SeppoConfig.run_id` adds the explicit bank.run_id)."""
    return f"{cfg.name}-{identity_hash(cfg)[:10]}"


def describe(cfg: SeppoConfig) -> str:
    """'data <SHA or md5, short>, base <model>' for log lines."""
    cfg = resolve(cfg)
    r = cfg.resolved
    assert r is not None  # resolve() fills it
    data = (r.data_rev or r.data_md5 or "")[:12] or ":".join(r.data_version.split(":")[:2])  # builtin: without parameters
    base = cfg.model.pretrained
    if not r.base_model.startswith("models:/"):
        base += f" ({r.base_model.rsplit('@', 1)[-1].split(':')[-1][:12]})"
    return f"data {data}, base {base}{' (model.fallback)' if r.fallback else ''}"


def already_trained_line(cfg: SeppoConfig) -> str:
    return f"already trained: {cfg.run_id} ({describe(cfg)})"


def lineage_tags(cfg: SeppoConfig) -> dict[str, str]:
    """MLflow tags of every part of the identity (runs, dataset metadata, registered versions)."""
    from seppo_lib.tracking.mlflow_env import discover_git_sha

    cfg = resolve(cfg)
    r = cfg.resolved
    assert r is not None
    tags = {
        "seppo.run_id": cfg.run_id, "seppo.identity_hash": identity_hash(cfg), "seppo.data_version": r.data_version,
        "seppo.data_rev": r.data_rev, "seppo.data_md5": r.data_md5, "seppo.data_rev_requested": r.data_rev_requested,
        "seppo.base_model": r.base_model, "seppo.base_model_uri": cfg.model.pretrained,
        "seppo.base_model_requested": r.base_model_requested, "seppo.base_model_fallback": str(r.fallback).lower(),
        "seppo.git_sha": discover_git_sha(),
    }  # fmt: skip
    return {k: str(v) for k, v in tags.items() if v not in (None, "")}


# ---- resolving -----------------------------------------------------------------------


def resolve(cfg: SeppoConfig, *, data_rev: str = "", base_model: str = "") -> SeppoConfig:
    """`cfg` with its inputs pinned and `resolved` filled; a resolved config is returned as it is.

    data_rev / base_model (the pipeline parameters; "" = the config's) replace data.dvc_rev and
    model.pretrained first. An unresolved config instance is resolved once (memoized).
    """
    if cfg.resolved is not None:
        if data_rev or base_model:
            raise ConfigError("data_rev / base_model given for an already resolved config; pass the unresolved config")
        return cfg
    memo = _MEMO.get(id(cfg))
    if not (data_rev or base_model) and memo is not None and memo[0]() is cfg:
        return memo[1]
    check_parameters(cfg, data_rev)
    doc = cfg.model_dump(mode="json")
    if data_rev:
        doc["data"]["dvc_rev"] = data_rev
    if base_model:
        doc["model"]["pretrained"] = base_model
    requested = SeppoConfig.from_json(json.dumps(doc))
    data, base = data_version(requested), base_model_version(requested)
    doc["data"]["dvc_rev"] = data.pinned or doc["data"]["dvc_rev"]
    doc["model"]["pretrained"] = base.pinned
    doc["resolved"] = {
        "data_version": data.version, "data_rev": data.pinned, "data_md5": data.md5,
        "data_rev_requested": requested.data.dvc_rev if data.pinned else None, "base_model": base.version,
        "base_model_requested": requested.model.pretrained, "fallback": base.fallback,
    }  # fmt: skip
    out = SeppoConfig.from_json(json.dumps(doc))
    logger.info("resolved %s: %s", out.run_id, describe(out))
    if not (data_rev or base_model):
        _MEMO[id(cfg)] = (weakref.ref(cfg), out)
        weakref.finalize(cfg, _MEMO.pop, id(cfg), None)
    return out


def check_parameters(cfg: SeppoConfig, data_rev: str) -> None:
    """One-line ConfigError for a data_rev pipeline parameter the config cannot use."""
    if data_rev and not cfg.data.dvc_repo:
        raise ConfigError(f"data_rev={data_rev!r} needs a DVC data source: set data.dvc_repo (data_rev picks its git revision)")


def data_version(cfg: SeppoConfig) -> _Version:
    """The version of `data.source` (see the module docstring); reads no data for DVC, S3 or builtin sources."""
    d, source = cfg.data, cfg.data.source
    if d.dvc_repo:
        from seppo_lib.data.dvc_source import dvc_version

        v = dvc_version(source, d.dvc_repo, d.dvc_rev)
        return _Version(f"dvc:{v.rev}:{v.md5}", v.rev, v.md5)
    if source.startswith("builtin:"):
        from seppo_lib.data.sources import builtin_params, builtin_source_version

        params = builtin_params(source, max_rows=d.max_rows, paired=method_spec(cfg.train.method).needs_pairs,
                                num_frames=d.num_frames, frame_stride=d.frame_stride)  # fmt: skip
        return _Version(builtin_source_version(source, params), None)
    if source.startswith("s3://"):
        listing = _s3_listing(cfg, source, "data.source")
        return _Version(f"s3:{listing}", None, listing)
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        raise DataError(f"data source {source} does not exist (set data.source to a folder, parquet file, s3:// URI, builtin:world or builtin:world-video)")
    md5 = content_digest(path, cfg.bank.cache_dir)
    return _Version(f"md5:{md5}", None, md5)


def base_model_version(cfg: SeppoConfig, uri: str | None = None) -> _Version:
    """The exact base model `uri` (default model.pretrained) is; a missing registry alias falls back to
    model.fallback when it is set (logged), else raises the registry's one-line error."""
    from seppo_lib.model_uris import builtin_model
    from seppo_lib.models import REGISTRY_PREFIX, pin_registry_uri, resolve_model_dir
    from seppo_lib.registry import RegistryError, parse_model_uri
    from seppo_lib.tracking.mlflow_env import resolve_tracking_uri

    uri = uri or cfg.model.pretrained
    if uri.startswith(REGISTRY_PREFIX):
        try:
            pinned = pin_registry_uri(uri, resolve_tracking_uri(cfg))
        except RegistryError as err:
            if uri != cfg.model.pretrained or not cfg.model.fallback or parse_model_uri(uri)[1] is None:
                raise
            logger.info("%s; using model.fallback=%s as the base model", err, cfg.model.fallback)
            found = base_model_version(cfg, cfg.model.fallback)
            return _Version(found.version, found.pinned, fallback=True)
        return _Version(pinned, pinned)
    built = builtin_model(uri).version(uri) if uri.startswith("builtin:") else None  # raises for an unknown name
    if built is not None:  # a model built by code (builtin:tiny-random): the builder's code is its version
        return _Version(built, uri)
    if uri.startswith("s3://"):
        return _Version(f"s3:{_s3_listing(cfg, uri, 'model.pretrained')}", uri)
    if uri.startswith("builtin:"):
        folder = resolve_model_dir(uri, cfg.bank.cache_dir)
    else:
        folder = Path(uri.removeprefix("file://")).expanduser()
        from seppo_lib.families.base import is_model_folder

        if not is_model_folder(folder):
            raise ModelError(f"{uri} is not a diffusers model folder (needs unet/ or transformer/, and scheduler/)")
    return _Version(f"md5:{content_digest(folder, cfg.bank.cache_dir)}", uri)


def _s3_listing(cfg: SeppoConfig, uri: str, field: str) -> str:
    """md5 over the (key, size) listing of an S3 prefix."""
    from seppo_lib.storage import open_store

    sizes = open_store(uri, cfg.storage).sizes("")
    if not sizes:
        raise DataError(f"{field}={uri} lists no objects; check the bucket and prefix")
    return hashlib.md5("".join(f"{key}\0{size}\n" for key, size in sorted(sizes.items())).encode()).hexdigest()


# ---- content digests -----------------------------------------------------------------


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def content_digest(path: str | Path, cache_dir: str | Path) -> str:
    """md5 over (relative path, md5 of the content) of every file under `path` (or of the one file),
    dot-files skipped. Per-file md5s are cached by size and mtime in <cache_dir>/digests/, so an
    unchanged folder is read once; a changed file is read again."""
    root = Path(path).resolve()
    if root.is_file():
        files = {".": root}
    else:
        files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}  # fmt: skip
    cache_file = Path(cache_dir) / "digests" / f"{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json"
    try:
        cached = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cached = {}
    fresh, total = {}, hashlib.md5()
    for rel, file in files.items():
        stat = file.stat()
        entry = cached.get(rel)
        digest = entry[2] if isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns] else _file_md5(file)
        fresh[rel] = [stat.st_size, stat.st_mtime_ns, digest]
        total.update(f"{rel}\0{digest}\n".encode())
    if fresh != cached:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(fresh))
        tmp.replace(cache_file)
    return total.hexdigest()


# ---- the resolved config in artifacts --------------------------------------------------


def write_resolved(cfg: SeppoConfig, folder: str | Path) -> Path:
    """Save the resolved config into an artifact folder, for the steps that read it (`bind`)."""
    out = Path(folder) / RESOLVED_CONFIG
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(resolve(cfg).to_json())
    return out


def _leaves(doc: dict[str, Any]) -> dict[str, Any]:
    """{'train.beta': 2000.0, 'name': ..., 'resolved': None, ...}: sections flattened one level."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    return out


def bind(cfg: SeppoConfig, folder: str | Path) -> SeppoConfig:
    """The resolved config an earlier step saved in artifact `folder`, checked to be `cfg` resolved
    (every field equal but the pinned ones); never resolves again."""
    path = Path(folder) / RESOLVED_CONFIG
    if not path.is_file():
        raise ConfigError(f"{path} is missing: the input artifact was not written by prepare_data/train_round of this seppo version")
    resolved = SeppoConfig.from_json(path.read_text())
    mine, theirs = _leaves(cfg.model_dump(mode="json")), _leaves(resolved.model_dump(mode="json"))
    compared = [k for k in set(mine) | set(theirs) if k not in PINNED and (cfg.resolved or k.split(".")[0] != "resolved")]
    differ = sorted(k for k in compared if mine.get(k) != theirs.get(k))
    if differ:
        raise ConfigError(f"{path} was resolved from another config (differs in {', '.join(differ[:5])}); run the whole pipeline with one config")
    return resolved
