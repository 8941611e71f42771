"""Hostile and broken data rows (issue 16, item 5): every row problem is a counted bad row, never an abort.

Folder, Pick-a-Pic parquet and video sources; a property test feeds random metadata lines.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from seppo_lib.data.rows import MAX_IMAGE_PIXELS
from seppo_lib.data.sources import ValidationReport, iter_rows
from seppo_lib.data.video import iter_video_folder
from tests.helpers import png_bytes, square_image

BOMB_SIDE = 60000  # 3.6 Gpx: Pillow refuses the header (over 2 x Image.MAX_IMAGE_PIXELS)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` (valid signature, IHDR and IEND with CRCs; no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _folder(root: Path, lines: list[bytes | str | dict[str, Any]], images: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (root / name).write_bytes(data)
    raw = [ln if isinstance(ln, bytes) else (ln if isinstance(ln, str) else json.dumps(ln)).encode() for ln in lines]
    (root / "metadata.jsonl").write_bytes(b"\n".join(raw) + b"\n")
    return root


def test_folder_decompression_bomb_and_oversized_images_are_counted(tmp_path: Path) -> None:
    good = png_bytes(square_image("red"))
    root = _folder(
        tmp_path / "d",
        [{"file_name": "bomb.png", "caption": "a bomb"}, {"file_name": "big.png", "caption": "big"},
         {"file_name": "ok.png", "caption": "a red square"}],
        {"bomb.png": png_header(BOMB_SIDE, BOMB_SIDE), "big.png": png_header(9000, 9000), "ok.png": good},
    )  # fmt: skip
    report = ValidationReport()
    rows = list(iter_rows(root, "folder", report))
    assert [r.caption for r in rows] == ["a red square"]
    assert dict(report.dropped) == {"decompression_bomb": 1, "image_too_large": 1}
    assert f"limit {MAX_IMAGE_PIXELS} px" in report.examples["image_too_large"]
    assert "9000x9000" in report.examples["image_too_large"] and "bomb.png" in report.examples["decompression_bomb"]
    assert report.to_json()["max_image_pixels"] == MAX_IMAGE_PIXELS


def test_configured_pixel_limit_names_itself(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", [{"file_name": "ok.png", "caption": "x"}], {"ok.png": png_bytes(square_image("red"))})
    report = ValidationReport(max_image_pixels=100)
    assert list(iter_rows(root, "folder", report)) == []
    assert report.dropped == {"image_too_large": 1} and "16x16 = 256 px > limit 100 px" in report.examples["image_too_large"]


def test_parquet_bomb_duplicate_and_bad_types_are_counted(tmp_path: Path) -> None:
    red, blue = png_bytes(square_image("red")), png_bytes(square_image("blue"))
    rows = [
        {"caption": "good", "jpg_0": red, "jpg_1": blue, "label_0": 1.0},
        {"caption": "good", "jpg_0": red, "jpg_1": blue, "label_0": 1.0},  # duplicate
        {"caption": "bomb", "jpg_0": png_header(BOMB_SIDE, BOMB_SIDE), "jpg_1": blue, "label_0": 1.0},
        {"caption": "big", "jpg_0": red, "jpg_1": png_header(9000, 9000), "label_0": 1.0},
        {"caption": "no loser", "jpg_0": red, "jpg_1": None, "label_0": 1.0},
    ]
    path = tmp_path / "p.parquet"
    pd.DataFrame(rows).to_parquet(path)
    report = ValidationReport()
    got = list(iter_rows(path, "pickapic", report))
    assert [r.caption for r in got] == ["good"] and report.total == 5
    assert dict(report.dropped) == {"duplicate": 1, "decompression_bomb": 1, "image_too_large": 1, "missing_image": 1}


def _bad_lines(outside: Path) -> list[bytes | str | dict[str, Any]]:
    return [
        {"file_name": "ok.png", "caption": "a red square"},
        b'{"file_name": "ok.png", "caption": "caf\xe9"}',  # Latin-1, not UTF-8
        {"file_name": None, "caption": "null name"},
        {"file_name": 7, "caption": "number name"},
        {"file_name": "ok.png", "caption": 3},
        {"file_name": "ok.png", "caption": "x", "loser_file_name": ["l.png"]},
        {"file_name": str(outside), "caption": "absolute"},
        {"file_name": "../outside.png", "caption": "climbs"},
        {"file_name": "sub/../../outside.png", "caption": "climbs inside"},
        {"file_name": "ok.png", "caption": "x", "loser_file_name": "../outside.png"},
        {"file_name": "link.png", "caption": "a symlink out"},
        {"file_name": "./ok.png", "caption": "a red square"},  # the first row again
        "[1, 2]",
    ]


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_metadata_rows_bad_encoding_types_paths_duplicates(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.png"
    if kind == "folder":
        ok, reader = png_bytes(square_image("red")), lambda root, rep: iter_rows(root, "folder", rep)
    else:
        frames = [square_image("red", seed=i) for i in range(3)]
        path = tmp_path / "clip.gif"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
        ok, reader = path.read_bytes(), lambda root, rep: iter_video_folder(root, rep, num_frames=2)
    outside.write_bytes(ok)
    lines = [{**ln, "file_name": ln["file_name"].replace("ok.png", "ok.gif")} if kind == "video" and isinstance(ln, dict)
             and isinstance(ln["file_name"], str) else ln for ln in _bad_lines(outside)]  # fmt: skip
    name = "ok.gif" if kind == "video" else "ok.png"
    root = _folder(tmp_path / "d", lines, {name: ok})
    os.symlink(outside, root / "link.png")
    report = ValidationReport()
    rows = list(reader(root, report))
    assert [r.caption for r in rows] == ["a red square"] and report.total == 13
    assert dict(report.dropped) == {
        "bad_encoding": 1, "bad_field_type": 4, "path_outside_source": 5, "duplicate": 1, "bad_metadata_line": 1,
    }  # fmt: skip
    assert "metadata.jsonl:2" in report.examples["bad_encoding"]


def test_video_frame_folder_with_a_bomb_frame_is_counted(tmp_path: Path) -> None:
    frames = tmp_path / "v" / "frames"
    frames.mkdir(parents=True)
    for i in range(3):
        square_image("red", seed=i).save(frames / f"{i:03d}.png")
    (frames / "001.png").write_bytes(png_header(BOMB_SIDE, BOMB_SIDE))
    _folder(tmp_path / "v", [{"file_name": "frames", "caption": "x"}], {})
    report = ValidationReport()
    assert list(iter_video_folder(tmp_path / "v", report, num_frames=3)) == []
    assert dict(report.dropped) == {"decompression_bomb": 1}


# ---- property: any metadata line is a valid row or a counted bad row --------------------------

NAMES = st.one_of(
    st.sampled_from(["ok.png", "./ok.png", "bad.png", "missing.png", "../ok.png", "/etc/passwd", "", ".", "..",
                     "sub/../ok.png", "a\x00b", "\\ok.png", "big.png", "ok.gif"]),
    st.text(max_size=20),
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
FIELD = NAMES | JSON
RECORD = st.fixed_dictionaries({}, optional={"file_name": FIELD, "caption": st.text(max_size=10) | JSON, "loser_file_name": FIELD})
LINE = st.one_of(
    RECORD.map(lambda rec: json.dumps(rec).encode()),
    st.binary(max_size=40),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.just(b"[" * 5000),
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    gif = tmp_path_factory.mktemp("gif") / "ok.gif"
    square_image("red").save(gif)
    return {"ok.png": png_bytes(square_image("red")), "bad.png": b"\x89PNG garbage", "big.png": png_header(9000, 9000),
            "ok.gif": gif.read_bytes()}  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, min_size=1, max_size=6))
def test_random_metadata_lines_are_valid_or_counted(tmp_path: Path, images: dict[str, bytes], lines: list[bytes]) -> None:
    lines = [ln.replace(b"\n", b" ").replace(b"\r", b" ") for ln in lines]
    root = tmp_path / "prop"
    for name, data in images.items():
        root.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for reader in (lambda rep: iter_rows(root, "folder", rep), lambda rep: iter_video_folder(root, rep, num_frames=1)):
        report = ValidationReport()
        rows = list(reader(report))
        assert report.valid == len(rows) and report.valid + sum(report.dropped.values()) == report.total
        for row in rows:  # a valid row's file is inside the folder
            assert (root / row.row_id).resolve().is_relative_to(root.resolve())
    assert Image.open(root / "ok.png").size == (16, 16)


def test_s3_source_keys_outside_the_prefix_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seppo_lib.steps import prepare_data
    from tests.helpers import tiny_config

    objects = {"metadata.jsonl": b'{"file_name": "a.png", "caption": "x"}\n', "a.png": png_bytes(square_image("red")),
               "../escape.png": b"evil", "sub//b.png": b"evil"}  # fmt: skip

    class FakeStore:
        def list(self, prefix: str = "") -> list[str]:
            return sorted(objects)

        def sizes(self, prefix: str = "") -> dict[str, int]:  # the run identity versions an S3 source by its listing
            return {key: len(objects[key]) for key in self.list(prefix)}

        def get_file(self, key: str, local: str | Path) -> None:
            Path(local).parent.mkdir(parents=True, exist_ok=True)
            Path(local).write_bytes(objects[key])

        def get_dir(self, prefix: str, local_dir: str | Path) -> None:  # what the old code called
            for key in self.list(prefix):
                self.get_file(key, Path(local_dir) / key)

    monkeypatch.setattr("seppo_lib.storage.open_store", lambda uri, settings=None: FakeStore())
    cfg = tiny_config(tmp_path, tmp_path, "data.source=s3://bucket/data")
    scratch = tmp_path / "scratch" / "inner"
    path, _ = prepare_data.materialize_source(cfg, scratch)
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == ["a.png", "metadata.jsonl"]
    assert not (scratch / "escape.png").exists()
    report = ValidationReport()
    assert len(list(iter_rows(path, "folder", report))) == 1
