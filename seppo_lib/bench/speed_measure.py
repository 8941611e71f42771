"""Measuring helpers of `seppo bench speed`: wall clocks, FLOP counts, a matmul peak, peak memory, compiles.

Every figure is taken on the device the work runs on: CUDA work is synchronized before a clock
is read; peak memory is `torch.cuda.max_memory_allocated` on CUDA and the process's peak resident
set size (the kernel's high-water mark, reset per phase) on CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def matmul_peak(device: str, precision: str, n: int, repeats: int = 10) -> float:
    """Achieved FLOP/s of an n×n×n matrix product in `precision` on `device` (median of `repeats` after warm-up)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(DTYPES[precision])
    b = torch.randn(n, n, device=device, generator=g).to(DTYPES[precision])
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / median(times)


@contextlib.contextmanager
def flop_count() -> Iterator[Callable[[], int]]:
    """Count the FLOPs of the aten ops run inside (matmuls, convolutions, attention: forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        yield counter.get_total_flops


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _reset_rss_peak() -> None:
    """Reset the kernel's peak-RSS mark of this process to its current RSS (Linux >= 4.0), where it can."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


class PeakMemory:
    """Peak memory while the `with` block runs (bytes): CUDA allocations, or on CPU the process's peak
    resident set size as the kernel tracks it (VmHWM, reset at entry; no polling thread, which would
    steal cycles from the OpenMP threads it measures). Where the mark cannot be reset, the peak is the
    process's lifetime peak."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_rss_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = int(torch.cuda.max_memory_allocated())
            return
        try:
            self.peak = _status_kib("VmHWM") * 1024
        except OSError:
            import resource

            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Phase:
    """One timed phase: wall seconds and peak memory (bytes)."""

    seconds: float
    peak_bytes: int


def timed(device: str, fn: Callable[[], Any]) -> tuple[Any, Phase]:
    """Run `fn` once; its result and its Phase (synchronized wall clock, peak memory)."""
    with PeakMemory(device) as mem:
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        seconds = time.perf_counter() - start
    return result, Phase(seconds, mem.peak)


def compiles() -> int:
    """Frames torch.compile has compiled in this process so far (a recompile adds one)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - torch without dynamo
        return 0
    return int(counters["frames"]["ok"])


def fresh_accelerate() -> None:
    """Forget accelerate's process-wide state, so the next `Accelerator` may use another mixed precision
    (an ablation round next to plain ones; accelerate's own tests reset it the same way)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


class UpdateClock:
    """A RunLogger that timestamps every logged update: the trainer logs once per optimizer update,
    so the gaps between successive calls are the wall time of each update after the first."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.stamps: list[float] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def set_tags(self, tags: dict[str, str]) -> None:
        return None

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        return None

    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, load averages, and the GPU when one is visible."""
    import platform

    import psutil

    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115 - read once
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def versions() -> dict[str, str]:
    import platform

    import diffusers
    import transformers

    from seppo_lib import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "seppo": __version__, "cuda": str(torch.version.cuda)}  # fmt: skip
