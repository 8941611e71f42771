"""The training methods as records: one registry instead of `method == ...` tests across the code.

A `MethodSpec` holds every trait the loop reads: the partner the winner is paired with, the
reference model it compares against (its default and the `bank.reference` values it allows),
whether it needs paired data, its per-sample loss and the metrics it logs. Config validation,
data preparation, sampling, the training step and the pipeline read these traits through
`method_spec(cfg.train.method)`. Adding a method is one `register_method(MethodSpec(...))` and
its loss: nothing else branches on a method's name.

A loss takes the micro-batch's per-sample errors (`StepErrors`) and the train section and
returns `LossTerms`: per-sample losses (the step takes their mean) and the scalars the method
logs besides `loss` and the error means (`ERROR_METRICS`, which the step computes).

This module imports no torch (config validation reads the registry, and the pipeline compiles
without torch): the built-in losses import `seppo_lib.losses` on their first call.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from seppo_lib.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

    from seppo_lib.config import TrainConfig

Partner = Literal["none", "data_loser", "reference_sample"]
Reference = Literal["initial", "latest", "uniform"]
PARTNERS: tuple[Partner, ...] = ("none", "data_loser", "reference_sample")
REFERENCES: tuple[Reference, ...] = ("initial", "latest", "uniform")
METHOD_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: the error means the step logs: the winner's always, the reference's with a reference, the partner's with a partner
ERROR_METRICS = ("err_policy_w", "err_ref_w", "err_policy_r", "err_ref_r")
PREFERENCE_METRICS = ("loss", "implicit_acc", "flip_rate", *ERROR_METRICS)


@dataclass(frozen=True)
class StepErrors:
    """Per-sample denoising errors e_m(x) of one micro-batch (ALGORITHM.md), each of shape (B,)."""

    policy_w: Tensor
    ref_w: Tensor | None = None  # None for a method without a reference model
    policy_p: Tensor | None = None  # the partner's (data loser or reference sample); None without a partner
    ref_p: Tensor | None = None


@dataclass(frozen=True)
class LossTerms:
    """A method's per-sample losses (with grad) and the detached scalars it logs by name."""

    loss: Tensor
    logged: Mapping[str, Tensor] = field(default_factory=dict)


LossFn = Callable[[StepErrors, "TrainConfig"], LossTerms]


@dataclass(frozen=True)
class MethodSpec:
    """One training method (see the module docstring); `__post_init__` rejects inconsistent traits."""

    name: str
    description: str  # one line, shown in the config reference
    loss: LossFn
    partner: Partner = "none"
    default_reference: Reference | None = None  # None: no reference model
    allowed_references: tuple[Reference, ...] = ()  # the bank.reference values it accepts
    needs_pairs: bool = False  # paired data (a loser per row)
    metrics: tuple[str, ...] = ("loss", "err_policy_w")  # logged per update, in this order

    def __post_init__(self) -> None:
        problem = _spec_problem(self)
        if problem:
            raise ConfigError(f"method {self.name!r}: {problem}")

    @property
    def needs_reference(self) -> bool:
        return self.default_reference is not None

    @property
    def needs_samples(self) -> bool:
        """Reference samples generated before each round (the sample_reference step)."""
        return self.partner == "reference_sample"


def _spec_problem(spec: MethodSpec) -> str | None:
    if not METHOD_NAME.match(spec.name):
        return "a name is 1-32 lowercase letters, digits, '_' or '-', starting with a letter"
    if "\n" in spec.description or not spec.description.strip():
        return "the description must be one non-empty line"
    if spec.partner not in PARTNERS:
        return f"partner must be one of {', '.join(PARTNERS)}"
    if any(r not in REFERENCES for r in spec.allowed_references):
        return f"allowed_references must be among {', '.join(REFERENCES)}"
    if (spec.default_reference is None) != (not spec.allowed_references):
        return "a method without a reference allows no bank.reference, one with a reference allows at least one"
    if spec.default_reference is not None and spec.default_reference not in spec.allowed_references:
        return f"default_reference {spec.default_reference} is not in allowed_references"
    if spec.partner != "none" and spec.default_reference is None:
        return "a method with a partner compares against a reference model: set default_reference"
    if (spec.partner == "data_loser") != spec.needs_pairs:
        return "the data-loser partner and paired data go together (needs_pairs)"
    available = {"loss", "err_policy_w"} | ({"err_ref_w"} if spec.needs_reference else set())
    available |= {"err_policy_r", "err_ref_r"} if spec.partner != "none" else set()
    unknown = [m for m in spec.metrics if m in ERROR_METRICS and m not in available]
    if "loss" not in spec.metrics or unknown or len(set(spec.metrics)) != len(spec.metrics):
        return f"metrics must name loss once, each metric once, and only errors the step has ({', '.join(sorted(available))})"
    return None


#: name -> record; `register_method` adds to it.
METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add `spec` to the registry (config validation and the training step accept its name from now on)."""
    if spec.name in METHODS:
        raise ConfigError(f"method {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    return spec


def unknown_method_message(name: str) -> str:
    """'unknown method; did you mean dpo? (methods: ...)' for a name not in the registry (difflib)."""
    close = difflib.get_close_matches(name, list(METHODS), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown method{hint} (methods: {', '.join(METHODS)})"


def method_spec(name: str) -> MethodSpec:
    """The record of method `name`, or a one-line ConfigError with the closest name and the choices."""
    spec = METHODS.get(name)
    if spec is None:
        shown = "".join(c if c.isprintable() else "?" for c in repr(name))[:80]
        raise ConfigError(f"{unknown_method_message(name)}, got {shown}")
    return spec


def method_choices() -> str:
    """'sft (…) | dpo (…) | …': every registered method with its description."""
    return " | ".join(f"{s.name} ({s.description})" for s in METHODS.values())


# ---- the built-in methods ------------------------------------------------------------------
# Each loss imports seppo_lib.losses (torch) when first called; see the module docstring.


def _pair(errors: StepErrors) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if errors.ref_w is None or errors.policy_p is None or errors.ref_p is None:
        raise ConfigError("this method needs reference errors and a partner's errors")
    return errors.policy_w, errors.ref_w, errors.policy_p, errors.ref_p


def _sft_loss(errors: StepErrors, train: TrainConfig) -> LossTerms:
    from seppo_lib.losses import sft_loss

    return LossTerms(sft_loss(errors.policy_w))


def _dpo_loss(errors: StepErrors, train: TrainConfig) -> LossTerms:
    import torch

    from seppo_lib.losses import dpo_loss, flip_rate, implicit_accuracy, preference_logits

    pw, rw, pp, rp = _pair(errors)
    logits = preference_logits(pw, rw, pp, rp).detach()
    logged = {"implicit_acc": implicit_accuracy(logits), "flip_rate": flip_rate(torch.ones_like(pw))}
    return LossTerms(dpo_loss(pw, rw, pp, rp, beta=train.beta), logged)


def _seppo_with(criterion: str | None) -> LossFn:
    """SePPO's loss with a fixed anchor criterion (spin: 'none'), or train.criterion when None."""

    def loss(errors: StepErrors, train: TrainConfig) -> LossTerms:
        from seppo_lib.losses import flip_rate, implicit_accuracy, seppo_terms

        terms = seppo_terms(*_pair(errors), beta=train.beta, criterion=criterion or train.criterion)
        return LossTerms(terms.loss, {"implicit_acc": implicit_accuracy(terms.logits), "flip_rate": flip_rate(terms.s)})

    return loss


def _kto_loss(errors: StepErrors, train: TrainConfig) -> LossTerms:
    """A paired row is two labelled samples: the winner desirable, the data loser undesirable."""
    import torch

    from seppo_lib.losses import implicit_accuracy, kto_terms

    pw, rw, pp, rp = _pair(errors)
    desirable = torch.cat([torch.ones_like(pw, dtype=torch.bool), torch.zeros_like(pp, dtype=torch.bool)])
    terms = kto_terms(torch.cat([pw, pp]), torch.cat([rw, rp]), desirable, beta=train.beta)
    return LossTerms(terms.loss, {"implicit_acc": implicit_accuracy(terms.margin), "kl_ref": terms.kl})


for _spec in (
    MethodSpec("sft", "supervised fine-tuning on the winners", _sft_loss),
    MethodSpec(
        "dpo", "Diffusion-DPO: winner vs the data loser, paired data, reference θ_0", _dpo_loss,
        partner="data_loser", default_reference="initial", allowed_references=("initial",), needs_pairs=True,
        metrics=PREFERENCE_METRICS,
    ),
    MethodSpec(
        "spin", "SPIN-Diffusion: winner vs a sample of the latest checkpoint", _seppo_with("none"),
        partner="reference_sample", default_reference="latest", allowed_references=("latest",),
        metrics=PREFERENCE_METRICS,
    ),
    MethodSpec(
        "seppo", "SePPO: winner vs a sample of a bank checkpoint, anchor criterion train.criterion", _seppo_with(None),
        partner="reference_sample", default_reference="uniform", allowed_references=("uniform", "latest", "initial"),
        metrics=PREFERENCE_METRICS,
    ),
    MethodSpec(
        "kto", "Diffusion-KTO: winner desirable and data loser undesirable, paired data, reference θ_0", _kto_loss,
        partner="data_loser", default_reference="initial", allowed_references=("initial",), needs_pairs=True,
        metrics=("loss", "implicit_acc", "kl_ref", *ERROR_METRICS),
    ),
):
    register_method(_spec)
