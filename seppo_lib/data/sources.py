"""Winner-only preference data sources, validated row by row.

(a) a folder with `metadata.jsonl` lines `{"file_name", "caption"}` (optional
    `"loser_file_name"` for paired data);
(b) Pick-a-Pic style parquet (one file or a folder of them) with columns `caption`,
    `jpg_0`, `jpg_1` (encoded image bytes) and `label_0` (1: image 0 won, 0: image 1
    won, 0.5: tie). Ties are dropped and counted; the loser is kept for Diffusion-DPO.

(c) a folder of video clips (GIF/MP4/WebM files or frame folders) with `metadata.jsonl`:
    see `seppo_lib.data.video`.

Bad rows are never silently dropped: each is counted under a reason in a
`ValidationReport`, and a source with no valid row raises `DataError`.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from seppo_lib.errors import DataError

logger = logging.getLogger(__name__)

PICKAPIC_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")


@dataclass(frozen=True)
class PreferenceRow:
    row_id: str
    caption: str
    winner: Image.Image
    loser: Image.Image | None = None


@dataclass
class ValidationReport:
    total: int = 0
    valid: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def drop(self, reason: str, where: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, where)
        logger.debug("dropping row %s: %s", where, reason)

    def to_json(self) -> dict[str, object]:
        return {"total": self.total, "valid": self.valid, "dropped": dict(self.dropped), "examples": self.examples}

    def summary(self) -> str:
        parts = ", ".join(f"{n} {r} (e.g. {self.examples[r]})" for r, n in sorted(self.dropped.items()))
        return f"{self.valid}/{self.total} rows valid" + (f"; dropped: {parts}" if parts else "")


def _open_image(data: bytes | Path) -> Image.Image:
    img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    img.load()  # decode fully: truncated files fail here, not later
    return img.convert("RGB")


def _decode(data: bytes | Path, report: ValidationReport, where: str) -> Image.Image | None:
    try:
        return _open_image(data)
    except FileNotFoundError:
        report.drop("missing_image", where)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        report.drop("corrupt_image", where)
    return None


def _caption(value: object, report: ValidationReport, where: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        report.drop("empty_caption", where)
        return None
    return value.strip()


def iter_folder(root: Path, report: ValidationReport) -> Iterator[PreferenceRow]:
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise DataError(f"{root} has no metadata.jsonl (lines of {{\"file_name\": ..., \"caption\": ...}})")
    with meta.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.total += 1
            where = f"{meta.name}:{line_no}"
            try:
                rec = json.loads(line)
                name = rec["file_name"]
            except (ValueError, KeyError, TypeError):
                report.drop("bad_metadata_line", where)
                continue
            caption = _caption(rec.get("caption"), report, where)
            if caption is None:
                continue
            winner = _decode(root / name, report, f"{where} ({name})")
            if winner is None:
                continue
            loser = None
            if rec.get("loser_file_name"):
                loser = _decode(root / rec["loser_file_name"], report, f"{where} ({rec['loser_file_name']})")
                if loser is None:
                    continue
            report.valid += 1
            yield PreferenceRow(str(name), caption, winner, loser)


def _parquet_files(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if not files:
        raise DataError(f"no parquet files under {path}")
    return files


def iter_pickapic(path: Path, report: ValidationReport) -> Iterator[PreferenceRow]:
    import pyarrow.parquet as pq

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
                row = _pickapic_row(rec, report, where)
                if row is not None:
                    report.valid += 1
                    yield row
            offset += batch.num_rows


def _pickapic_row(rec: dict[str, object], report: ValidationReport, where: str) -> PreferenceRow | None:
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
        if not isinstance(data, bytes) or not data:
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
    """Valid rows of a local source, counting every bad one in `report`.

    Video folders (`fmt="video"`, or detected by `auto`) yield `seppo_lib.data.video.VideoRow`
    clips of `num_frames` frames taken every `frame_stride` frames.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data source {path} does not exist (set data.source to a folder, parquet file or builtin:world)")
    kind = detect_format(path, fmt)
    if kind == "pickapic":
        return iter_pickapic(path, report)
    if kind == "folder":
        return iter_folder(path, report)
    if kind == "video":
        from seppo_lib.data.video import iter_video_folder

        return iter_video_folder(path, report, num_frames, frame_stride)  # type: ignore[return-value]
    raise DataError(f"unknown data.format {fmt!r}; allowed: auto, folder, pickapic, video")
