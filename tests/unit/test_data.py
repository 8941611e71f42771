"""Data sources: validation with counted bad rows, shards, deterministic round order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seppo_lib.data.shards import round_indices
from seppo_lib.data.sources import ValidationReport, iter_rows
from seppo_lib.errors import DataError
from tests.helpers import make_image_folder, png_bytes, square_image


def test_folder_counts_bad_rows(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", n=6)
    (root / "0001.png").write_bytes(b"not a png")  # corrupt
    (root / "0002.png").unlink()  # missing
    lines = (root / "metadata.jsonl").read_text().splitlines()
    rec = json.loads(lines[3])
    rec["caption"] = "   "
    lines[3] = json.dumps(rec)
    lines.append("{broken json")
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    report = ValidationReport()
    rows = list(iter_rows(root, "auto", report))
    assert len(rows) == 3 and report.valid == 3 and report.total == 7
    assert dict(report.dropped) == {"corrupt_image": 1, "missing_image": 1, "empty_caption": 1, "bad_metadata_line": 1}
    assert "metadata.jsonl:2" in report.examples["corrupt_image"]


def _pickapic(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_pickapic_winners_ties_and_labels(tmp_path: Path) -> None:
    red, blue = png_bytes(square_image("red")), png_bytes(square_image("blue"))
    path = _pickapic(
        tmp_path / "p.parquet",
        [
            {"caption": "a red square", "jpg_0": red, "jpg_1": blue, "label_0": 1.0},
            {"caption": "a blue square", "jpg_0": red, "jpg_1": blue, "label_0": 0.0},
            {"caption": "tie", "jpg_0": red, "jpg_1": blue, "label_0": 0.5},
            {"caption": "weird", "jpg_0": red, "jpg_1": blue, "label_0": 2.0},
            {"caption": "", "jpg_0": red, "jpg_1": blue, "label_0": 1.0},
            {"caption": "broken", "jpg_0": b"xx", "jpg_1": blue, "label_0": 1.0},
        ],
    )
    report = ValidationReport()
    rows = list(iter_rows(path, "auto", report))
    assert [r.caption for r in rows] == ["a red square", "a blue square"]
    assert np.asarray(rows[1].winner).tolist() == np.asarray(rows[0].loser).tolist()  # winner of row 1 is jpg_1
    assert dict(report.dropped) == {"tie": 1, "bad_label": 1, "empty_caption": 1, "corrupt_image": 1}


def test_parquet_missing_column_is_one_line(tmp_path: Path) -> None:
    path = _pickapic(tmp_path / "p.parquet", [{"caption": "x", "jpg_0": b"", "label_0": 1.0}])
    with pytest.raises(DataError) as err:
        list(iter_rows(path, "auto", ValidationReport()))
    assert "lacks column(s) jpg_1" in str(err.value) and "\n" not in str(err.value)


def test_missing_source_and_metadata(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        iter_rows(tmp_path / "nope", "auto", ValidationReport())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metadata.jsonl"):
        list(iter_rows(tmp_path / "empty", "folder", ValidationReport()))


def test_round_indices_deterministic_and_cover_epochs() -> None:
    a = round_indices(10, seed=1, round_idx=1, per_round=10)
    assert sorted(a.tolist()) == list(range(10))  # one round = one full epoch permutation
    assert np.array_equal(a, round_indices(10, seed=1, round_idx=1, per_round=10))
    b = round_indices(10, seed=1, round_idx=2, per_round=15)  # positions 15..29 span epochs 1 and 2
    assert len(b) == 15 and set(b.tolist()) <= set(range(10))
    assert not np.array_equal(a, round_indices(10, seed=2, round_idx=1, per_round=10))
