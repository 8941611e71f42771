"""Benchmark figures: accuracy and flip rate per round (one panel per method), a sample grid.

Every figure colours a method with :data:`METHOD_COLOURS`, so a method looks the same in all of
them. matplotlib is used through `matplotlib.figure.Figure` only (no pyplot, no global backend state).
:func:`rebuild_plots` redraws the round plots of a finished benchmark from its results.json alone.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from seppo_lib.bench.methods import BASE, METHODS
from seppo_lib.bench.report import curve_subset

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: method -> matplotlib colour, shared by every benchmark figure (the base model is grey).
METHOD_COLOURS: dict[str, str] = {
    BASE: "tab:gray",
    **dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                         "tab:olive", "tab:cyan"), strict=False)),
}
DPI = 110
PANEL = (3.1, 2.4)  # inches per method panel
MAX_COLUMNS = 4


def _clipped(values: list[float | None]) -> np.ndarray:
    """Interval bounds as floats in [0, 1] (accuracies and flip rates are fractions); None -> NaN."""
    return np.clip(np.array([np.nan if v is None else v for v in values], dtype=float), 0.0, 1.0)


def _panel(ax: Axes, method: str, curve: dict[str, Any], others: list[dict[str, Any]], base: float | None) -> None:
    """One method's mean per round, its clipped 95% band, the other methods faint, the base level dotted.
    Points with estimate "first" (first sample per prompt only) are hollow; the table's are filled."""
    from matplotlib.ticker import MaxNLocator

    for other in others:
        ax.plot(other["round"], other["mean"], color="0.85", lw=0.8, zorder=1)
    colour = METHOD_COLOURS[method]
    x, mean = np.array(curve["round"]), np.array(curve["mean"], dtype=float)
    lo, hi = _clipped(curve["lo"]), _clipped(curve["hi"])
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color=colour, alpha=0.18, lw=0, zorder=2)
    ax.plot(x, mean, color=colour, lw=1.6, zorder=3)
    estimate = np.array(curve.get("estimate", ["all"] * len(x)))
    for kind, face in (("all", colour), ("first", "white")):
        keep = estimate == kind
        ax.plot(x[keep], mean[keep], "o", ms=4.5, mfc=face, mec=colour, zorder=4)
    if base is not None:
        ax.axhline(base, color=METHOD_COLOURS[BASE], lw=0.9, ls=":", zorder=1)
    ax.set_title(method, fontsize=9, color=colour)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def curves_figure(summary: dict[str, Any], key: str, ylabel: str, title: str, base: float | None = None) -> Figure:
    """One panel per method with a `key` curve in `summary` (aggregate's output), shared axes."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    curves = {m: e[key] for m, e in summary.items() if m != BASE and e.get(key) and e[key]["round"]}
    n_cols = min(MAX_COLUMNS, len(curves))
    n_rows = math.ceil(len(curves) / n_cols)
    fig = Figure(figsize=(PANEL[0] * n_cols + 0.6, PANEL[1] * n_rows + 1.2), dpi=DPI)
    axes = fig.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (method, curve) in zip(axes, curves.items(), strict=False):
        _panel(ax, method, curve, [c for m, c in curves.items() if m != method], base)
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    top = max(float(np.nanmax(_clipped([*c["hi"], *c["mean"]]))) for c in curves.values())
    axes[0].set_ylim(0.0, min(1.0, 1.1 * top) if top > 0 else 1.0)
    for row in range(n_rows):
        axes[row * n_cols].set_ylabel(ylabel, fontsize=8)
    for ax in axes[(n_rows - 1) * n_cols:]:
        ax.set_xlabel("round (0 = base model)" if base is not None else "round", fontsize=8)
    handles = [Line2D([], [], color="k", marker="o", ls="-", label="mean, 95% CI over seeds (clipped to [0, 1])"),
               Line2D([], [], color="0.85", label="other methods")]
    if any("first" in c.get("estimate", ()) for c in curves.values()):
        handles += [Line2D([], [], color="k", marker="o", mfc="k", ls="", label="all samples per prompt (as the table)"),
                    Line2D([], [], color="k", marker="o", mfc="white", ls="", label="first sample per prompt only")]
    if base is not None:
        handles.append(Line2D([], [], color=METHOD_COLOURS[BASE], ls=":", label="base model (table)"))
    narrow = fig.get_figwidth() < 8  # two panels: the legend and the title would run past the edges
    fig.legend(handles=handles, loc="lower center", ncol=2 if narrow else 3, fontsize=7, frameon=False)
    lines = textwrap.wrap(title, width=int(fig.get_figwidth() * 14))  # ~14 characters per inch at 9 pt
    fig.suptitle("\n".join(lines), fontsize=9)
    bottom = (0.07 if n_rows > 1 else 0.12) + (0.05 if narrow and len(handles) > 3 else 0.0)
    fig.tight_layout(rect=(0.0, bottom, 1.0, 0.95 - 0.04 * (len(lines) - 1)))
    return fig


def accuracy_figure(results: dict[str, Any]) -> Figure:
    n, seeds = len(results["eval"]["test_prompts"]), len(results["options"]["seeds"])
    base = results["summary"].get(BASE)
    subset = curve_subset(results["options"])
    prompts = f"first sample of the first {results['options']['curve_prompts']} of {n} test prompts" if subset else f"{n} test prompts"
    return curves_figure(
        results["summary"], "accuracy_vs_round", "held-out accuracy (all attributes)",
        f"Held-out accuracy vs round: {prompts}, mean and 95% t-interval over {seeds} seed(s)",
        base["test"]["all"]["mean"] if base is not None and not subset else None,
    )


def plot_accuracy_vs_round(results: dict[str, Any], path: Path) -> Path:
    accuracy_figure(results).savefig(path)
    return path


def plot_flip_rate(results: dict[str, Any], path: Path) -> Path:
    fig = curves_figure(
        results["summary"], "flip_rate_vs_round", "flip rate (fraction with s ≠ +1)",
        "Anchor-criterion flip rate per round (mean of per-step values); dpo, spin and seppo-none never flip",
    )
    fig.savefig(path)
    return path


def rebuild_plots(out: Path) -> list[Path]:
    """Redraw accuracy_vs_round.png and flip_rate_vs_round.png in `out` from `out`/results.json (no training;
    the summary is recomputed from the runs, as the table is). The sample grid needs the work folder's images."""
    from seppo_lib.bench.report import aggregate

    results = json.loads((out / "results.json").read_text())
    methods = [m for m in results["options"]["methods"] if m != BASE]
    results["summary"] = aggregate(results["base"], results["runs"], methods, BASE in results["options"]["methods"],
                                   curve_subset=curve_subset(results["options"]))
    return [plot_accuracy_vs_round(results, out / "accuracy_vs_round.png"), plot_flip_rate(results, out / "flip_rate_vs_round.png")]


def sample_grid(rows: list[tuple[str, Path]], prompts: list[str], path: Path, scale: int = 3) -> Path:
    """Write :func:`grid_figure` to `path`."""
    grid_figure(rows, prompts, scale).savefig(path)
    return path


def grid_figure(rows: list[tuple[str, Path]], prompts: list[str], scale: int = 3) -> Figure:
    """One row per method (its saved first-sample images), one column per prompt; frame strips of
    clips (images much wider than tall) are laid out transposed: one row per prompt, one column per method.
    Method names are written in their :data:`METHOD_COLOURS` colour."""
    from matplotlib.figure import Figure

    rows = [(name, folder) for name, folder in rows if folder.is_dir()]
    first = Image.open(rows[0][1] / "00.png")
    strips = first.width > 2 * first.height
    n_r, n_c = (len(prompts), len(rows)) if strips else (len(rows), len(prompts))
    cell_w = 1.3 * (first.width / first.height) * 0.55 if strips else 1.3
    fig = Figure(figsize=(cell_w * n_c + 1.6, 1.25 * n_r + 0.9), dpi=DPI)
    axes = fig.subplots(n_r, n_c, squeeze=False)
    for m, (name, folder) in enumerate(rows):
        correct = json.loads((folder / "scores.json").read_text()) if (folder / "scores.json").is_file() else []
        colour = METHOD_COLOURS.get(name, "black")
        for c, prompt in enumerate(prompts):
            ax = axes[c][m] if strips else axes[m][c]
            image = Image.open(folder / f"{c:02d}.png").convert("RGB")
            ax.imshow(image.resize((image.width * scale, image.height * scale), Image.NEAREST))
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(correct):
                for spine in ax.spines.values():
                    spine.set_color("#1a9850" if correct[c] == 1.0 else "#d73027")
                    spine.set_linewidth(2.5)
            if strips:
                if c == 0:
                    ax.set_title(name, fontsize=8, color=colour)
                if m == 0:
                    ax.set_ylabel(prompt.replace(" moving ", "\nmoving "), fontsize=7, rotation=0, ha="right", va="center")
                continue
            if m == 0:
                ax.set_title(prompt.replace(" of ", " of\n").replace(" above ", "\nabove ").replace(" below ", "\nbelow "), fontsize=6)
            if c == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center", color=colour)
    what = "clip (frames left to right)" if strips else "image"
    fig.suptitle(f"Same held-out prompts and sample seeds for every method\n(first training seed; frame green = all attributes "
                 f"of the {what} correct)", fontsize=7)
    fig.tight_layout()
    return fig
