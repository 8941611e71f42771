"""Aggregate benchmark runs across seeds (mean and 95% t-interval) and format the markdown tables: accuracy per
method, and the paired differences (method − base, method − sft; `seppo_lib.bench.paired`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from seppo_lib.bench.methods import BASE, SFT
from seppo_lib.bench.paired import detectable_difference, difference_table, paired_bootstrap, score_table, variance_components
from seppo_lib.bench.scoring import ATTRIBUTE_KEYS
from seppo_lib.evaluation.stats import mean_ci_t


def _stat(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t-interval across seeds (lo/hi None from a single value)."""
    lo: float | None
    hi: float | None
    if len(values) >= 2 and max(values) > min(values):
        mean, lo, hi = mean_ci_t(values)
    else:
        mean = float(np.mean(values))
        lo = hi = mean if len(values) >= 2 else None
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(values), "values": values}


def curve_subset(options: dict[str, Any]) -> bool:
    """True when a benchmark scored its intermediate rounds on fewer prompts than the table (`--curve-prompts`):
    then every point of the accuracy-vs-round curve, base and final round included, is the first-sample estimate."""
    n = options.get("curve_prompts")
    return n is not None and n < options["prompts"]


def _round_accuracy(rounds: list[dict[str, Any]], first_only: bool = False) -> tuple[list[float], str]:
    """One round's held-out accuracy per seed with the table's estimate (all samples, "test") when
    every seed has it and not `first_only`, else the first sample per prompt ("test_first"); and which one it is."""
    if not first_only and all("test" in r for r in rounds):
        return [r["test"]["all"] for r in rounds], "all"
    return [r["test_first"]["all"] for r in rounds], "first"


def _curve(runs: list[dict[str, Any]], base: dict[str, Any] | None, key: str, first_only: bool = False) -> dict[str, Any]:
    """Per-round mean (and t-interval) across seeds of a per-round quantity; round 0 is the base model.

    For key "accuracy" the "estimate" list says per round whether the value is the table's
    (all samples per prompt: round 0 and the final round) or first-sample-only.
    """
    n_rounds = max(len(r["rounds"]) for r in runs)
    out: dict[str, Any] = {"round": [], "mean": [], "lo": [], "hi": []}
    if key == "accuracy":
        out["estimate"] = []
        if base is not None:
            value, estimate = _round_accuracy([base], first_only)
            out["round"].append(0)
            out["estimate"].append(estimate)
            for name in ("mean", "lo", "hi"):
                out[name].append(value[0])
    for k in range(n_rounds):
        present = [r["rounds"][k] for r in runs if len(r["rounds"]) > k]
        if key == "accuracy":
            values, estimate = _round_accuracy(present, first_only)
            out["estimate"].append(estimate)
        else:
            values = [rd["train_metrics"][key] for rd in present if key in rd["train_metrics"]]
            if not values:
                continue
        s = _stat(values)
        out["round"].append(k + 1)
        for name in ("mean", "lo", "hi"):
            out[name].append(s[name])
    return out


def _err_gap(runs: list[dict[str, Any]], k: int) -> float | None:
    """Mean over seeds of round k's e_θ(x_w) - e_ref(x_w) (None for sft, which has no reference)."""
    metrics = [r["rounds"][k]["train_metrics"] for r in runs]
    if not all("err_ref_w" in m for m in metrics):
        return None
    return float(np.mean([m["err_policy_w"] - m["err_ref_w"] for m in metrics]))


def aggregate(
    base: dict[str, Any], runs: list[dict[str, Any]], methods: list[str], with_base: bool, *, curve_subset: bool = False
) -> dict[str, Any]:
    """method -> {"test": {attr: stat}, "train": {...}, "gap": stat, curves, reference accuracy per round}."""
    out: dict[str, Any] = {}
    if with_base:
        out["base"] = {
            split: {key: _stat([base[split][key]]) for key in ATTRIBUTE_KEYS if key in base[split]} for split in ("test", "train")
        }
        out["base"]["gap"] = _stat([base["train"]["all"] - base["test"]["all"]])
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        entry: dict[str, Any] = {}
        for split in ("test", "train"):
            entry[split] = {
                key: _stat([r["final"][split][key] for r in mine]) for key in ATTRIBUTE_KEYS if key in mine[0]["final"][split]
            }
        entry["gap"] = _stat([r["final"]["train"]["all"] - r["final"]["test"]["all"] for r in mine])
        entry["accuracy_vs_round"] = _curve(mine, base, "accuracy", first_only=curve_subset)
        entry["flip_rate_vs_round"] = _curve(mine, None, "flip_rate")
        entry["err_gap_w_vs_round"] = [_err_gap(mine, k) for k in range(len(mine[0]["rounds"]))]
        entry["reference_accuracy_vs_round"] = [
            None if mine[0]["rounds"][k]["reference_accuracy"] is None
            else float(np.mean([r["rounds"][k]["reference_accuracy"] for r in mine]))
            for k in range(len(mine[0]["rounds"]))
        ]
        entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in mine]))
        out[method] = entry
    return out


def fmt(stat: dict[str, Any]) -> str:
    """'0.412 ± 0.031' (half-width of the 95% interval), or '0.412' without an interval."""
    if stat["lo"] is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {(stat['hi'] - stat['lo']) / 2:.3f}"


def markdown_table(summary: dict[str, Any], n_seeds: int) -> str:
    """Held-out accuracy per attribute and overall, train-prompt accuracy and the gap, per method."""
    present = {key for entry in summary.values() for key in entry["test"]}
    attributes = [key for key in ATTRIBUTE_KEYS if key != "all" and key in present]
    header = ["method", "test all", *attributes, "train all", "train − test"]
    lines = [
        f"Accuracy (fraction of images the world scorer accepts); mean ± 95% t-interval half-width over {n_seeds} seed(s).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, entry in summary.items():
        test = entry["test"]
        cells = [method, fmt(test["all"])]
        cells += [fmt(test[key]) if key in test else "—" for key in attributes]
        cells += [fmt(entry["train"]["all"]), fmt(entry["gap"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- paired differences (seppo_lib.bench.paired) --------------------------------------------

#: The design item 3 of issue 19 asks for (seeds, held-out prompts, samples per prompt): the table's second MDE column.
PLANNED_DESIGN = (5, 256, 2)


def _per_image(results: dict[str, Any]) -> tuple[list[float] | None, dict[str, dict[int, list[float]]]]:
    """The base model's and every run's held-out "all" score per image (method -> seed -> scores)."""
    runs: dict[str, dict[int, list[float]]] = {}
    for run in results["runs"]:
        runs.setdefault(run["method"], {})[int(run["seed"])] = run["final"]["test_all_per_image"]
    with_base = BASE in results["options"]["methods"] and "test_all_per_image" in results["base"]
    return results["base"]["test_all_per_image"] if with_base else None, runs


def _paired_row(method: str, vs: str, diff: np.ndarray, n_boot: int) -> dict[str, Any]:
    stat = paired_bootstrap(diff, n_boot=n_boot)
    components = variance_components(diff)
    seeds, prompts, samples = diff.shape
    mde = detectable_difference(components, seeds, prompts, samples)
    planned = detectable_difference(components, *PLANNED_DESIGN)
    by_seed = [float(v) for v in diff.mean(axis=(1, 2))]
    return {
        "method": method, "vs": vs, "mean": stat.mean, "lo": stat.lo, "hi": stat.hi, "excludes_zero": stat.excludes_zero,
        "by_seed": by_seed, "seeds_better": sum(v > 0 for v in by_seed),
        "seeds": seeds, "prompts": prompts, "samples": samples, "components": asdict(components),
        "mde": None if np.isnan(mde) else mde, "mde_planned": None if np.isnan(planned) else planned,
    }  # fmt: skip


def _pairs(base: list[float] | None, runs: dict[str, dict[int, list[float]]], k: int, n_boot: int) -> list[dict[str, Any]]:
    """method − base and method − sft rows from per-image scores (method -> seed -> scores, `k` samples per prompt)."""
    rows = []
    for method, by_seed in runs.items():
        table = score_table([by_seed[s] for s in sorted(by_seed)], k)
        if base is not None:
            rows.append(_paired_row(method, BASE, difference_table(table, score_table([base], k)[0]), n_boot))
        if method != SFT and SFT in runs:
            common = sorted(set(by_seed) & set(runs[SFT]))
            if common:
                mine = score_table([by_seed[s] for s in common], k)
                rows.append(_paired_row(method, SFT, difference_table(mine, score_table([runs[SFT][s] for s in common], k)), n_boot))
    return rows


def paired_summary(results: dict[str, Any], n_boot: int = 10_000) -> list[dict[str, Any]]:
    """Held-out "all" differences method − base and method − sft on the same prompts, sample seeds and training
    seeds (the seeds both have), with the crossed bootstrap's 95% interval and the detectable difference."""
    base, runs = _per_image(results)
    return _pairs(base, runs, int(results["options"]["samples_per_prompt"]), n_boot)


def budget_rounds(n_rounds: int) -> list[int]:
    """The budgets methods are compared at: a quarter, half and all of the run's rounds (distinct, at least 1)."""
    return sorted({max(1, n_rounds // 4), max(1, n_rounds // 2), n_rounds})


def budget_summary(results: dict[str, Any], n_boot: int = 10_000) -> list[dict[str, Any]]:
    """Paired differences after a quarter, half and all of the rounds (`budget_rounds`), on the accuracy-vs-round
    curve's images: the first sample of the first `--curve-prompts` test prompts, scored after every round with the
    same noise. [] when a cached result predates the curve's per-image scores (`first_all_per_image`) or the curve
    has fewer than 2 prompts (no prompt-level variance)."""
    runs, entries = results["runs"], [r for run in results["runs"] for r in run["rounds"]] + [results["base"]]
    if not runs or any(len(e.get("first_all_per_image", ())) < 2 for e in entries):
        return []
    train = runs[0]["config"]["train"]
    base = results["base"]["first_all_per_image"] if BASE in results["options"]["methods"] else None
    rows = []
    for budget in budget_rounds(int(train["n_rounds"])):
        per_image: dict[str, dict[int, list[float]]] = {}
        for run in runs:
            point = next(r for r in run["rounds"] if r["round"] == budget)
            per_image.setdefault(run["method"], {})[int(run["seed"])] = point["first_all_per_image"]
        updates = budget * int(train["updates_per_round"])
        rows += [{"round": budget, "updates": updates, **row} for row in _pairs(base, per_image, 1, n_boot)]
    return rows


def budget_table(rows: list[dict[str, Any]]) -> str:
    """Paired differences at each budget (`budget_summary`) as a markdown table."""
    lines = [
        "Paired differences in held-out accuracy (\"all\") at several budgets, on the accuracy-vs-round curve's images "
        "(first sample of each curve prompt, the same noise after every round); 95% crossed bootstrap interval.",
        "",
        "| round | updates | method | vs | difference | 95% CI | excludes 0 | seeds better | seeds × prompts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [str(r["round"]), str(r["updates"]), r["method"], r["vs"], _num(r["mean"], True),
                 f"[{r['lo']:+.3f}, {r['hi']:+.3f}]", "**yes**" if r["excludes_zero"] else "no",
                 f"{r['seeds_better']}/{r['seeds']}", f"{r['seeds']} × {r['prompts']}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: float | None, sign: bool = False) -> str:
    return "—" if value is None else f"{value:+.3f}" if sign else f"{value:.3f}"


def paired_table(rows: list[dict[str, Any]]) -> str:
    """The paired-difference table: difference, 95% CI, whether it excludes 0, and the detectable differences."""
    planned = " × ".join(str(v) for v in PLANNED_DESIGN)
    lines = [
        "Paired differences in held-out accuracy (\"all\"): method − comparator on the same prompts, sample seeds and "
        "training seeds; 95% crossed bootstrap interval (training seeds × prompts, 10000 resamples); MDE: the smallest "
        "true difference the design detects with 80% power at α = 0.05, from the measured variance components; seeds better: "
        "training seeds whose mean difference is above 0.",
        "",
        f"| method | vs | difference | 95% CI | excludes 0 | seeds better | seeds × prompts × samples | MDE (this design) | MDE ({planned}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["method"], r["vs"], _num(r["mean"], True), f"[{r['lo']:+.3f}, {r['hi']:+.3f}]",
                 "**yes**" if r["excludes_zero"] else "no", f"{r['seeds_better']}/{r['seeds']}",
                 f"{r['seeds']} × {r['prompts']} × {r['samples']}",
                 _num(r["mde"]), _num(r["mde_planned"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def preset_search_table(doc: dict[str, Any], n_boot: int = 10_000) -> str:
    """The world-preset search (docs/results/world-preset/search.json): every run's held-out attributes and its paired
    difference with the base model on the same prompts and sample seeds (one training seed: prompt bootstrap)."""
    k = int(doc["eval"]["samples_per_prompt"])
    base = score_table([doc["base"]["test_all_per_image"]], k)[0]
    keys = ("colour", "shape", "count", "relation", "all")
    lines = ["| run | method | updates × batch | lr | other settings | " + " | ".join(keys) + " | all − base [95% CI] |",
             "|---|---|---|---|---|" + "---|" * (len(keys) + 1),
             "| base | — | — | — | — | " + " | ".join(f"{doc['base']['test'][key]:.3f}" for key in keys) + " | — |"]
    for run in doc["runs"]:
        stat = paired_bootstrap(difference_table(score_table([run["test_all_per_image"]], k), base), n_boot=n_boot)
        other = [o for o in run["overrides"] if not o.startswith(("train.lr=", "train.batch_size=", "train.n_rounds=",
                                                                  "train.updates_per_round=", "data.shard_size="))]  # fmt: skip
        cells = [run["name"], run["method"], f"{run['updates']} × {run['batch_size']}", f"{run['lr']:g}", ", ".join(other) or "—",
                 *(f"{run['test'][key]:.3f}" for key in keys), f"{stat.mean:+.3f} [{stat.lo:+.3f}, {stat.hi:+.3f}]"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
