"""Turn validated rows into latent + text-embedding shards (images: (C, H, W) latents; clips: (C, F, H, W))."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from seppo_lib.data.shards import DATASET_JSON, SHARD_HIDDEN, UNCOND_HIDDEN, write_shard
from seppo_lib.data.sources import PreferenceRow, ValidationReport
from seppo_lib.errors import DataError
from seppo_lib.models import DiffusionModel
from seppo_lib.progress import Progress

logger = logging.getLogger(__name__)

ENCODE_BATCH = 32


def preprocess(image: Image.Image, resolution: int) -> torch.Tensor:
    """Resize the short side to `resolution` (bicubic), center crop, scale to [-1, 1], (3, H, W)."""
    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)


def preprocess_clip(frames: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """Every frame through `preprocess`, stacked along a frame axis: (3, F, H, W) in [-1, 1]."""
    return torch.stack([preprocess(frame, resolution) for frame in frames], dim=1)


def _pixels(item: Image.Image | Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """(3, H, W) for an image, (3, F, H, W) for a clip (a sequence of frames from a video source)."""
    return preprocess(item, resolution) if isinstance(item, Image.Image) else preprocess_clip(item, resolution)


def _chunks(rows: Iterable[PreferenceRow], size: int) -> Iterator[list[PreferenceRow]]:
    chunk: list[PreferenceRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_kind(model: DiffusionModel, row: PreferenceRow) -> None:
    """Clips need a video UNet and images an image UNet; say which when they do not match."""
    clip = not isinstance(row.winner, Image.Image)
    if clip != model.is_video:
        kind, unet = ("video clips", "an image") if clip else ("images", "a video")
        raise DataError(
            f"the data holds {kind} but {model.source} is {unet} model ({type(model.unet).__name__}); "
            "pair video data with a UNet3DConditionModel/UNetMotionModel model and image data with a UNet2DConditionModel"
        )


def _encode_chunk(model: DiffusionModel, rows: list[PreferenceRow], resolution: int, max_tokens: int, paired: bool) -> dict[str, torch.Tensor]:
    _check_kind(model, rows[0])
    out = {
        "latents_w": model.encode_images(torch.stack([_pixels(r.winner, resolution) for r in rows])),
        **model.condition([r.caption for r in rows], max_tokens, resolution).to_flat(SHARD_HIDDEN),
    }
    if paired:
        out["latents_l"] = model.encode_images(torch.stack([_pixels(r.loser, resolution) for r in rows]))  # type: ignore[arg-type]
    return out


def write_dataset(
    rows: Iterable[PreferenceRow],
    report: ValidationReport,
    model: DiffusionModel,
    out_dir: str | Path,
    *,
    resolution: int,
    max_tokens: int,
    shard_size: int,
    max_rows: int | None,
    paired: bool,
    extra_meta: dict[str, Any],
) -> dict[str, Any]:
    """Encode rows into shards under `out_dir`; returns the dataset.json contents."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards, sizes, kept = [], [], 0
    pending: dict[str, list[torch.Tensor]] = {}
    captions: list[str] = []
    row_ids: list[str] = []
    latent_shape: list[int] = []
    total = min(len(rows), max_rows or len(rows)) if isinstance(rows, Sized) else None
    bar: Progress[None] = Progress(desc="prepare_data", unit="row", total=total)
    for chunk in _chunks(rows, ENCODE_BATCH):
        if paired and any(r.loser is None for r in chunk):
            raise DataError("paired data (method dpo) needs a loser image for every row; this source has winners only")
        chunk = chunk[: max_rows - kept] if max_rows else chunk
        enc = _encode_chunk(model, chunk, resolution, max_tokens, paired)
        latent_shape = list(enc["latents_w"].shape[1:])
        for k, v in enc.items():
            pending.setdefault(k, []).append(v)
        captions += [r.caption for r in chunk]
        row_ids += [r.row_id for r in chunk]
        kept += len(chunk)
        bar.update(len(chunk))
        while len(captions) >= shard_size:
            n = shard_size
            merged = {k: torch.cat(v) for k, v in pending.items()}
            shards.append(write_shard(out_dir, len(shards), {k: v[:n] for k, v in merged.items()}, captions[:n], row_ids[:n]))
            sizes.append(n)
            pending = {k: [v[n:]] for k, v in merged.items()}
            captions, row_ids = captions[n:], row_ids[n:]
        if max_rows and kept >= max_rows:
            break
    if captions:
        merged = {k: torch.cat(v) for k, v in pending.items()}
        shards.append(write_shard(out_dir, len(shards), merged, captions, row_ids))
        sizes.append(len(captions))
    bar.close()
    if kept == 0:
        raise DataError(f"no valid rows in the data source: {report.summary()}")
    save_file(model.condition([""], max_tokens, resolution).to_flat(UNCOND_HIDDEN), str(out_dir / "uncond.safetensors"))
    meta = {
        "rows": kept,
        "shards": shards,
        "shard_sizes": sizes,
        "latent_shape": latent_shape,
        "paired": paired,
        "resolution": resolution,
        "max_tokens": max_tokens,
        "report": report.to_json(),
        **extra_meta,
    }
    meta["output_md5"] = dir_md5(out_dir)
    (out_dir / DATASET_JSON).write_text(json.dumps(meta, indent=1))
    logger.info("prepared %d rows in %d shards at %s (%s)", kept, len(shards), out_dir, report.summary())
    return meta


def dir_md5(root: str | Path, exclude: tuple[str, ...] = (DATASET_JSON,)) -> str:
    """md5 over (relative path, content) of every file under `root`, in sorted order."""
    root = Path(root)
    h = hashlib.md5()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in exclude):
        h.update(path.relative_to(root).as_posix().encode())
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()
