"""Winner-only text-to-video data: a folder of clips with `metadata.jsonl`, validated row by row.

Each `metadata.jsonl` line is `{"file_name": ..., "caption": ...}` (optional
`"loser_file_name"` for paired data), where `file_name` is

- a video file: `.gif` (always, via Pillow), or `.mp4` / `.webm` / `.mov` / `.mkv` / `.avi`
  (via imageio's `pyav` plugin when PyAV is installed, else imageio's `ffmpeg` plugin when
  imageio-ffmpeg is installed; with neither, a one-line DataError says `pip install av`);
- a frame folder: image files (png, jpg, webp, bmp) taken in sorted file-name order.

A row's clip is `num_frames` frames taken every `frame_stride` frames from the start of the
video, so a video needs at least `(num_frames - 1) * frame_stride + 1` frames. Bad rows are
counted in the shared `ValidationReport` under `missing_video`, `corrupt_video`, `too_short`,
`unsupported_video` (a file type no decoder here reads),
`image_too_large` / `decompression_bomb` (a frame over `max_pixels`: GIF and frame files are
checked from the header, other videos per decoded frame), plus the metadata reasons of
`seppo_lib.data.rows` (`bad_encoding`, `bad_field_type`, `path_outside_source`, `duplicate`, ...).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

from seppo_lib.data.rows import (
    DECODE_ERRORS, MAX_IMAGE_PIXELS, ValidationReport, check_pixels, drop_decode_error, iter_metadata, parse_line,
)  # fmt: skip
from seppo_lib.errors import DataError
from seppo_lib.paths import UnsafePathError, safe_path

GIF_SUFFIXES = (".gif",)
FFMPEG_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
VIDEO_SUFFIXES = GIF_SUFFIXES + FFMPEG_SUFFIXES
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

Clip = tuple[Image.Image, ...]


class TooShortError(ValueError):
    """The video has fewer frames than the clip needs."""


class UnsupportedVideoError(DataError):
    """A row names a file of a type no decoder here reads (a counted `unsupported_video` row)."""


@dataclass(frozen=True)
class VideoRow:
    """A winner clip (and optional loser clip) with its caption; frames are RGB PIL images."""

    row_id: str
    caption: str
    winner: Clip
    loser: Clip | None = None


def frames_needed(num_frames: int, frame_stride: int) -> int:
    if num_frames < 1 or frame_stride < 1:
        raise DataError(f"num_frames={num_frames} and frame_stride={frame_stride} must be >= 1")
    return (num_frames - 1) * frame_stride + 1


def _take(frames: Iterator[Image.Image], num_frames: int, frame_stride: int) -> Clip:
    """Every `frame_stride`-th frame from the start until `num_frames` are taken (RGB copies)."""
    needed = frames_needed(num_frames, frame_stride)
    picked = [frame.convert("RGB") for frame in islice(frames, 0, needed, frame_stride)]
    if len(picked) < num_frames:
        raise TooShortError(f"{len(picked)} of {num_frames} frames")
    return tuple(picked)


def _gif_frames(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    with Image.open(path) as img:
        if img.format != "GIF":
            raise UnidentifiedImageError(f"{path.name} is not a GIF")
        check_pixels(img, max_pixels)
        for frame in ImageSequence.Iterator(img):
            frame.load()
            yield frame.convert("RGB")


def _folder_frames(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES):
        with Image.open(file) as img:
            check_pixels(img, max_pixels).load()
            yield img.convert("RGB")


def video_backend() -> str | None:
    """The imageio plugin that decodes mp4/webm here: "pyav", "FFMPEG" or None (neither installed)."""
    if importlib.util.find_spec("av") is not None:
        return "pyav"
    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        return "FFMPEG"
    return None


def _ffmpeg_frames(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    plugin = video_backend()
    if plugin is None:
        raise DataError(
            f"decoding {path.suffix} videos ({path.name}) needs PyAV: `pip install av` "
            "(or imageio-ffmpeg); GIF files and frame folders need nothing extra"
        )
    import imageio.v3 as iio

    for array in iio.imiter(path, plugin=plugin):
        yield check_pixels(Image.fromarray(array), max_pixels).convert("RGB")


def read_clip(path: str | Path, num_frames: int, frame_stride: int = 1, max_pixels: int = MAX_IMAGE_PIXELS) -> Clip:
    """`num_frames` RGB frames of a video file or frame folder, every `frame_stride`-th from the start.

    Raises FileNotFoundError (missing), TooShortError (too few frames), ImageTooLargeError (a
    frame over `max_pixels`), DataError (no decoder for the format) or another OSError/ValueError (corrupt).
    """
    path = Path(path)
    if path.is_dir():
        return _take(_folder_frames(path, max_pixels), num_frames, frame_stride)
    if not path.is_file():
        raise FileNotFoundError(path)
    suffix = path.suffix.lower()
    if suffix in GIF_SUFFIXES:
        return _take(_gif_frames(path, max_pixels), num_frames, frame_stride)
    if suffix in FFMPEG_SUFFIXES:
        return _take(_ffmpeg_frames(path, max_pixels), num_frames, frame_stride)
    raise UnsupportedVideoError(f"{path.name}: unsupported video type {suffix!r}; use {', '.join(VIDEO_SUFFIXES)} or a folder of frames")


def _decode(path: Path, num_frames: int, frame_stride: int, report: ValidationReport, where: str) -> Clip | None:
    try:
        return read_clip(path, num_frames, frame_stride, report.max_image_pixels)
    except FileNotFoundError:
        report.drop("missing_video", where)
    except TooShortError:
        report.drop("too_short", where)
    except UnsupportedVideoError:
        report.drop("unsupported_video", where)
    except DataError:
        raise
    except (Image.DecompressionBombError, UnidentifiedImageError, *DECODE_ERRORS) as err:
        drop_decode_error(err, report, where, "corrupt_video")  # decoders raise any of these on damaged files
    return None


def iter_video_folder(root: str | Path, report: ValidationReport, num_frames: int, frame_stride: int = 1) -> Iterator[VideoRow]:
    """Valid clip rows of a video folder, counting every bad one in `report`."""
    root = Path(root)
    if not (root / "metadata.jsonl").is_file():
        raise DataError(f"{root} has no metadata.jsonl (lines of {{\"file_name\": <video or frame folder>, \"caption\": ...}})")
    frames_needed(num_frames, frame_stride)
    for rec in iter_metadata(root, report):
        winner = _decode(rec.winner, num_frames, frame_stride, report, f"{rec.where} ({rec.name})")
        if winner is None:
            continue
        loser = None
        if rec.loser is not None:
            loser = _decode(rec.loser, num_frames, frame_stride, report, f"{rec.where} ({rec.loser.name})")
            if loser is None:
                continue
        report.valid += 1
        yield VideoRow(rec.name, rec.caption, winner, loser)


def looks_like_video(root: Path) -> bool:
    """True when the first row of `root/metadata.jsonl` names a video file or a frame folder."""
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        return False
    with meta.open("rb") as f:
        for raw in f:
            rec = parse_line(raw)
            if isinstance(rec, str):
                continue
            name = str(rec["file_name"])
            try:
                return Path(name).suffix.lower() in VIDEO_SUFFIXES or safe_path(root, name).is_dir()
            except UnsafePathError:
                continue
    return False
