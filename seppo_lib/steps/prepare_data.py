"""Step prepare_data: validate the winner-only source, write latent shards, commit θ_0."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from seppo_lib.config import SeppoConfig
from seppo_lib.data.prepare import dir_md5, write_dataset
from seppo_lib.data.rows import ValidationReport
from seppo_lib.data.sources import iter_rows
from seppo_lib.errors import DataError
from seppo_lib.models import load_model, resolve_model_dir
from seppo_lib.storage.base import local_io
from seppo_lib.steps.common import device, open_bank, run_dir
from seppo_lib.tracking.steps import step_tracking

logger = logging.getLogger(__name__)

WORLD_SIZE = 32  # native render size of the built-in world; preprocess resizes to data.resolution


def materialize_source(cfg: SeppoConfig, scratch: Path) -> tuple[Path, dict[str, Any]]:
    """A local path for `data.source` plus its provenance (md5, DVC rev)."""
    source = cfg.data.source
    if cfg.data.dvc_repo:
        from seppo_lib.data.dvc_source import resolve_dvc_path

        shutil.rmtree(scratch / "dvc", ignore_errors=True)
        resolved = resolve_dvc_path(source, cfg.data.dvc_repo, cfg.data.dvc_rev, scratch / "dvc")
        return Path(resolved.local_dir), {"source": source, "dvc_repo": resolved.repo, "dvc_rev": resolved.rev, "source_md5": resolved.md5}
    if source == "builtin:world":
        from seppo_lib.world.generate import generate_dataset

        path = scratch / "world-train"
        if not (path / "metadata.jsonl").is_file():
            shutil.rmtree(path, ignore_errors=True)
            generate_dataset(path, split="train", n=cfg.data.max_rows, seed=0, paired=cfg.train.method == "dpo", size=WORLD_SIZE)
    elif source == "builtin:world-video":
        path = _world_video(cfg, scratch)
    elif source.startswith("s3://"):
        path = scratch / "source"
        shutil.rmtree(path, ignore_errors=True)
        _download_s3_source(cfg, path)
    else:
        path = Path(source.removeprefix("file://"))
    if not path.exists():
        raise DataError(f"data source {source} does not exist (set data.source to a folder, parquet file, s3:// URI, builtin:world or builtin:world-video)")
    md5 = dir_md5(path, exclude=()) if path.is_dir() else _file_md5(path)
    return path, {"source": source, "dvc_repo": None, "dvc_rev": None, "source_md5": md5}


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


def _world_video(cfg: SeppoConfig, scratch: Path) -> Path:
    """The built-in video world's training clips (GIFs), long enough for num_frames x frame_stride."""
    from seppo_lib.data.video import frames_needed
    from seppo_lib.world.video import generate_video_dataset

    frames = max(2, frames_needed(cfg.data.num_frames, cfg.data.frame_stride))
    path = scratch / f"world-video-train-f{frames}"
    if not (path / "metadata.jsonl").is_file():
        shutil.rmtree(path, ignore_errors=True)
        generate_video_dataset(path, split="train", n=cfg.data.max_rows, seed=0, size=WORLD_SIZE, frames=frames)
    return path


def _file_md5(path: Path) -> str:
    import hashlib

    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def run(cfg: SeppoConfig, output_dir: str | Path) -> dict[str, Any]:
    """Write the prepared dataset to `output_dir`; returns its dataset.json contents."""
    with step_tracking(cfg, "prepare_data") as tracked:
        meta = _prepare(cfg, output_dir)
        report = meta["report"]
        tracked.log_metrics({"rows": meta["rows"], "rows_total": report["total"], **{f"dropped_{k}": v for k, v in report["dropped"].items()}}, step=0)
        tracked.set_tags({k: str(meta[k]) for k in ("source", "source_md5", "output_md5", "dvc_rev") if meta.get(k)})
        tracked.log_artifact(Path(output_dir) / "dataset.json")
    return meta


def _prepare(cfg: SeppoConfig, output_dir: str | Path) -> dict[str, Any]:
    scratch = run_dir(cfg) / "source"
    path, provenance = materialize_source(cfg, scratch)
    model = load_model(cfg.model.pretrained, cfg.bank.cache_dir).to(device())
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
            paired=cfg.train.method == "dpo",
            extra_meta={**provenance, "config_hash": cfg.config_hash(), "model": cfg.model.pretrained},
        )
    bank = open_bank(cfg, require_initial=False)
    bank.ensure_initial(resolve_model_dir(cfg.model.pretrained, cfg.bank.cache_dir))
    meta["bank_uri"] = bank.uri
    return meta

