"""Benchmark figures on a synthetic results document: colours, round ticks, clipped bands, the table's estimate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from seppo_lib.bench.methods import ALL_METHODS
from seppo_lib.bench.report import aggregate

METHODS = ["sft", "seppo-sign-uniform"]


def _run(method: str, seed: int, first: list[float], final_all: float) -> dict[str, Any]:
    """One run: `first` = per-round first-sample accuracy; the last round also has the all-sample one."""
    rounds = [{"round": k + 1, "train_metrics": {"flip_rate": 0.5 + 0.1 * seed} if method != "sft" else {},
               "reference_accuracy": None, "test_first": {"all": v}} for k, v in enumerate(first)]
    final = {"test": {"all": final_all}, "train": {"all": final_all + 0.1}, "test_all_per_image": []}
    rounds[-1].update(final)
    return {"method": method, "seed": seed, "rounds": rounds, "final": final, "train_seconds": 1.0}


def _results() -> dict[str, Any]:
    """2 seeds that disagree a lot (t-intervals reach below 0), first-sample values far from the final ones."""
    base = {"test_first": {"all": 0.5}, "test": {"all": 0.25}, "train": {"all": 0.3}}
    runs = [_run(m, s, [0.0 if s else 0.3, 0.6 - 0.5 * s], final_all=0.1 + 0.2 * s) for m in METHODS for s in (0, 1)]
    return {"options": {"methods": ["base", *METHODS], "seeds": [0, 1]}, "eval": {"test_prompts": ["p"] * 4},
            "base": base, "runs": runs, "summary": aggregate(base, runs, METHODS, True)}


def _method_lines(fig: Any) -> dict[str, Any]:
    """Panel title -> the thick line of that panel's method."""
    return {ax.get_title(): max(ax.get_lines(), key=lambda line: line.get_linewidth()) for ax in fig.axes if ax.get_visible()}


def test_every_method_has_one_distinct_colour_used_by_every_plot(tmp_path: Path) -> None:
    from matplotlib.colors import to_rgba

    from seppo_lib.bench.plots import METHOD_COLOURS, accuracy_figure, curves_figure, grid_figure

    assert set(METHOD_COLOURS) == set(ALL_METHODS) and len(set(METHOD_COLOURS.values())) == len(ALL_METHODS)
    results = _results()
    accuracy = _method_lines(accuracy_figure(results))
    flips = _method_lines(curves_figure(results["summary"], "flip_rate_vs_round", "flip rate", "t"))
    assert set(accuracy) == set(METHODS) and set(flips) == {"seppo-sign-uniform"}  # sft logs no flip rate
    for method, line in [*accuracy.items(), *flips.items()]:
        assert to_rgba(line.get_color()) == to_rgba(METHOD_COLOURS[method])
    rows = []
    for name in ("base", *METHODS):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "00.png")
        rows.append((name, tmp_path / name))
    grid = grid_figure(rows, ["a red circle"])
    labels = {ax.get_ylabel(): ax.yaxis.label.get_color() for ax in grid.axes}
    assert {name: to_rgba(colour) for name, colour in labels.items()} == {m: to_rgba(METHOD_COLOURS[m]) for m in ("base", *METHODS)}


def test_round_axes_have_integer_ticks_only() -> None:
    from seppo_lib.bench.plots import accuracy_figure

    fig = accuracy_figure(_results())
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_confidence_bands_are_clipped_to_fractions() -> None:
    """Seeds 0.0 and 0.3 (or 0.1 and 0.3) give a t-interval reaching far below 0: the band stops at 0."""
    from seppo_lib.bench.plots import accuracy_figure

    results = _results()
    assert min(v for v in results["summary"]["sft"]["accuracy_vs_round"]["lo"]) < -0.5
    for ax in accuracy_figure(results).axes:
        for band in ax.collections:
            y = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
            assert y.min() >= 0.0 and y.max() <= 1.0
        assert ax.get_ylim()[0] == 0.0


def test_round_curve_uses_the_tables_estimate() -> None:
    """Round 0 is the base row of the table and the final round each method's "test all" cell (all samples,
    not the first sample); intermediate rounds, graded on the first sample only, are marked as such."""
    summary = _results()["summary"]
    for method in METHODS:
        curve = summary[method]["accuracy_vs_round"]
        assert curve["round"] == [0, 1, 2]
        assert curve["mean"][0] == summary["base"]["test"]["all"]["mean"] == 0.25
        assert curve["mean"][-1] == pytest.approx(summary[method]["test"]["all"]["mean"]) == pytest.approx(0.2)
        assert (curve["lo"][-1], curve["hi"][-1]) == (summary[method]["test"]["all"]["lo"], summary[method]["test"]["all"]["hi"])
        assert curve["estimate"] == ["all", "first", "all"]


def test_rebuild_plots_redraws_the_round_plots_from_results_json(tmp_path: Path) -> None:
    from seppo_lib.bench.plots import rebuild_plots

    results = _results()
    results["summary"] = {}  # a stale summary is recomputed from the runs, like the table
    (tmp_path / "results.json").write_text(json.dumps(results))
    files = rebuild_plots(tmp_path)
    assert [p.name for p in files] == ["accuracy_vs_round.png", "flip_rate_vs_round.png"]
    assert all(p.stat().st_size > 1000 for p in files)


def test_a_curve_on_fewer_prompts_than_the_table_uses_first_samples_in_every_round() -> None:
    """--curve-prompts 2 of 4 prompts: the base and final points are the first-sample estimates (0.5 and the last
    `first` values 0.6 / 0.1), not the table's all-sample ones (0.25 / 0.1, 0.3), so the curve reads one prompt set."""
    from seppo_lib.bench.plots import accuracy_figure
    from seppo_lib.bench.report import curve_subset

    results = _results()
    assert not curve_subset({"prompts": 4, "curve_prompts": None}) and not curve_subset({"prompts": 4, "curve_prompts": 4})
    results["options"].update(prompts=4, curve_prompts=2)
    assert curve_subset(results["options"])
    summary = aggregate(results["base"], results["runs"], METHODS, True, curve_subset=True)
    curve = summary["sft"]["accuracy_vs_round"]
    assert curve["estimate"] == ["first"] * 3
    assert curve["mean"][0] == pytest.approx(0.5) and curve["mean"][-1] == pytest.approx((0.6 + 0.1) / 2)
    results["summary"] = summary
    fig = accuracy_figure(results)
    assert "first sample of the first 2 of 4 test prompts" in fig.get_suptitle().replace("\n", " ")


def test_title_and_legend_of_a_two_panel_figure_stay_inside_it() -> None:
    """Two methods (the narrowest figure) with a curve subset: the long title wraps and the legend's four entries fit."""
    from seppo_lib.bench.plots import accuracy_figure

    results = _results()
    results["options"].update(prompts=256, curve_prompts=128)
    results["eval"]["test_prompts"] = ["p"] * 256
    results["summary"] = aggregate(results["base"], results["runs"], METHODS, True, curve_subset=True)
    fig = accuracy_figure(results)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width = fig.bbox.width
    for artist in (fig._suptitle, *fig.legends):
        box = artist.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width, f"{type(artist).__name__} spans {box.x0:.0f}..{box.x1:.0f} of {width:.0f} px"
