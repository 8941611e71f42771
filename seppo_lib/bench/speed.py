"""`seppo bench speed`: a SePPO round measured side by side with the public way of doing it.

For every model (`speed_models.MODELS`) one process runs, interleaved: a warm-up round of each side
(FLOPs counted there, eagerly), then `repeats` timed rounds alternating project / baseline (the order
flips every repetition), then the ablation rounds, each switch alternated with plain project rounds.
The project's rounds are the real steps (`speed_project`), the baseline's the public composition
(`speed_baseline`). Reported per part (training step, reference sampler, whole round): throughput
(pairs/s or images/s, from medians), achieved GFLOP/s, its fraction of the best large-matmul rate
measured in the same run and dtype, peak memory, and every ratio project / baseline. The JSON has
every raw timing; `speed_report` turns it into the tables and figures of docs/performance.md.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seppo_lib.bench.speed_measure import machine, matmul_peak, median, versions
from seppo_lib.bench.speed_models import MODELS, BenchModel, Workload
from seppo_lib.bench.speed_project import RoundTiming, prepare, project_config, project_round
from seppo_lib.errors import ConfigError

logger = logging.getLogger(__name__)

#: switch name -> (config overrides for a workload, what the CPU guard in tests/unit/test_fast_paths.py shows)
ABLATIONS: dict[str, tuple[Any, str]] = {
    "channels_last": (lambda w: ("train.channels_last=true", "sampling.channels_last=true"), "equal within float rounding"),
    "adamw_forloop": (lambda w: ("train.adamw_impl=for-loop",), "bit-identical update (the default foreach is the same math)"),
    "adamw_fused": (lambda w: ("train.adamw_impl=fused",), "equal within float rounding"),
    "compile": (lambda w: ("train.compile=true", "sampling.compile=true"), "equal within float rounding"),
    "bf16": (lambda w: ("train.mixed_precision=bf16", "sampling.precision=bf16"), "changes numerics (bf16)"),
    "dpmsolver_half_steps": (lambda w: ("sampling.scheduler=dpmsolver", f"sampling.num_inference_steps={max(1, w.steps // 2)}"),
                             "changes samples (another sampler); quality not measured here"),
    "decode_roundtrip": (lambda w: ("sampling.decode_roundtrip=true",), "changes samples (the paper's setting is off)"),
}  # fmt: skip
QUICK_ABLATIONS = ("channels_last", "adamw_fused", "bf16")
DEFAULT_ABLATIONS = ("channels_last", "adamw_forloop", "adamw_fused", "bf16", "dpmsolver_half_steps", "decode_roundtrip", "compile")


@dataclass(frozen=True)
class SpeedOptions:
    out: Path  # the JSON file
    workdir: Path
    device: str = "cpu"
    precision: str = "fp32"
    models: tuple[str, ...] = ("world", "tiny-vae")
    quick: bool = False
    repeats: int = 3
    ablations: tuple[str, ...] = ()
    scaling: bool = False
    presets: bool = False
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_ablations(text: str) -> tuple[str, ...]:
    if text.strip() in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ConfigError(f"--ablations: unknown {', '.join(unknown)}; choose from {', '.join(ABLATIONS)} or none")
    return names


def check_device(device: str) -> None:
    """The project's steps pick CUDA whenever it is visible, so the bench's device must be that one."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")
    if device == "cpu" and torch.cuda.is_available():
        raise ConfigError("--device cpu but CUDA is visible, and the project's steps would use it; set CUDA_VISIBLE_DEVICES=")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: use cpu or cuda")


def _peak(options: SpeedOptions) -> float:
    return matmul_peak(options.device, options.precision, 8192 if options.device == "cuda" else 2048)


def _part(seconds: list[float], units: int, flops: float, peak: float, memory: list[int]) -> dict[str, Any]:
    """Throughput from the median time of `units` of work, achieved GFLOP/s and its fraction of `peak`."""
    t = median(seconds)
    rate = flops / t if flops and t > 0 else 0.0
    return {"median_s": t, "per_s": units / t if t > 0 else 0.0, "gflops": rate / 1e9, "peak_fraction": rate / peak if peak else 0.0,
            "peak_bytes": max(memory, default=0), "n": len(seconds)}  # fmt: skip


def summarize(rounds: list[RoundTiming], flops: dict[str, float], w: Workload, peak: float) -> dict[str, Any]:
    """Step, sampler and round figures of one side from its timed rounds; `flops`: sample_per_round and
    train_per_update (counted in its warm-up round)."""
    updates = [u for r in rounds for u in r.updates]
    sample_f, update_f = flops["sample_per_round"], flops["train_per_update"]
    out = {
        "sampler": _part([r.sample.seconds for r in rounds], w.pairs, sample_f, peak, [r.sample.peak_bytes for r in rounds]),
        "flops": dict(flops),
    }  # fmt: skip
    if updates:  # a sampler-only model has no step and its "round" is the sampler
        out["step"] = _part(updates, w.batch_size, update_f, peak, [r.train.peak_bytes for r in rounds])
        out["round"] = _part([r.seconds for r in rounds], w.pairs, sample_f + update_f * w.updates, peak,
                             [max(r.sample.peak_bytes, r.train.peak_bytes) for r in rounds])  # fmt: skip
    return out


def _flops(warm: RoundTiming, w: Workload) -> dict[str, float]:
    return {"sample_per_round": warm.sample_flops, "train_per_update": warm.train_flops / w.updates}


def recompute(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with every model's summaries and ratios derived again from its raw rounds (what the doc test checks)."""
    out = copy.deepcopy(doc)
    for m in out["models"].values():
        w = Workload(**{k: v for k, v in m["workload"].items() if k != "pairs_per_round"})
        for side in ("project", "baseline"):
            rounds = [RoundTiming.from_dict(r) for r in m["rounds"][side]]
            m[side] = summarize(rounds, m[side]["flops"], w, m["peak_flops"])
        m["ratios"] = _ratios(m["project"], m["baseline"])
        for row in (r for r in m["ablations"] if r["rounds"]):
            summary = summarize([RoundTiming.from_dict(r) for r in row["rounds"]], m["project"]["flops"], w, m["peak_flops"])
            row["vs_plain"] = _ratios(summary, m["project"])
    return out


def _ratios(project: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    return {part: project[part]["per_s"] / baseline[part]["per_s"] for part in ("step", "sampler", "round")
            if part in project and part in baseline and baseline[part]["per_s"] > 0}  # fmt: skip


def _side_rounds(options: SpeedOptions, run_project: Any, run_baseline: Any) -> tuple[list[RoundTiming], list[RoundTiming]]:
    """`repeats` rounds of each side, alternating, the order flipped every repetition."""
    project: list[RoundTiming] = []
    baseline: list[RoundTiming] = []
    for r in range(options.repeats):
        order = ((project, run_project), (baseline, run_baseline))
        for rounds, run in order if r % 2 == 0 else order[::-1]:
            rounds.append(run())
            logger.info("%s round: %.2f s", "project" if rounds is project else "baseline", rounds[-1].seconds)
    return project, baseline


def _ablation(options: SpeedOptions, name: str, model: BenchModel, w: Workload, data_dir: Path, train: bool,
              plain: list[RoundTiming]) -> dict[str, Any]:  # fmt: skip
    """Rounds with one switch on, alternated with plain rounds (appended to `plain`); compile gets an untimed first round."""
    overrides, numerics = ABLATIONS[name]
    cfg = project_config(model, options.workdir / model.name, w, options.precision, overrides(w))
    plain_cfg = project_config(model, options.workdir / model.name, w, options.precision)
    first = project_round(cfg, data_dir, options.device, train=train) if name == "compile" else None
    rounds = []
    for _ in range(max(1, options.repeats - 1)):
        rounds.append(project_round(cfg, data_dir, options.device, train=train))
        plain.append(project_round(plain_cfg, data_dir, options.device, train=train))
    row: dict[str, Any] = {"switch": name, "overrides": list(overrides(w)), "numerics": numerics,
                           "rounds": [r.as_dict() for r in rounds], "compiles_timed": sum(r.compiles for r in rounds)}  # fmt: skip
    if first is not None:
        row.update(first_round_s=first.seconds, compiles_first=first.compiles)
    return row


def _safe_ablation(options: SpeedOptions, name: str, model: BenchModel, w: Workload, data_dir: Path, train: bool,
                   plain: list[RoundTiming]) -> dict[str, Any]:  # fmt: skip
    """`_ablation`, or a row naming the error when the switch fails on this model (the benchmark goes on)."""
    try:
        return _ablation(options, name, model, w, data_dir, train, plain)
    except Exception as err:  # noqa: BLE001 - a failing switch is a finding of the benchmark, reported in its row
        logger.exception("ablation %s failed on %s", name, model.name)
        return {"switch": name, "overrides": list(ABLATIONS[name][0](w)), "numerics": ABLATIONS[name][1], "rounds": [],
                "compiles_timed": 0, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}  # fmt: skip


def _applicable(name: str, model: BenchModel, options: SpeedOptions, train: bool) -> bool:
    if not train and (name.startswith("adamw") or name == "compile"):
        return False  # a sampler-only model (SD1.5 on CPU); compiling its 860 M-parameter UNet takes too long there
    if name == "bf16" and options.precision != "fp32":
        return False
    if name == "decode_roundtrip" and model.name == "world":
        return False  # pixel space: nothing to decode
    return not (name == "compile" and options.quick)


def _baseline_for(model: BenchModel, options: SpeedOptions, w: Workload, cfg: Any) -> Any:
    """The baseline composition on the model's exported pipeline folder and the world's winner images."""
    from seppo_lib.bench.speed_baseline import Baseline, export_pipeline, winner_pixels
    from seppo_lib.data.sources import builtin_params
    from seppo_lib.models import resolve_model_dir
    from seppo_lib.world.generate import generate_dataset

    work = options.workdir / model.name
    base = resolve_model_dir(cfg.model.pretrained, cfg.bank.cache_dir)
    pipe = export_pipeline(base, cfg.model.pretrained, work / "pipeline", Path(cfg.bank.cache_dir), w.caption_tokens)
    source = work / "world-train"
    if not (source / "metadata.jsonl").is_file():
        params = builtin_params("builtin:world", max_rows=cfg.data.max_rows, paired=False, num_frames=1, frame_stride=1)
        generate_dataset(source, **params)  # type: ignore[arg-type]
    captions, winners = winner_pixels(source, w.pairs, w.resolution)
    return Baseline(pipe, work / "baseline", w, options.precision, options.device, captions, winners)


def bench_model(name: str, options: SpeedOptions) -> dict[str, Any]:
    """Warm-up, interleaved timed rounds and ablations of one model; its JSON section."""
    model = MODELS[name]
    w = model.workload(options.device, options.quick)
    train = options.device == "cuda" or model.train_on_cpu
    torch._dynamo.reset()  # compiled graphs of the previous model would count against this one's recompile limit
    cfg = project_config(model, options.workdir / name, w, options.precision)
    data_dir = prepare(cfg)
    baseline = _baseline_for(model, options, w, cfg)
    peaks = [_peak(options)]
    warm_p = project_round(cfg, data_dir, options.device, count_flops=True, train=train)
    warm_b = baseline.round(count_flops=True, train=train)
    project, base_rounds = _side_rounds(
        options, lambda: project_round(cfg, data_dir, options.device, train=train), lambda: baseline.round(train=train)
    )
    peaks.append(_peak(options))
    ablations = [_safe_ablation(options, a, model, w, data_dir, train, project)
                 for a in options.ablations if _applicable(a, model, options, train)]  # fmt: skip
    peaks.append(_peak(options))
    peak = max(peaks)
    sides = {"project": summarize(project, _flops(warm_p, w), w, peak), "baseline": summarize(base_rounds, _flops(warm_b, w), w, peak)}
    for row in (r for r in ablations if r["rounds"]):
        summary = summarize([RoundTiming.from_dict(r) for r in row["rounds"]], _flops(warm_p, w), w, peak)
        row["vs_plain"] = _ratios(summary, sides["project"])
    return {
        "model": name, "summary": model.summary, "workload": w.as_dict(), "train": train, "peaks_flops": peaks,
        "peak_flops": peak, **sides, "ratios": _ratios(sides["project"], sides["baseline"]), "ablations": ablations,
        "warmup": {"project": warm_p.as_dict(), "baseline": warm_b.as_dict()},
        "rounds": {"project": [r.as_dict() for r in project], "baseline": [r.as_dict() for r in base_rounds]},
    }  # fmt: skip


def run_speed(options: SpeedOptions) -> dict[str, Any]:
    """Run every requested model (then scaling and presets when asked) and write the JSON to `options.out`."""
    check_device(options.device)
    start = time.time()
    doc: dict[str, Any] = {
        "command": options.command, "device": options.device, "precision": options.precision, "quick": options.quick,
        "repeats": options.repeats, "machine_before": machine(), "versions": versions(), "models": {},
    }  # fmt: skip
    options.out.parent.mkdir(parents=True, exist_ok=True)
    for name in options.models:
        logger.info("benchmarking %s", name)
        doc["models"][name] = bench_model(name, options)
        _write(options.out, {**doc, "partial": True})  # a later failure keeps the models measured so far
    if options.scaling:
        from seppo_lib.bench.speed_scaling import run_scaling

        doc["scaling"] = run_scaling(options)
    if options.presets:
        from seppo_lib.bench.speed_scaling import preset_rounds

        doc["presets"] = {p: preset_rounds(p, options) for p in ("tiny", "world")}
    doc["machine_after"] = machine()
    doc["wall_seconds"] = time.time() - start
    _write(options.out, doc)
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
