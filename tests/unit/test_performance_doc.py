"""docs/performance.md reports the committed benchmark JSON, not hand-typed numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

from seppo_lib.bench.sampler_quality import comparisons, sampler_table
from seppo_lib.bench.speed import recompute
from seppo_lib.bench.speed_report import machine_line, tables

ROOT = Path(__file__).resolve().parents[2]
PERF = ROOT / "docs" / "performance"
DOC = (ROOT / "docs" / "performance.md").read_text() if (ROOT / "docs" / "performance.md").is_file() else ""


def _load(name: str) -> dict:
    return json.loads((PERF / name).read_text())


def test_side_by_side_tables_are_rebuilt_from_the_raw_rounds_of_cpu_json() -> None:
    """The comparison and ablation tables equal the ones derived again from cpu.json's raw rounds."""
    stored = _load("cpu.json")
    doc = recompute(stored)
    assert tables(doc) == tables(stored)
    for name in ("comparison", "ablations"):
        assert tables(doc)[name] in DOC, f"the {name} table of docs/performance.md is not the one cpu.json gives"
    assert machine_line(doc) in DOC and doc["command"] in DOC
    assert {"world", "tiny-vae", "sd15"} <= set(doc["models"])
    for name, model in doc["models"].items():
        parts = {"sampler"} | ({"step", "round"} if model["train"] else set())
        assert parts <= set(model["ratios"]) and all(math.isfinite(v) and v > 0 for v in model["ratios"].values()), name


def test_scaling_and_preset_tables_are_the_committed_scaling_run() -> None:
    doc = _load("cpu-scaling.json")
    found = tables(doc)
    assert {"bank", "shards", "data", "cache", "presets"} <= set(found)
    for name in ("bank", "shards", "data", "cache", "presets"):
        assert found[name] in DOC, f"the {name} table of docs/performance.md is not the one cpu-scaling.json gives"
    assert machine_line(doc) in DOC and doc["command"] in DOC
    assert {r["shards"] for r in doc["scaling"]["shards"]} == {1, 2, 4}
    assert {r["bank_size"] for r in doc["scaling"]["bank_size"]} == {1, 2, 4, 8, 16, 32}
    for png in ("bank_size.png", "shards.png", "data_size.png", "cache_memory.png"):
        assert (PERF / png).stat().st_size > 1000 and f"performance/{png}" in DOC


def test_sampler_quality_table_is_the_committed_run() -> None:
    doc = _load("sampler_quality.json")
    assert sampler_table(doc) in DOC
    rows = comparisons(doc)
    assert rows[0]["diff"] is None and all(r["diff"] is not None for r in rows[1:])
    assert all(len(s["all"]) == doc["prompts"] * doc["samples"] for s in doc["samplers"])
