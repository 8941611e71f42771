"""The methods the quality benchmark compares, as config overrides on one shared budget.

Every method trains from the same base model with the same budget (rounds, updates per
round, batch, LR schedule, sampler): only the rows below differ. Hyper-parameters (β, LR)
come from the tuning search documented in docs/results.md; the SePPO ablations (criterion,
reference strategy) share the tuned values of seppo-sign-uniform, as in the paper's ablations.
"""

from __future__ import annotations

from seppo_lib.config import ConfigError

BASE = "base"
SFT = "sft"  # the comparator of the paired table besides the base model

#: method name -> overrides on top of the benchmark preset (bench-quality.yaml).
METHODS: dict[str, tuple[str, ...]] = {
    "sft": ("train.method=sft",),
    "dpo": ("train.method=dpo",),
    "spin": ("train.method=spin",),
    "seppo-sign-uniform": ("train.method=seppo", "train.criterion=sign", "bank.reference=uniform"),
    "seppo-indicator-uniform": ("train.method=seppo", "train.criterion=indicator", "bank.reference=uniform"),
    "seppo-none-uniform": ("train.method=seppo", "train.criterion=none", "bank.reference=uniform"),
    "seppo-sign-latest": ("train.method=seppo", "train.criterion=sign", "bank.reference=latest"),
    "seppo-sign-initial": ("train.method=seppo", "train.criterion=sign", "bank.reference=initial"),
}

#: Tuned per-method hyper-parameters (see docs/results.md, "Tuning search"); applied after METHODS.
TUNED: dict[str, tuple[str, ...]] = {
    "sft": ("train.lr=0.0001",),
    "dpo": ("train.lr=3e-05", "train.beta=500.0"),
    "spin": ("train.lr=3e-05", "train.beta=2000.0"),
    "seppo-sign-uniform": ("train.lr=3e-05", "train.beta=500.0"),
}

ALL_METHODS: tuple[str, ...] = (BASE, *METHODS)
QUICK_METHODS: tuple[str, ...] = (BASE, "sft", "seppo-sign-uniform")


def method_overrides(name: str, *, tuned: bool = True) -> list[str]:
    """Config overrides that turn the benchmark preset into method `name` (with its tuned β / LR
    unless `tuned` is false, as in the tuning search itself)."""
    if name not in METHODS:
        raise ConfigError(f"unknown benchmark method {name!r}; use one of {', '.join(ALL_METHODS)}")
    family = name if name in TUNED else ("seppo-sign-uniform" if name.startswith("seppo") else name)
    return [*METHODS[name], *(TUNED.get(family, ()) if tuned else ())]


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names (`all` = every method), validated, in the given order."""
    names = list(ALL_METHODS) if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown or not names:
        raise ConfigError(f"unknown benchmark method(s) {', '.join(unknown) or '(none given)'}; use {', '.join(ALL_METHODS)} or all")
    return list(dict.fromkeys(names))
