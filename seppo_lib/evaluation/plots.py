"""Report figures: the candidate-vs-reference sample grid (PIL), per-scorer accuracy bars (0/1 scores)
or histograms (continuous scores), and training curves.

matplotlib is used through `matplotlib.figure.Figure` only (no pyplot, no global backend state),
so plotting works headless and in threads.

Grid layout (pixels): `MARGIN`, a title band of `TITLE_LINES` lines of `LINE_H` (label and model
URI of each column), `MARGIN`; then per row a caption of `CAPTION_LINES` lines of `LINE_H` (prompt,
image index and seed, across both columns), the two images as `cell` x `cell` squares and a `LINE_H`
score line under each, then `MARGIN`. Columns are separated and framed by `MARGIN`:
width = 2 * cell + 3 * MARGIN (see :func:`grid_size` and :func:`cell_size`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

MARGIN = 8
LINE_H = 14
CAPTION_LINES = 3
TITLE_LINES = 2  # role, then the model URI
FONT_SIZE = 11
MIN_CELL, MAX_CELL = 160, 256
GRID_ROWS = 8  # samples shown in grid.png
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)

ROLE_COLOURS = ("tab:blue", "tab:orange")  # candidate, reference: in every evaluation figure
INK_HEX = "#141414"

HIST_SIZE = (5.0, 3.5)  # inches
PANEL_SIZE = (4.0, 3.2)  # inches, per training-curve panel
DPI = 100
CURVE_METRICS = ("loss", "implicit_acc", "flip_rate", "err_gap_w")
CURVE_TITLES = {"implicit_acc": "implicit accuracy", "flip_rate": "flip rate",
                "err_gap_w": "winner-error gap e_θ(x_w) - e_ref(x_w)"}  # fmt: skip


# ---- sample grid ------------------------------------------------------------------


def cell_size(side: int) -> int:
    """Displayed size of an image of `side` px: integer upscale to >= MIN_CELL, or at most MAX_CELL."""
    if side < 1:
        raise ValueError(f"image side must be >= 1, got {side}")
    if side >= MIN_CELL:
        return min(side, MAX_CELL)
    return side * math.ceil(MIN_CELL / side)


def grid_size(n_rows: int, cell: int) -> tuple[int, int]:
    """(width, height) of a grid of `n_rows` candidate/reference pairs of `cell` px images."""
    row_h = CAPTION_LINES * LINE_H + cell + LINE_H + MARGIN
    return 2 * cell + 3 * MARGIN, MARGIN + TITLE_LINES * LINE_H + MARGIN + n_rows * row_h


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int, lines: int) -> list[str]:
    """Greedy word wrap into at most `lines` lines of `width` px; text that does not fit ends in '...'."""
    words = text.split()
    out = [words.pop(0) if words else ""]
    while words:
        if draw.textlength(f"{out[-1]} {words[0]}", font=font) <= width:
            out[-1] = f"{out[-1]} {words.pop(0)}"
        else:
            out.append(words.pop(0))
    if len(out) <= lines and all(draw.textlength(line, font=font) <= width for line in out):
        return out
    out = out[:lines]
    last = out[-1]
    while last and draw.textlength(last + "...", font=font) > width:
        last = last[:-1]
    out[-1] = last + "..."
    return out


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int, lines: int) -> list[str]:
    """Wrap `text` into at most `lines` lines: each paragraph after the first ("\n"-separated) gets
    one line, the first gets the rest (so a long prompt never pushes its seed line out)."""
    first, *rest = text.split("\n")
    head = _wrap(draw, first, font, width, max(1, lines - len(rest)))
    return [*head, *(_wrap(draw, p, font, width, 1)[0] for p in rest)][:lines]


def _clip_left(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """`text`, or '...' + its longest tail that fits `width` px (URIs end in what tells them apart)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def write_grid(
    path: str | Path,
    candidate: Sequence[Image.Image],
    reference: Sequence[Image.Image],
    captions: Sequence[str],
    candidate_notes: Sequence[str],
    reference_notes: Sequence[str],
    titles: tuple[tuple[str, str], tuple[str, str]] = (("candidate", ""), ("reference", "")),
) -> Path:
    """Candidate (left) vs reference (right: the base model or the champion), one row per sample,
    captioned; returns `path`.

    captions: one per row ("\n" forces a line break); notes: one line under each image;
    titles: (label, model URI) per column, e.g. ("base model", "builtin:world-base").
    """
    n = len(candidate)
    if not n or not (len(reference) == len(captions) == len(candidate_notes) == len(reference_notes) == n):
        raise ValueError(
            f"grid needs the same non-zero number of candidate images ({n}), reference images ({len(reference)}), "
            f"captions ({len(captions)}) and notes ({len(candidate_notes)}, {len(reference_notes)})"
        )
    side = max(max(im.size) for im in (*candidate, *reference))
    cell = cell_size(side)
    width, height = grid_size(n, cell)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    columns = (MARGIN, 2 * MARGIN + cell)
    for x, (role, uri) in zip(columns, titles, strict=True):
        draw.text((x, MARGIN), _clip_left(draw, role, font, cell), fill=INK, font=font)
        draw.text((x, MARGIN + LINE_H), _clip_left(draw, uri, font, cell), fill=INK, font=font)
    y = MARGIN + TITLE_LINES * LINE_H + MARGIN
    for row in range(n):
        for k, line in enumerate(_fit(draw, captions[row], font, width - 2 * MARGIN, CAPTION_LINES)):
            draw.text((MARGIN, y + k * LINE_H), line, fill=INK, font=font)
        y += CAPTION_LINES * LINE_H
        pairs = ((candidate[row], candidate_notes[row]), (reference[row], reference_notes[row]))
        for x, (image, note) in zip(columns, pairs, strict=True):
            resample = Image.Resampling.NEAREST if cell >= max(image.size) else Image.Resampling.LANCZOS
            canvas.paste(image.convert("RGB").resize((cell, cell), resample), (x, y))
            draw.text((x, y + cell + 1), _fit(draw, note, font, cell, 1)[0], fill=INK, font=font)
        y += cell + LINE_H + MARGIN
    path = Path(path)
    canvas.save(path)
    return path


# ---- matplotlib figures -----------------------------------------------------------


def is_binary(values: Sequence[float]) -> bool:
    """True when every score is 0 or 1 (a pass/fail scorer: shown as accuracy bars, not a histogram)."""
    return len(values) > 0 and all(v in (0.0, 1.0) for v in values)


def accuracy_figure(name: str, summaries: dict[str, dict[str, float]], n_prompts: int) -> Figure:
    """Bars of each model's accuracy with its 95% CI (clipped to [0, 1]); `summaries` maps a column
    label to metrics.json's {"mean", "ci_lo", "ci_hi"} of that model (candidate first)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=HIST_SIZE, dpi=DPI)
    ax = fig.add_subplot()
    labels = list(summaries)
    means = np.array([summaries[k]["mean"] for k in labels])
    lo = np.clip([summaries[k]["ci_lo"] for k in labels], 0.0, 1.0)
    hi = np.clip([summaries[k]["ci_hi"] for k in labels], 0.0, 1.0)
    x = np.arange(len(labels))
    ax.bar(x, means, color=ROLE_COLOURS[: len(labels)], width=0.6)
    ax.errorbar(x, means, yerr=[means - lo, hi - means], fmt="none", ecolor=INK_HEX, capsize=6, linewidth=1.2)
    for k in range(len(labels)):
        ax.annotate(f"{means[k]:.3f}\n[{lo[k]:.3f}, {hi[k]:.3f}]", (x[k], hi[k]), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", fontsize="small")
    ax.set_xticks(x, labels)
    ax.set_ylim(0.0, 1.15)
    ax.set_ylabel(f"{name} accuracy")
    ax.set_title(f"{name}: mean over {n_prompts} prompts, 95% bootstrap CI", fontsize="medium")
    fig.tight_layout()
    return fig


def _bins(values: np.ndarray, n_max: int = 30) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, min(n_max, max(5, values.size // 2)) + 1)


def histogram_figure(name: str, values: dict[str, list[float]]) -> Figure:
    """Per-image scores of each model (label -> scores, candidate first) on shared bins, means dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=HIST_SIZE, dpi=DPI)
    ax = fig.add_subplot()
    arrays = {label: np.asarray(v, float) for label, v in values.items()}
    bins = _bins(np.concatenate(list(arrays.values())))
    for (label, x), colour in zip(arrays.items(), ROLE_COLOURS, strict=False):
        ax.hist(x, bins=bins, alpha=0.55, color=colour, label=f"{label} (mean {x.mean():.3g})")
        ax.axvline(x.mean(), color=colour, linestyle="--", linewidth=1.2)
    ax.set_xlabel(f"{name} score (per image)")
    ax.set_ylabel("images")
    ax.set_title(f"{name}: {' vs '.join(arrays)}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_scores(
    out_dir: str | Path, scores: tuple[dict[str, list[float]], dict[str, list[float]]], metrics: dict[str, Any],
    labels: tuple[str, str] = ("candidate", "reference"),
) -> list[Path]:
    """Per scorer: accuracy_<scorer>.png (0/1 scores: bars with the CIs of metrics.json's "scorers")
    or hist_<scorer>.png (continuous scores). `labels` name the two models (candidate, reference)."""
    files = []
    for name, cand in scores[0].items():
        champ = scores[1][name]
        if is_binary([*cand, *champ]):
            block = metrics["scorers"][name]
            summaries = {labels[0]: block["candidate"], labels[1]: block["champion"]}
            fig, path = accuracy_figure(name, summaries, block["win_rate"]["n"]), Path(out_dir) / f"accuracy_{name}.png"
        else:
            fig, path = histogram_figure(name, {labels[0]: cand, labels[1]: champ}), Path(out_dir) / f"hist_{name}.png"
        fig.savefig(path, dpi=DPI)
        files.append(path)
    return files


def with_error_gap(row: dict[str, float]) -> dict[str, float]:
    """`row` plus err_gap_w = err_policy_w - err_ref_w (the winner-error gap) when both were logged."""
    if "err_policy_w" in row and "err_ref_w" in row:
        return {**row, "err_gap_w": row["err_policy_w"] - row["err_ref_w"]}
    return row


def round_starts(history: list[tuple[int, dict[str, float]]]) -> list[int]:
    """Optimizer steps at which a new round begins (the "round" metric changes), first round excluded."""
    rounds = sorted((step, m["round"]) for step, m in history if "round" in m)
    return [step for (step, k), (_, previous) in zip(rounds[1:], rounds, strict=False) if k != previous]


def plot_training_curves(path: str | Path, history: list[tuple[int, dict[str, float]]]) -> Path | None:
    """loss, implicit_acc, flip_rate and err_gap_w vs optimizer step, one panel per metric present
    (integer step ticks, a dashed line where each later round starts); None if none is present."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = [(step, with_error_gap(m)) for step, m in history]
    series = {
        name: sorted((step, float(m[name])) for step, m in rows if name in m and math.isfinite(float(m[name])))
        for name in CURVE_METRICS
    }
    series = {name: points for name, points in series.items() if points}
    if not series:
        logger.warning("training history has none of %s; no training_curves.png", ", ".join(CURVE_METRICS))
        return None
    starts = round_starts(history)
    fig = Figure(figsize=(PANEL_SIZE[0] * len(series), PANEL_SIZE[1]), dpi=DPI)
    for k, (name, points) in enumerate(series.items(), start=1):
        ax = fig.add_subplot(1, len(series), k)
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="o" if len(points) <= 30 else None, markersize=3, linewidth=1.2, color=ROLE_COLOURS[0])
        for step in starts:
            ax.axvline(step - 0.5, color=INK_HEX, linestyle="--", linewidth=0.8, alpha=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_title(CURVE_TITLES.get(name, name), fontsize="medium")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    return path
