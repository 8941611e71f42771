"""Video sources: GIFs and frame folders decode; bad rows are counted (missing, corrupt, too short)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seppo_lib.data.prepare import preprocess_clip
from seppo_lib.data.sources import ValidationReport, detect_format, iter_rows
from seppo_lib.data.video import VideoRow, frames_needed, iter_video_folder, read_clip, video_backend
from seppo_lib.errors import DataError


def _frames(n: int, size: int = 12) -> list[Image.Image]:
    """Frame k is a flat grey of value 20 * k (frame order is visible in the pixels)."""
    return [Image.new("RGB", (size, size), (20 * k, 20 * k, 20 * k)) for k in range(n)]


def _gif(path: Path, n: int) -> Path:
    frames = _frames(n)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


def _folder(path: Path, n: int) -> Path:
    path.mkdir()
    for k, frame in enumerate(_frames(n)):
        frame.save(path / f"{k:03d}.png")
    return path


def _grey(clip: tuple[Image.Image, ...]) -> list[int]:
    return [int(np.asarray(f)[0, 0, 0]) for f in clip]


def _write_meta(root: Path, rows: list[dict | str]) -> None:
    (root / "metadata.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_read_clip_takes_strided_frames_from_the_start(tmp_path: Path) -> None:
    gif, folder = _gif(tmp_path / "a.gif", 10), _folder(tmp_path / "f", 10)
    for source in (gif, folder):
        assert _grey(read_clip(source, 4)) == [0, 20, 40, 60]
        assert _grey(read_clip(source, 4, frame_stride=3)) == [0, 60, 120, 180]
        assert all(f.mode == "RGB" and f.size == (12, 12) for f in read_clip(source, 4))
    assert frames_needed(4, 3) == 10
    with pytest.raises(DataError, match=">= 1"):
        frames_needed(0, 1)


def test_folder_counts_missing_corrupt_and_too_short_videos(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    _gif(root / "good.gif", 8)
    _folder(root / "good_frames", 8)
    _gif(root / "short.gif", 3)
    _folder(root / "short_frames", 2)
    (root / "corrupt.gif").write_bytes(b"GIF89a not really a gif")
    truncated = (root / "good.gif").read_bytes()
    (root / "truncated.gif").write_bytes(truncated[: len(truncated) // 3])
    bad_frame = _folder(root / "bad_frame", 8)
    (bad_frame / "003.png").write_bytes(b"\x89PNG broken")
    (root / "empty_frames").mkdir()
    _write_meta(
        root,
        [
            {"file_name": "good.gif", "caption": "a red circle moving right"},
            {"file_name": "good_frames", "caption": "a blue square moving down"},
            {"file_name": "short.gif", "caption": "x"},
            {"file_name": "short_frames", "caption": "x"},
            {"file_name": "corrupt.gif", "caption": "x"},
            {"file_name": "truncated.gif", "caption": "x"},
            {"file_name": "bad_frame", "caption": "x"},
            {"file_name": "empty_frames", "caption": "x"},
            {"file_name": "gone.gif", "caption": "x"},
            {"file_name": "good.gif", "caption": "  "},
            "{broken json",
        ],
    )
    report = ValidationReport()
    rows = list(iter_video_folder(root, report, num_frames=8))
    assert [r.caption for r in rows] == ["a red circle moving right", "a blue square moving down"]
    assert all(isinstance(r, VideoRow) and len(r.winner) == 8 and r.loser is None for r in rows)
    assert report.total == 11 and report.valid == 2
    assert dict(report.dropped) == {
        "too_short": 3, "corrupt_video": 3, "missing_video": 1, "empty_caption": 1, "bad_metadata_line": 1,
    }
    assert "short.gif" in report.examples["too_short"] and "gone.gif" in report.examples["missing_video"]
    assert "metadata.jsonl:5" in report.examples["corrupt_video"]


def test_auto_detects_video_folders_and_dispatches(tmp_path: Path) -> None:
    root = tmp_path / "v"
    root.mkdir()
    _gif(root / "0.gif", 6)
    _gif(root / "0_l.gif", 6)
    _write_meta(root, [{"file_name": "0.gif", "caption": "a clip", "loser_file_name": "0_l.gif"}])
    assert detect_format(root, "auto") == "video"
    report = ValidationReport()
    rows = list(iter_rows(root, "auto", report, num_frames=3, frame_stride=2))
    assert len(rows) == 1 and _grey(rows[0].winner) == [0, 40, 80] and rows[0].loser is not None
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "0.png")
    _write_meta(images, [{"file_name": "0.png", "caption": "an image"}])
    assert detect_format(images, "auto") == "folder"
    with pytest.raises(DataError, match="no metadata.jsonl"):
        list(iter_rows(tmp_path / "images" / ".." / "v" / "..", "video", ValidationReport()))


def test_mp4_without_a_decoder_names_the_package(tmp_path: Path) -> None:
    if video_backend() is not None:
        pytest.skip("a video decoder is installed here")
    root = tmp_path / "mp4"
    root.mkdir()
    (root / "0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    _write_meta(root, [{"file_name": "0.mp4", "caption": "a clip"}])
    with pytest.raises(DataError, match=r"pip install av") as err:
        list(iter_video_folder(root, ValidationReport(), num_frames=2))
    assert "\n" not in str(err.value)


def test_unsupported_video_type_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "clip.flv").write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported video type '.flv'"):
        read_clip(tmp_path / "clip.flv", 2)


def test_preprocess_clip_resizes_every_frame() -> None:
    clip = preprocess_clip(_frames(5, size=16), resolution=8)
    assert clip.shape == (3, 5, 8, 8)
    assert float(clip[0, 0].max()) == pytest.approx(-1.0) and float(clip[0, 4].min()) == pytest.approx(80 / 127.5 - 1)
