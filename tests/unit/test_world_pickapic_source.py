"""`data.source: builtin:world-pickapic` as a training source: config show, prepare_data for seppo (winners) and dpo (pairs)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from seppo_lib.cli import main
from seppo_lib.steps import prepare_data
from seppo_lib.world import pickapic
from tests.helpers import square_image, tiny_config

#: label_0 of the fake generator's six pairs: 1 image 0 won, 0 image 1 won, 0.5 a tie (dropped, counted)
LABELS = (1.0, 0.0, 0.5, 1.0, 0.0, 1.0)


def _png(colour: str, seed: int) -> bytes:
    buf = io.BytesIO()
    square_image(colour, 16, seed).save(buf, format="PNG")
    return buf.getvalue()


def _tiny_generator(calls: list[dict[str, Any]]) -> Any:
    """Stands in for the 30-minute generation: six pairs in Pick-a-Pic's columns."""

    def generate(out: Path, **kwargs: Any) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        calls.append(kwargs)
        Path(out).mkdir(parents=True)
        table = pa.table({"caption": [f"a red square {i}" for i in range(len(LABELS))],
                          "jpg_0": [_png("red", i) for i in range(len(LABELS))],
                          "jpg_1": [_png("blue", i) for i in range(len(LABELS))], "label_0": list(LABELS)})  # fmt: skip
        pq.write_table(table, Path(out) / pickapic.PARQUET)
        (Path(out) / pickapic.ANNOTATOR_JSON).write_text("{}")
        return {}

    return generate


def _prepare(tmp_path: Path, method: str) -> dict[str, Any]:
    cfg = tiny_config(tmp_path, tmp_path, "data.source=builtin:world-pickapic", "data.max_rows=3", f"train.method={method}")
    return prepare_data.run(cfg, tmp_path / f"out-{method}")


def test_prepare_data_reads_winners_for_seppo_and_pairs_for_dpo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(pickapic, "generate_pickapic_dataset", _tiny_generator(calls))
    assert main(["config", "show", "--config", "tiny", f"bank.cache_dir={tmp_path / 'cache'}", "data.source=builtin:world-pickapic"]) == 0
    shown = capsys.readouterr().out
    assert "source: builtin:world-pickapic" in shown and shown.strip().splitlines()[-1].split("  ")[1].startswith("run id tiny-")
    assert calls == []  # the run id needs no generated data
    seppo = _prepare(tmp_path, "seppo")
    assert (seppo["rows"], seppo["paired"], seppo["source"]) == (3, False, "builtin:world-pickapic")
    dpo = _prepare(tmp_path, "dpo")
    assert (dpo["rows"], dpo["paired"]) == (3, True)
    assert seppo["report"]["dropped"] == dpo["report"]["dropped"] == {"tie": 1}  # rows 0, 1, tie 2, 3
    assert calls == [{"cache_dir": tmp_path / "cache", "split": "train", "seed": 0, "size": 32}]  # generated once, cached
    folder = next((tmp_path / "cache" / "builtin-data").iterdir())
    assert seppo["source_md5"] == dpo["source_md5"] and folder.name.startswith("world-pickapic-")


def test_prepare_data_on_the_real_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real generator (base-model generations, simulated annotator), cut to 12 prompts and 2 sampler steps."""
    real = pickapic.generate_pickapic_dataset
    monkeypatch.setattr(pickapic, "generate_pickapic_dataset", lambda out, **kw: real(out, **{**kw, "n": 12, "steps": 2}))
    meta = _prepare(tmp_path, "dpo")
    stats = json.loads(next((tmp_path / "cache" / "builtin-data").iterdir()).joinpath(pickapic.ANNOTATOR_JSON).read_text())
    assert stats["pairs"] == 12 and meta["rows"] == min(3, stats["rows"]) and meta["paired"] is True
    assert meta["report"]["dropped"].get("tie", 0) <= stats["ties"]
