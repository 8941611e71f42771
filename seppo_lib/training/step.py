"""One micro-batch loss, for any registered method (`seppo_lib.methods`): a batched policy forward on
the winners (and the partners, when the method has one), the reference forward (when it has a
reference), then the method's own loss on the per-sample errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from seppo_lib.config import SeppoConfig
from seppo_lib.diffusion import NoiseDraw, make_pair_batch, model_errors
from seppo_lib.families import family_for
from seppo_lib.errors import TrainingError
from seppo_lib.methods import MethodSpec, StepErrors, method_spec


@dataclass(frozen=True)
class StepInputs:
    x_w: Tensor  # (B, ...) winner latents
    x_p: Tensor | None  # (B, ...) partner: reference sample (spin/seppo) or data loser (dpo/kto)
    cond: Tensor  # (B, L, D) text embeddings after caption dropout
    timesteps: Tensor  # (B,) shared by winner and partner
    noise: Tensor  # (B, ...) shared by winner and partner


@dataclass(frozen=True)
class UpdateMetrics:
    """The metrics of one micro-batch (or their sum over an update), by name: the method's `metrics`.

    Read a value as `m.values["loss"]` or `m.loss`."""

    values: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def zeros(cls) -> UpdateMetrics:
        return cls()

    def __getattr__(self, name: str) -> float:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no metric {name!r}")

    def __add__(self, other: UpdateMetrics) -> UpdateMetrics:
        names = dict.fromkeys([*self.values, *other.values])
        return UpdateMetrics({k: self.values.get(k, 0.0) + other.values.get(k, 0.0) for k in names})

    def scaled(self, k: float) -> UpdateMetrics:
        return UpdateMetrics({name: v * k for name, v in self.values.items()})

    def as_dict(self) -> dict[str, float]:
        return dict(self.values)


def compute_loss(
    cfg: SeppoConfig,
    noise_scheduler,  # type: ignore[no-untyped-def]
    unet: torch.nn.Module,
    ref_unet: torch.nn.Module | None,
    inputs: StepInputs,
    device: torch.device,
) -> tuple[Tensor, UpdateMetrics]:
    """Batch-mean loss (with grad) and detached metrics for one micro-batch of method train.method."""
    spec = method_spec(cfg.train.method)
    draw = NoiseDraw(timesteps=inputs.timesteps.to(device), noise=inputs.noise.to(device))
    x_p = inputs.x_p.to(device) if inputs.x_p is not None and spec.partner != "none" else None
    if (spec.partner != "none" and x_p is None) or (spec.needs_reference and ref_unet is None):
        raise TrainingError(f"method {spec.name} needs a reference model and a partner sample")
    family = family_for(unet)  # the reference is the same architecture
    batch = make_pair_batch(noise_scheduler, inputs.x_w.to(device), x_p, inputs.cond.to(device), draw, family.noise)
    policy_err = model_errors(unet, batch, family)
    ref_err = None
    if spec.needs_reference and ref_unet is not None:
        with torch.no_grad():
            ref_err = model_errors(ref_unet, batch, family)
    errors = _split(policy_err, ref_err, inputs.x_w.shape[0] if x_p is not None else None)
    terms = spec.loss(errors, cfg.train)
    loss = terms.loss.mean()
    return loss, _metrics(spec, {"loss": loss, **terms.logged}, errors)


def _split(policy_err: Tensor, ref_err: Tensor | None, half: int | None) -> StepErrors:
    """Winner and partner errors of the batched forward (partners follow the winners when `half` is set)."""
    if half is None:
        return StepErrors(policy_w=policy_err, ref_w=ref_err)
    assert ref_err is not None  # a method with a partner has a reference (MethodSpec)
    return StepErrors(policy_err[:half], ref_err[:half], policy_err[half:], ref_err[half:])


def _metrics(spec: MethodSpec, logged: Mapping[str, Tensor], errors: StepErrors) -> UpdateMetrics:
    """The method's declared metrics: its loss terms and the error means, as floats."""
    means = {"err_policy_w": errors.policy_w, "err_ref_w": errors.ref_w, "err_policy_r": errors.policy_p, "err_ref_r": errors.ref_p}
    available = {**{k: v.mean() for k, v in means.items() if v is not None}, **logged}
    missing = [name for name in spec.metrics if name not in available]
    if missing:
        raise TrainingError(f"method {spec.name} declares metric {missing[0]!r} but its loss does not return it")
    return UpdateMetrics({name: available[name].item() for name in spec.metrics})
