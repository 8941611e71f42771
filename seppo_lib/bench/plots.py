"""Benchmark figures (matplotlib, Agg backend): accuracy and flip rate per round, a sample grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(results: dict[str, Any], key: str, path: Path, ylabel: str, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for method, entry in results["summary"].items():
        curve = entry.get(key)
        if not curve or not curve["round"]:
            continue
        x, mean = np.array(curve["round"]), np.array(curve["mean"], dtype=float)
        style = "--" if method in ("sft", "dpo", "spin") else "-"
        (line,) = ax.plot(x, mean, style, marker="o", ms=3, label=method)
        lo = np.array([np.nan if v is None else v for v in curve["lo"]], dtype=float)
        hi = np.array([np.nan if v is None else v for v in curve["hi"]], dtype=float)
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.12)
    base = results["summary"].get("base")
    if base is not None and key == "accuracy_vs_round":
        ax.axhline(results["base"]["test_first"]["all"], color="gray", lw=0.8, ls=":", label="base")
    ax.set_xlabel("round (0 = base model)" if key == "accuracy_vs_round" else "round")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_accuracy_vs_round(results: dict[str, Any], path: Path) -> Path:
    n = len(results["eval"]["test_prompts"])
    return _curves(
        results, "accuracy_vs_round", path, "held-out accuracy (all attributes)",
        f"Accuracy vs round: {n} test prompts, first sample each; mean and 95% CI over seeds",
    )


def plot_flip_rate(results: dict[str, Any], path: Path) -> Path:
    return _curves(
        results, "flip_rate_vs_round", path, "flip rate (fraction with s ≠ +1)",
        "Anchor-criterion flip rate per round (mean of per-step values); spin/dpo/none never flip",
    )


def sample_grid(rows: list[tuple[str, Path]], prompts: list[str], path: Path, scale: int = 3) -> Path:
    """One row per method (its saved first-sample images), one column per prompt; frame strips of
    clips (images much wider than tall) are laid out transposed: one row per prompt, one column per method."""
    plt = _pyplot()
    rows = [(name, folder) for name, folder in rows if folder.is_dir()]
    first = Image.open(rows[0][1] / "00.png")
    strips = first.width > 2 * first.height
    n_r, n_c = (len(prompts), len(rows)) if strips else (len(rows), len(prompts))
    cell_w = 1.3 * (first.width / first.height) * 0.55 if strips else 1.3
    fig, axes = plt.subplots(n_r, n_c, figsize=(cell_w * n_c + 1.6, 1.25 * n_r + 0.9), dpi=110, squeeze=False)
    for m, (name, folder) in enumerate(rows):
        correct = json.loads((folder / "scores.json").read_text()) if (folder / "scores.json").is_file() else []
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
                    ax.set_title(name, fontsize=8)
                if m == 0:
                    ax.set_ylabel(prompt.replace(" moving ", "\nmoving "), fontsize=7, rotation=0, ha="right", va="center")
                continue
            if m == 0:
                ax.set_title(prompt.replace(" of ", " of\n").replace(" above ", "\nabove ").replace(" below ", "\nbelow "), fontsize=6)
            if c == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    what = "clip (frames left to right)" if strips else "image"
    fig.suptitle(f"Same held-out prompts and sample seeds for every method\n(first training seed; frame green = all attributes "
                 f"of the {what} correct)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
