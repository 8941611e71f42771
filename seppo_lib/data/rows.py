"""Row validation shared by every data source: the report of bad rows, `metadata.jsonl` parsing, image limits.

Every row problem is a counted bad row under a reason, never an exception:

- `bad_encoding`: the metadata line is not UTF-8;
- `bad_metadata_line`: not JSON, not a JSON object, or no `file_name`;
- `bad_field_type`: `file_name` / `loser_file_name` not a non-empty string, `caption` not a string;
- `empty_caption`: no caption, or only whitespace;
- `path_outside_source`: a file name that is absolute, climbs out (`../`) or is a symlink leading
  outside the source folder (an S3 source is downloaded into a folder first: outside its prefix);
- `duplicate`: the same (file, loser file, caption) as an earlier row (Pick-a-Pic: same caption and bytes);
- `image_too_large`: the header claims more than `max_image_pixels` (width × height; checked before
  decoding); `decompression_bomb`: Pillow itself refused the header (over twice `PIL.Image.MAX_IMAGE_PIXELS`).
"""

from __future__ import annotations

import json
import logging
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from seppo_lib.paths import UnsafePathError, safe_path

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 8192 * 8192  # default data.max_image_pixels: 64 Mpx, 192 MiB as RGB
# what decoders raise on damaged or hostile files (Pillow, imageio / PyAV)
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, EOFError, RuntimeError, IndexError, struct.error,
)


@dataclass
class ValidationReport:
    total: int = 0
    valid: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    max_image_pixels: int = MAX_IMAGE_PIXELS

    def drop(self, reason: str, where: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, where)
        logger.debug("dropping row %s: %s", where, reason)

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total, "valid": self.valid, "dropped": dict(self.dropped),
            "examples": self.examples, "max_image_pixels": self.max_image_pixels,
        }  # fmt: skip

    def summary(self) -> str:
        parts = ", ".join(f"{n} {r} (e.g. {self.examples[r]})" for r, n in sorted(self.dropped.items()))
        return f"{self.valid}/{self.total} rows valid" + (f"; dropped: {parts}" if parts else "")


class ImageTooLargeError(ValueError):
    """An image header claims more pixels than the configured limit (nothing was decoded)."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        super().__init__(f"{width}x{height} = {width * height} px > limit {limit} px (data.max_image_pixels)")


def check_pixels(img: Image.Image, limit: int) -> Image.Image:
    """`img` (opened, not decoded) if width × height is within `limit`; else ImageTooLargeError."""
    width, height = img.size
    if width * height > limit:
        raise ImageTooLargeError(width, height, limit)
    return img


def drop_decode_error(err: BaseException, report: ValidationReport, where: str, corrupt: str) -> None:
    """Count a decoding failure: too large, a decompression bomb, or `corrupt`."""
    if isinstance(err, ImageTooLargeError):
        report.drop("image_too_large", f"{where}: {err}")
    elif isinstance(err, Image.DecompressionBombError):
        report.drop("decompression_bomb", f"{where}: {err}")
    else:
        report.drop(corrupt, where)


@dataclass(frozen=True)
class MetaRecord:
    """One valid `metadata.jsonl` line: paths resolved inside the source folder."""

    name: str
    caption: str
    winner: Path
    loser: Path | None
    where: str


def _field_problem(rec: dict[str, object]) -> str | None:
    """The reason `rec` (a JSON object) is a bad row before any file is touched, or None."""
    name, loser, caption = rec["file_name"], rec.get("loser_file_name"), rec.get("caption")
    if not isinstance(name, str) or not name or not (loser is None or isinstance(loser, str)):
        return "bad_field_type"
    if caption is not None and not isinstance(caption, str):
        return "bad_field_type"
    if caption is None or not caption.strip():
        return "empty_caption"
    return None


def parse_line(raw: bytes) -> dict[str, object] | str:
    """A metadata line as a JSON object with a `file_name`, or the reason it is a bad row."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bad_encoding"
    try:
        rec = json.loads(text)
    except (ValueError, RecursionError):
        return "bad_metadata_line"
    if not isinstance(rec, dict) or "file_name" not in rec:
        return "bad_metadata_line"
    return _field_problem(rec) or rec


def _resolve(root: Path, rec: dict[str, object]) -> tuple[Path, Path | None] | None:
    try:
        winner = safe_path(root, str(rec["file_name"]))
        loser = safe_path(root, str(rec["loser_file_name"])) if rec.get("loser_file_name") else None
    except UnsafePathError:
        return None
    return winner, loser


def iter_metadata(root: Path, report: ValidationReport) -> Iterator[MetaRecord]:
    """Valid lines of `root/metadata.jsonl` (counted in `report.total`); every bad one is dropped by reason."""
    meta = root / "metadata.jsonl"
    seen: set[tuple[Path, Path | None, str]] = set()
    with meta.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            report.total += 1
            where = f"{meta.name}:{line_no}"
            rec = parse_line(raw)
            if isinstance(rec, str):
                report.drop(rec, where)
                continue
            name, caption = str(rec["file_name"]), str(rec["caption"]).strip()
            paths = _resolve(root, rec)
            if paths is None:
                report.drop("path_outside_source", f"{where} ({name!r})")
                continue
            if (*paths, caption) in seen:
                report.drop("duplicate", f"{where} ({name})")
                continue
            seen.add((*paths, caption))
            yield MetaRecord(name, caption, paths[0], paths[1], where)
