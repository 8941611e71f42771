"""Step prepare_data: validate the winner-only source, write latent shards, commit θ_0.

The config is resolved first (`seppo_lib.identity.resolve`): the data is read at the pinned DVC
commit and checked against the resolved md5, the base model is the pinned one. The dataset folder
carries the resolved config (`identity.write_resolved`), which every later step binds to, and
dataset.json / the MLflow run carry the identity's parts (`identity.lineage_tags`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from seppo_lib import identity, plugins
from seppo_lib.config import SeppoConfig
from seppo_lib.data.prepare import write_dataset
from seppo_lib.data.rows import ValidationReport
from seppo_lib.data.sources import WORLD_SIZE, builtin_params, iter_rows  # noqa: F401 - WORLD_SIZE: tests import it here
from seppo_lib.errors import DataError
from seppo_lib.methods import method_spec
from seppo_lib.export import registry_uri, resolve_model_uri
from seppo_lib.models import load_model
from seppo_lib.storage.base import local_io
from seppo_lib.steps.common import device, open_bank, run_dir
from seppo_lib.tracking.steps import step_tracking

logger = logging.getLogger(__name__)


def materialize_source(cfg: SeppoConfig, scratch: Path) -> tuple[Path, dict[str, Any]]:
    """A local path for `data.source` of the resolved config plus its provenance (md5, DVC rev); DataError
    when a local source changed since it was resolved."""
    cfg = identity.resolve(cfg)
    source = cfg.data.source
    if cfg.data.dvc_repo:
        from seppo_lib.data.dvc_source import resolve_dvc_path

        shutil.rmtree(scratch / "dvc", ignore_errors=True)
        resolved = resolve_dvc_path(source, cfg.data.dvc_repo, cfg.data.dvc_rev, scratch / "dvc")
        return Path(resolved.local_dir), {"source": source, "dvc_repo": resolved.repo, "dvc_rev": resolved.rev, "source_md5": resolved.md5}
    if source.startswith("builtin:"):
        path = _builtin_source(cfg, scratch)
    elif source.startswith("s3://"):
        path = scratch / "source"
        shutil.rmtree(path, ignore_errors=True)
        _download_s3_source(cfg, path)
    else:
        path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        raise DataError(f"data source {source} does not exist (set data.source to a folder, parquet file, s3:// URI or one of "
                        f"{', '.join(plugins.data_sources.names())})")  # fmt: skip
    md5 = identity.content_digest(path, cfg.bank.cache_dir)  # a local source was hashed when resolved: stat only
    resolved_md5 = cfg.resolved.data_md5 if cfg.resolved and cfg.resolved.data_version.startswith("md5:") else None
    if resolved_md5 and md5 != resolved_md5:
        raise DataError(f"data source {source} changed since the run was resolved (md5 {resolved_md5[:12]} -> {md5[:12]}); "
                        "rerun: new data is a new run id")  # fmt: skip
    return path, {"source": source, "dvc_repo": None, "dvc_rev": None, "source_md5": md5}


def _builtin_source(cfg: SeppoConfig, scratch: Path) -> Path:
    """The local data of a registered `builtin:` source (`seppo_lib.plugins.data_sources`), generated on first use."""
    params = builtin_params(cfg.data.source, max_rows=cfg.data.max_rows, paired=method_spec(cfg.train.method).needs_pairs,
                            num_frames=cfg.data.num_frames, frame_stride=cfg.data.frame_stride)  # fmt: skip
    return plugins.data_sources.get(cfg.data.source).materialize(params, scratch, Path(cfg.bank.cache_dir))


def _download_s3_source(cfg: SeppoConfig, path: Path) -> None:
    """Every key under the `data.source` prefix into `path`; keys that would land outside it are skipped."""
    from seppo_lib.paths import key_problem, safe_path
    from seppo_lib.storage import open_store

    store = open_store(cfg.data.source, cfg.storage)
    path.mkdir(parents=True, exist_ok=True)
    skipped = []
    for key in store.list(""):
        if key_problem(key) is None:
            store.get_file(key, safe_path(path, key))
        else:
            skipped.append(key)
    if skipped:
        logger.warning("skipped %d key(s) of %s that are not plain relative keys inside the prefix (e.g. %r); "
                       "rows naming them count as missing", len(skipped), cfg.data.source, skipped[0])  # fmt: skip


def run(cfg: SeppoConfig, output_dir: str | Path) -> dict[str, Any]:
    """Write the prepared dataset (and the resolved config) to `output_dir`; returns its dataset.json contents."""
    cfg = identity.resolve(cfg)
    with step_tracking(cfg, "prepare_data") as tracked:
        meta = _prepare(cfg, output_dir)
        report = meta["report"]
        tracked.log_metrics({"rows": meta["rows"], "rows_total": report["total"], **{f"dropped_{k}": v for k, v in report["dropped"].items()}}, step=0)
        tracked.set_tags({k: str(meta[k]) for k in ("source", "source_md5", "output_md5", "dvc_rev") if meta.get(k)})
        tracked.set_tags(identity.lineage_tags(cfg))
        tracked.log_artifact(Path(output_dir) / "dataset.json")
    return meta


def _prepare(cfg: SeppoConfig, output_dir: str | Path) -> dict[str, Any]:
    scratch = run_dir(cfg) / "source"
    path, provenance = materialize_source(cfg, scratch)
    base = resolve_model_uri(cfg, cfg.model.pretrained)
    model = load_model(cfg.model.pretrained, cfg.bank.cache_dir, tracking_uri=registry_uri(cfg, cfg.model.pretrained)).to(device())
    report = ValidationReport(max_image_pixels=cfg.data.max_image_pixels)
    rows = iter_rows(path, cfg.data.format, report, num_frames=cfg.data.num_frames, frame_stride=cfg.data.frame_stride)
    with local_io(output_dir, "write the prepared dataset to"):
        meta = write_dataset(
            rows,
            report,
            model,
            output_dir,
            resolution=cfg.data.resolution,
            max_tokens=cfg.data.max_caption_tokens,
            shard_size=cfg.data.shard_size,
            max_rows=cfg.data.max_rows,
            paired=method_spec(cfg.train.method).needs_pairs,
            extra_meta={**provenance, "config_hash": cfg.config_hash(), "model": cfg.model.pretrained,
                        "identity": identity.lineage_tags(cfg)},  # fmt: skip
        )
    identity.write_resolved(cfg, output_dir)
    bank = open_bank(cfg, require_initial=False)
    bank.ensure_initial(base)
    meta["bank_uri"] = bank.uri
    return meta

