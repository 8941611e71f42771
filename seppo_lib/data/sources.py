"""Winner-only preference data sources, validated row by row.

(a) a folder with `metadata.jsonl` lines `{"file_name", "caption"}` (optional
    `"loser_file_name"` for paired data);
(b) Pick-a-Pic style parquet (one file or a folder of them) with columns `caption`,
    `jpg_0`, `jpg_1` (encoded image bytes) and `label_0` (1: image 0 won, 0: image 1
    won, 0.5: tie). Ties are dropped and counted; the loser is kept for Diffusion-DPO.

(c) a folder of video clips (GIF/MP4/WebM files or frame folders) with `metadata.jsonl`:
    see `seppo_lib.data.video`.
(d) generated sources `builtin:<name>`, registered in `seppo_lib.plugins.data_sources` (the built-in
    worlds `builtin:world` / `builtin:world-video` / `builtin:world-pickapic`: `seppo_lib.world.registration`),
    generated on first use with `builtin_params`; `builtin_source_version` is their data version (the
    generator's code and parameters), so the run identity knows them without generating anything.

Bad rows are never silently dropped and never abort: each is counted under a reason in a
`ValidationReport` (the reasons: `seppo_lib.data.rows`), and a source with no valid row raises
`DataError`.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from seppo_lib import plugins
from seppo_lib.data.rows import DECODE_ERRORS, ValidationReport, check_pixels, drop_decode_error, iter_metadata
from seppo_lib.errors import DataError
from seppo_lib.plugins import SourceOptions

logger = logging.getLogger(__name__)

PICKAPIC_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")
WORLD_SIZE = 32  # native render size of the built-in worlds; preprocess resizes to data.resolution
WORLD_SEED = 0


@dataclass(frozen=True)
class PreferenceRow:
    row_id: str
    caption: str
    winner: Image.Image
    loser: Image.Image | None = None


def _open_image(data: bytes | Path, max_pixels: int) -> Image.Image:
    img = check_pixels(Image.open(io.BytesIO(data) if isinstance(data, bytes) else data), max_pixels)
    img.load()  # decode fully: truncated files fail here, not later
    return img.convert("RGB")


def _decode(data: bytes | Path, report: ValidationReport, where: str) -> Image.Image | None:
    try:
        return _open_image(data, report.max_image_pixels)
    except FileNotFoundError:
        report.drop("missing_image", where)
    except (Image.DecompressionBombError, UnidentifiedImageError, *DECODE_ERRORS) as err:
        drop_decode_error(err, report, where, "corrupt_image")
    return None


def _caption(value: object, report: ValidationReport, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        report.drop("bad_field_type", where)
        return None
    if value is None or not value.strip():
        report.drop("empty_caption", where)
        return None
    return value.strip()


def iter_folder(root: Path, report: ValidationReport) -> Iterator[PreferenceRow]:
    if not (root / "metadata.jsonl").is_file():
        raise DataError(f"{root} has no metadata.jsonl (lines of {{\"file_name\": ..., \"caption\": ...}})")
    for rec in iter_metadata(root, report):
        winner = _decode(rec.winner, report, f"{rec.where} ({rec.name})")
        if winner is None:
            continue
        loser = None
        if rec.loser is not None:
            loser = _decode(rec.loser, report, f"{rec.where} ({rec.loser.name})")
            if loser is None:
                continue
        report.valid += 1
        yield PreferenceRow(rec.name, rec.caption, winner, loser)


def _parquet_files(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if not files:
        raise DataError(f"no parquet files under {path}")
    return files


def iter_pickapic(path: Path, report: ValidationReport) -> Iterator[PreferenceRow]:
    import pyarrow.parquet as pq

    seen: set[str] = set()  # row digests, across files
    for file in _parquet_files(path):
        try:
            pf = pq.ParquetFile(file)
        except Exception as err:  # pyarrow raises several types for a broken file
            raise DataError(f"{file} is not a readable parquet file: {err}") from None
        names = pf.schema_arrow.names
        missing = [c for c in PICKAPIC_COLUMNS if c not in names]
        if missing:
            raise DataError(f"{file} lacks column(s) {', '.join(missing)} (found: {', '.join(names)}); Pick-a-Pic needs {', '.join(PICKAPIC_COLUMNS)}")
        offset = 0
        for batch in pf.iter_batches(batch_size=256, columns=list(PICKAPIC_COLUMNS)):
            for i, rec in enumerate(batch.to_pylist()):
                report.total += 1
                where = f"{file.name} row {offset + i}"
                row = _pickapic_row(rec, report, where, seen)
                if row is not None:
                    report.valid += 1
                    yield row
            offset += batch.num_rows


def _row_digest(rec: dict[str, object]) -> str:
    h = hashlib.sha256()
    for key in PICKAPIC_COLUMNS:
        value = rec[key]
        h.update(repr(type(value)).encode() + (value if isinstance(value, bytes) else repr(value).encode()) + b"\0")
    return h.hexdigest()


def _pickapic_row(rec: dict[str, object], report: ValidationReport, where: str, seen: set[str]) -> PreferenceRow | None:
    digest = _row_digest(rec)
    if digest in seen:
        report.drop("duplicate", where)
        return None
    seen.add(digest)
    label = rec["label_0"]
    if label == 0.5:
        report.drop("tie", where)
        return None
    if label not in (0, 1):
        report.drop("bad_label", where)
        return None
    caption = _caption(rec["caption"], report, where)
    if caption is None:
        return None
    win_key, lose_key = ("jpg_0", "jpg_1") if label == 1 else ("jpg_1", "jpg_0")
    images = []
    for key in (win_key, lose_key):
        data = rec[key]
        if data is not None and not isinstance(data, bytes):
            report.drop("bad_field_type", f"{where} ({key})")
            return None
        if not data:
            report.drop("missing_image", f"{where} ({key})")
            return None
        img = _decode(data, report, f"{where} ({key})")
        if img is None:
            return None
        images.append(img)
    return PreferenceRow(where, caption, images[0], images[1])


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet")) and not (path / "metadata.jsonl").exists()):
        return "pickapic"
    from seppo_lib.data.video import looks_like_video

    return "video" if path.is_dir() and looks_like_video(path) else "folder"


def iter_rows(
    path: str | Path, fmt: str, report: ValidationReport, *, num_frames: int = 8, frame_stride: int = 1
) -> Iterator[PreferenceRow]:
    """Valid rows of a local source, counting every bad one in `report` (images over
    `report.max_image_pixels` included).

    Video folders (`fmt="video"`, or detected by `auto`) yield `seppo_lib.data.video.VideoRow`
    clips of `num_frames` frames taken every `frame_stride` frames.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data source {path} does not exist (set data.source to a folder, parquet file or a builtin: source)")
    kind = detect_format(path, fmt)
    if kind == "pickapic":
        return iter_pickapic(path, report)
    if kind == "folder":
        return iter_folder(path, report)
    if kind == "video":
        from seppo_lib.data.video import iter_video_folder

        return iter_video_folder(path, report, num_frames, frame_stride)  # type: ignore[return-value]
    raise DataError(f"unknown data.format {fmt!r}; allowed: auto, folder, pickapic, video")


def builtin_params(source: str, *, max_rows: int | None, paired: bool, num_frames: int, frame_stride: int) -> dict[str, object]:
    """Keyword arguments of the generator of a registered `builtin:` source for these settings."""
    return plugins.data_sources.get(source).params(SourceOptions(max_rows, paired, num_frames, frame_stride))


def builtin_source_version(source: str, params: dict[str, object]) -> str:
    """'<source>@<sha256[:16] of the generator's code>:<k=v,...>': the same string, the same generated bytes."""
    record = plugins.data_sources.get(source)
    code = hashlib.sha256()
    for name in record.code:
        code.update(name.encode() + b"\0" + (record.code_dir / name).read_bytes() + b"\0")
    return f"{source}@{code.hexdigest()[:16]}:{','.join(f'{k}={params[k]}' for k in sorted(params))}"
