"""Tables and figures of a `seppo bench speed` JSON (docs/performance.md is built from these, and a test checks it).

Every number comes from the JSON: throughputs from median times, ratios project / baseline (or
switch on / plain project), FLOP rates against the best matmul rate of the same run.
matplotlib is used through `matplotlib.figure.Figure` only (no pyplot).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

MIB = 2**20
PARTS = (("step", "pairs/s"), ("sampler", "images/s"), ("round", "pairs/s"))


def _g(value: float) -> str:
    """3 significant digits, no exponent for the ranges these tables hold."""
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) < 1e5 else f"{value:,.0f}"


def _rate(part: dict[str, Any]) -> str:
    return f"{_g(part['gflops'])} ({100 * part['peak_fraction']:.0f}%)" if part["gflops"] else "–"


def comparison_table(doc: dict[str, Any]) -> str:
    """Project vs baseline per model and part: throughput, ratio, GFLOP/s (% of the matmul peak), peak memory."""
    lines = ["| model | part | project | baseline | project / baseline | GFLOP/s project (% of peak) | "
             "GFLOP/s baseline (% of peak) | peak memory MiB project / baseline |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in doc["models"].items():
        for part, unit in PARTS:
            if part not in m["project"] or part not in m["baseline"]:
                continue
            p, b = m["project"][part], m["baseline"][part]
            lines.append(
                f"| {name} | {part} ({unit}) | {_g(p['per_s'])} | {_g(b['per_s'])} | **{m['ratios'][part]:.2f}×** | "
                f"{_rate(p)} | {_rate(b)} | {p['peak_bytes'] / MIB:,.0f} / {b['peak_bytes'] / MIB:,.0f} |"
            )
    return "\n".join(lines)


def ablation_table(doc: dict[str, Any]) -> str:
    lines = ["| model | switch | numerics | step × plain | sampler × plain | round × plain | compiles (first round / timed) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in doc["models"].items():
        for row in m["ablations"]:
            if "error" in row:
                lines.append(f"| {name} | `{' '.join(row['overrides'])}` | failed: {row['error']} | – | – | – | – |")
                continue
            ratio = row["vs_plain"]
            cells = [f"{ratio[k]:.2f}×" if k in ratio else "–" for k in ("step", "sampler", "round")]
            compiles = f"{row['compiles_first']} / {row['compiles_timed']}" if "compiles_first" in row else "–"
            lines.append(f"| {name} | `{' '.join(row['overrides'])}` | {row['numerics']} | {' | '.join(cells)} | {compiles} |")
    return "\n".join(lines)


def bank_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| reference draw | bank size K | bank store | distinct references | swaps | MiB downloaded into the cache | "
             "sample s | train s | round s |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| once per {r['resample']} | {r['bank_size']} | {r.get('store', 'local folder')} | {r['distinct_refs']} | "
                     f"{r['swaps']} | {r['cache_bytes_fetched'] / MIB:.1f} | {r['sample_s']:.2f} | {r['train_s']:.2f} | "
                     f"{r['round_s']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def data_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data.max_rows | prepare s | sample s | train s | round s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['max_rows']} | {r['prepare_s']:.1f} | {r['sample_s']:.2f} | {r['train_s']:.2f} | {r['round_s']:.2f} |")
    return "\n".join(lines)


def shard_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| worker processes | torch threads each | wall s incl. process start (median) | sampling s inside workers (median) | runs |",
             "|---|---|---|---|---|"]  # fmt: skip
    for n in sorted({r["shards"] for r in rows}):
        mine = [r for r in rows if r["shards"] == n]
        lines.append(f"| {n} | {mine[0]['threads_per_worker']} | {statistics.median(r['wall_s'] for r in mine):.2f} | "
                     f"{statistics.median(r['sampling_s'] for r in mine):.2f} | {len(mine)} |")  # fmt: skip
    return "\n".join(lines)


def cache_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | cached checkpoints | RSS growth MiB | tensor MiB | MiB per cached checkpoint (tensors) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} ({r['trainable']}) | {r['cached']} | {r['rss_growth_bytes'] / MIB:.1f} | "
                     f"{r['tensor_bytes'] / MIB:.1f} | {r['tensor_bytes'] / MIB / r['cached']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def preset_table(presets: dict[str, Any]) -> str:
    lines = ["| preset | pairs per round | sampler steps | prepare s | seconds per round | median s/round |", "|---|---|---|---|---|---|"]
    for name, p in presets.items():
        each = ", ".join(f"{s:.1f}" for s in p["round_s"])
        lines.append(f"| {name} | {p['pairs_per_round']} | {p['sampler_steps']} | {p['prepare_s']:.1f} | {each} | "
                     f"{statistics.median(p['round_s']):.1f} |")  # fmt: skip
    return "\n".join(lines)


def machine_line(doc: dict[str, Any]) -> str:
    before, after, v = doc["machine_before"], doc["machine_after"], doc["versions"]
    gpu = f", {before['gpu']}" if "gpu" in before else ""
    return (f"{before['cpu']}, {before['cores']} cores, {before['torch_threads']} torch threads, {before['memory_gib']} GiB{gpu}; "
            f"load average (1/5/15 min) {'/'.join(map(str, before['load_average']))} before, "
            f"{'/'.join(map(str, after['load_average']))} after; torch {v['torch']}, diffusers {v['diffusers']}, "
            f"transformers {v['transformers']}, Python {v['python']}; device {doc['device']}, {doc['precision']}, "
            f"{doc['repeats']} timed rounds per side, {doc['wall_seconds'] / 60:.1f} min")  # fmt: skip


def tables(doc: dict[str, Any]) -> dict[str, str]:
    """Every table the JSON has, by name."""
    out = {"comparison": comparison_table(doc), "ablations": ablation_table(doc)} if doc["models"] else {}
    if "scaling" in doc:
        out.update(bank=bank_table(doc["scaling"]["bank_size"]), shards=shard_table(doc["scaling"]["shards"]),
                   cache=cache_table(doc["scaling"]["cache_memory"]))  # fmt: skip
        if "data_size" in doc["scaling"]:
            out["data"] = data_table(doc["scaling"]["data_size"])
    if "presets" in doc:
        out["presets"] = preset_table(doc["presets"])
    return out


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.2), dpi=110)
    return fig, fig.subplots()


def _bank_figure(rows: list[dict[str, Any]]) -> Any:
    fig, ax = _figure()
    sizes = sorted({r["bank_size"] for r in rows})
    for mode, marker in (("round", "o"), ("step", "s")):
        mine = sorted((r for r in rows if r["resample"] == mode), key=lambda r: r["bank_size"])
        ax.plot([r["bank_size"] for r in mine], [r["round_s"] for r in mine], marker=marker, label=f"reference drawn once per {mode}")
    store = rows[0].get("store", "local folder").split(" (")[0]
    ax.set(xscale="log", xlabel="checkpoints in the bank (K)", ylabel="round wall time (s)", title=f"World round vs bank size ({store} bank)")
    ax.set_xticks(sizes, labels=[str(k) for k in sizes])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _shard_figure(rows: list[dict[str, Any]]) -> Any:
    fig, ax = _figure()
    shards = sorted({r["shards"] for r in rows})
    for key, label, offset in (("wall_s", "wall incl. process start", -0.18), ("sampling_s", "sampling inside workers", 0.18)):
        ax.bar([n + offset for n in shards], [statistics.median(r[key] for r in rows if r["shards"] == n) for n in shards],
               width=0.34, label=label)  # fmt: skip
    ax.set(xticks=shards, xlabel="sampling worker processes", ylabel="seconds (median)", title="World reference sampling vs shards")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _cache_figure(rows: list[dict[str, Any]]) -> Any:
    fig, ax = _figure()
    for name, colour in zip(dict.fromkeys(r["model"] for r in rows), ("tab:blue", "tab:green", "tab:red"), strict=False):
        mine = [r for r in rows if r["model"] == name]
        ax.plot([r["cached"] for r in mine], [r["rss_growth_bytes"] / MIB for r in mine], marker="o", color=colour, label=f"{name}: RSS growth")
        ax.plot([r["cached"] for r in mine], [r["tensor_bytes"] / MIB for r in mine], ls=":", color=colour, label=f"{name}: tensor bytes")
    cached = sorted({r["cached"] for r in rows})
    ax.set(xticks=cached, xlabel="checkpoints in the reference cache", ylabel="MiB", title="Reference-weight cache (full fine-tuning)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _data_figure(rows: list[dict[str, Any]]) -> Any:
    fig, ax = _figure()
    sizes = [r["max_rows"] for r in rows]
    ax.plot(sizes, [r["prepare_s"] for r in rows], marker="o", label="prepare (render, encode, shard)")
    ax.plot(sizes, [r["round_s"] for r in rows], marker="s", label="one round (sample + train)")
    ax.set(xscale="log", xlabel="training rows (data.max_rows)", ylabel="seconds", title="World preparation and round vs data size")
    ax.set_xticks(sizes, labels=[str(k) for k in sizes])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figures(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """bank_size.png, shards.png, data_size.png and cache_memory.png in `out_dir` (when the JSON has scaling figures)."""
    if "scaling" not in doc:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    s = doc["scaling"]
    paths = []
    drawn = [("bank_size.png", _bank_figure(s["bank_size"])), ("shards.png", _shard_figure(s["shards"])),
             ("cache_memory.png", _cache_figure(s["cache_memory"]))]  # fmt: skip
    if "data_size" in s:
        drawn.append(("data_size.png", _data_figure(s["data_size"])))
    for name, fig in drawn:
        paths.append(out_dir / name)
        fig.savefig(paths[-1])
    return paths


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The ratios, one line per model, for the terminal."""
    lines = []
    for name, m in doc["models"].items():
        ratios = ", ".join(f"{part} {m['ratios'][part]:.2f}×" for part, _ in PARTS if part in m["ratios"])
        lines.append(f"{name}: project / baseline: {ratios}")
    return lines
