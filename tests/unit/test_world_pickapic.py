"""builtin:world-pickapic: the simulated annotator (hand-computed), the parquet it writes and how training reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seppo_lib.data.rows import ValidationReport
from seppo_lib.data.sources import builtin_params, builtin_source_version, iter_rows
from seppo_lib.errors import DataError
from seppo_lib.world import pickapic
from seppo_lib.world.pickapic import Annotator, annotate, annotator_stats, calibrate_noise, correct_count


def test_noise_calibration_by_hand() -> None:
    """q = 2·σ(|Δc|/T) − 1; ε = (1 − sqrt((2·0.68 − 1) / mean q²)) / 2.
    |Δc| = 1, T = 0.5: σ(2) = 0.880797, q = 0.761594, q² = 0.580026, 0.36 / 0.580026 = 0.620662, sqrt 0.787821,
    ε = 0.106089. Half the pairs |Δc| = 2: σ(4) = 0.982014, q = 0.964028, q² = 0.929349, mean q² = 0.754687, ε = 0.154667.
    q = 1 (T → 0): ε = (1 − 0.6) / 2 = 0.2. T = 2, |Δc| = 1: q² = 0.059985 < 0.36, Bradley-Terry alone is noisier: ε = 0."""
    assert calibrate_noise([1, -1, 1], 0.5) == pytest.approx(0.106089, abs=1e-6)
    assert calibrate_noise([1, 2], 0.5) == pytest.approx(0.154667, abs=1e-6)
    assert calibrate_noise([3, -5], 1e-3) == pytest.approx(0.2)
    assert calibrate_noise([1], 2.0) == 0.0
    with pytest.raises(DataError, match="no ties"):
        calibrate_noise([1, 0], 0.5)


def test_two_calibrated_annotators_agree_as_often_as_pick_a_pic_annotators() -> None:
    """Simulated twice with independent noise on 40000 pairs (|Δc| 1 or 2): agreement 0.680 ± 0.005 (SE 0.0023);
    with q = 1 each annotator agrees with the noiseless choice 1 − ε = 0.8 of the time (0.8² + 0.2² = 0.68)."""
    rng = np.random.default_rng(0)
    c0 = rng.integers(0, 4, 40_000)
    c1 = np.clip(c0 + rng.choice([-2, -1, 1, 2], c0.size), 0, 4)
    keep = c0 != c1
    c0, c1 = c0[keep], c1[keep]
    annotator = Annotator(0.5, calibrate_noise(c0 - c1, 0.5))
    first, noiseless = annotate(c0, c1, annotator, seed=1)
    second, _ = annotate(c0, c1, annotator, seed=2)
    assert abs(float(np.mean(first == second)) - 0.680) < 0.005
    sharp = Annotator(1e-3, calibrate_noise(c0 - c1, 1e-3))
    labels, _ = annotate(c0, c1, sharp, seed=3)
    assert abs(float(np.mean(labels == noiseless)) - 0.8) < 0.006


def test_annotate_ties_and_noiseless_labels() -> None:
    """Counts (3, 1), (1, 1), (0, 2): noiseless labels 1, 0.5 (tie), 0; a noise-free sharp annotator returns them,
    a sure-to-flip one (ε = 1) inverts every non-tie."""
    c0, c1 = np.array([3, 1, 0]), np.array([1, 1, 2])
    labels, noiseless = annotate(c0, c1, Annotator(1e-3, 0.0), seed=0)
    assert noiseless.tolist() == [1.0, 0.5, 0.0] and labels.tolist() == [1.0, 0.5, 0.0]
    flipped, _ = annotate(c0, c1, Annotator(1e-3, 1.0), seed=0)
    assert flipped.tolist() == [0.0, 0.5, 1.0]
    assert correct_count({"colour": 1.0, "shape": 0.0, "count": 1.0, "all": 0.0}) == 2
    assert correct_count({"colour": 1.0, "shape": 1.0, "count": 1.0, "relation": 1.0, "all": 1.0}) == 4


def test_annotator_stats_by_hand() -> None:
    """4 pairs, one tie; winners: image 0 (fully correct), image 1 (wrong), image 0 (wrong); losers all wrong except
    pair 2's image 0: winner fully correct 1/3, loser fully correct 1/3; labels agree with noiseless on 2 of 3."""
    label = np.array([1.0, 0.0, 1.0, 0.5])
    noiseless = np.array([1.0, 0.0, 0.0, 0.5])
    all0 = np.array([True, True, False, False])
    all1 = np.array([False, False, False, True])
    stats = annotator_stats(label, noiseless, all0, all1, Annotator(0.5, 0.1))
    assert (stats["pairs"], stats["ties"], stats["rows"]) == (4, 1, 3)
    assert stats["winner_fully_correct"] == pytest.approx(1 / 3) and stats["loser_fully_correct"] == pytest.approx(1 / 3)
    assert stats["agreement_with_noiseless"] == pytest.approx(2 / 3)
    assert stats["annotator"] == {"temperature": 0.5, "noise": 0.1}


def test_generated_pairs_read_like_pick_a_pic(tmp_path: Path) -> None:
    """6 prompts × 2 base-model images (DDIM 2 steps, ~3 s): the parquet reader drops exactly the ties, each winner
    is the labelled image, the loser is kept for DPO, and the same arguments give the same bytes."""
    import pyarrow.parquet as pq

    doc = pickapic.generate_pickapic_dataset(tmp_path / "a", n=6, steps=2, cache_dir=tmp_path / "cache")
    table = pq.read_table(tmp_path / "a" / pickapic.PARQUET).to_pylist()
    assert len(table) == doc["pairs"] == 6 and doc["ties"] == sum(r["label_0"] == 0.5 for r in table)
    assert all((r["label_0"] == 0.5) == (r["correct_0"] == r["correct_1"]) for r in table)
    report = ValidationReport()
    rows = list(iter_rows(tmp_path / "a", "auto", report))
    assert len(rows) == doc["rows"] == 6 - doc["ties"] and report.dropped.get("tie", 0) == doc["ties"]
    from seppo_lib.world import parse
    from seppo_lib.world.scorer import score_image

    labelled = [r for r in table if r["label_0"] != 0.5]
    for row, rec in zip(rows, labelled, strict=True):
        win, lose = ("jpg_0", "jpg_1") if rec["label_0"] == 1.0 else ("jpg_1", "jpg_0")
        assert row.caption == rec["caption"] and row.loser is not None
        for key in ("jpg_0", "jpg_1"):  # each image column holds the image its correct-attribute count was read from
            assert correct_count(score_image(_decode(rec[key]), parse(rec["caption"]))) == rec[key.replace("jpg", "correct")]
        assert np.array_equal(np.asarray(row.winner), np.asarray(_decode(rec[win])))
        assert np.array_equal(np.asarray(row.loser), np.asarray(_decode(rec[lose])))
    assert json.loads((tmp_path / "a" / pickapic.ANNOTATOR_JSON).read_text()) == doc
    pickapic.generate_pickapic_dataset(tmp_path / "b", n=6, steps=2, cache_dir=tmp_path / "cache")
    assert (tmp_path / "a" / pickapic.PARQUET).read_bytes() == (tmp_path / "b" / pickapic.PARQUET).read_bytes()
    with pytest.raises(DataError, match="not an empty folder"):
        pickapic.generate_pickapic_dataset(tmp_path / "a", n=6)


def _decode(data: bytes) -> object:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def test_materialize_generates_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache folder is named after the source version (other parameters: another folder); a second call reuses it."""
    calls: list[dict[str, object]] = []

    def fake(out: Path, **kwargs: object) -> dict[str, object]:
        calls.append(kwargs)
        Path(out).mkdir(parents=True)
        (Path(out) / pickapic.ANNOTATOR_JSON).write_text("{}")
        return {}

    monkeypatch.setattr(pickapic, "generate_pickapic_dataset", fake)
    params = builtin_params(pickapic.SOURCE, max_rows=64, paired=True, num_frames=1, frame_stride=1)
    assert params == {"split": "train", "seed": 0, "size": 32}  # every training prompt, whatever max_rows / method
    assert builtin_source_version(pickapic.SOURCE, params).startswith("builtin:world-pickapic@")
    first = pickapic.materialize(params, tmp_path)
    assert pickapic.materialize(params, tmp_path) == first and len(calls) == 1
    assert calls[0] == {"cache_dir": tmp_path, **params}
    other = pickapic.materialize({**params, "seed": 1}, tmp_path)
    assert other != first and len(calls) == 2


def test_importing_the_dataset_module_does_not_load_the_scorer() -> None:
    code = "import sys, seppo_lib.world.pickapic\nassert 'seppo_lib.world.scorer' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
