"""The method registry: every record loads, unknown names fail in one line, a registered method trains."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from seppo_lib.config import ConfigError, load_config
from seppo_lib.methods import METHODS, LossTerms, MethodSpec, StepErrors, method_spec, register_method
from seppo_lib.steps.validate_config import pipeline_shape
from seppo_lib.training.step import compute_loss
from tests.helpers import random_step_inputs

BUILTIN = ("sft", "dpo", "spin", "seppo", "kto")


def test_the_builtin_methods_are_registered() -> None:
    assert tuple(METHODS)[: len(BUILTIN)] == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_every_record_loads_with_its_traits(name: str) -> None:
    spec = method_spec(name)
    cfg = load_config("tiny", [f"train.method={name}"])
    assert cfg.reference_strategy == spec.default_reference
    assert pipeline_shape(cfg)["needs_sampling"] == (spec.partner == "reference_sample")
    for ref in spec.allowed_references:
        assert load_config("tiny", [f"train.method={name}", f"bank.reference={ref}"]).reference_strategy == ref


def test_the_traits_the_code_used_to_test_by_name() -> None:
    """The former string tests: sampling for spin/seppo, pairs for dpo, spin latest, dpo initial."""
    assert [n for n in BUILTIN if method_spec(n).needs_samples] == ["spin", "seppo"]
    assert [n for n in BUILTIN if method_spec(n).needs_pairs] == ["dpo", "kto"]
    assert {n: method_spec(n).allowed_references for n in ("sft", "dpo", "spin")} == {
        "sft": (), "dpo": ("initial",), "spin": ("latest",),
    }


@pytest.mark.parametrize(("typo", "hint"), [("dpp", "did you mean dpo?"), ("ktoo", "did you mean kto?"), ("zzzz", "")])
def test_unknown_method_is_one_line_with_the_choices(typo: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [f"train.method={typo}"])
    msg = str(err.value)
    assert "\n" not in msg and "train.method: unknown method" in msg and f"got '{typo}'" in msg and "methods: sft, dpo, spin, seppo, kto" in msg
    assert hint in msg and ("did you mean" in msg) == bool(hint)
    with pytest.raises(ConfigError, match=f"unknown method.*{hint}"):
        method_spec(typo)


def test_a_reference_the_method_forbids_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.method=kto uses the 'initial' reference"):
        load_config("tiny", ["train.method=kto", "bank.reference=uniform"])


@pytest.mark.parametrize(
    ("traits", "needle"),
    [
        ({"partner": "data_loser", "default_reference": "initial", "allowed_references": ("initial",)}, "needs_pairs"),
        ({"partner": "reference_sample"}, "set default_reference"),
        ({"default_reference": "latest", "allowed_references": ("initial",)}, "not in allowed_references"),
        ({"metrics": ("loss", "err_ref_w")}, "only errors the step has"),
        ({"name": "Bad Name"}, "lowercase"),
    ],
)
def test_inconsistent_records_are_refused(traits: dict[str, object], needle: str) -> None:
    fields: dict[str, object] = {"name": "broken", "description": "a broken record", "loss": _gap_loss, **traits}
    with pytest.raises(ConfigError, match=needle):
        MethodSpec(**fields)  # type: ignore[arg-type]


def _gap_loss(errors: StepErrors, train: object) -> LossTerms:
    """Not a real method: the per-pair gap Δ(x_w) - Δ(x_p), logged as `gap`."""
    assert errors.ref_w is not None and errors.policy_p is not None and errors.ref_p is not None
    gap = (errors.policy_w - errors.ref_w) - (errors.policy_p - errors.ref_p)
    return LossTerms(gap, {"gap": gap.detach().mean()})


@pytest.fixture
def gap_method() -> Iterator[MethodSpec]:
    spec = register_method(MethodSpec(
        "gap-test", "test-only: the raw Δ gap against θ_0", _gap_loss, partner="data_loser",
        default_reference="initial", allowed_references=("initial", "latest"), needs_pairs=True,
        metrics=("loss", "gap", "err_ref_r"),
    ))  # fmt: skip
    yield spec
    del METHODS[spec.name]


def test_a_registered_method_is_validated_and_trained(gap_method: MethodSpec, tmp_path: Path) -> None:
    from seppo_lib.models import load_model

    cfg = load_config("tiny", ["train.method=gap-test"])
    assert cfg.reference_strategy == "initial" and not pipeline_shape(cfg)["needs_sampling"]
    assert load_config("tiny", ["train.method=gap-test", "bank.reference=latest"]).reference_strategy == "latest"
    with pytest.raises(ConfigError, match="train.method=gap-test allows bank.reference initial, latest; got uniform"):
        load_config("tiny", ["train.method=gap-test", "bank.reference=uniform"])
    with pytest.raises(ConfigError, match="already registered"):
        register_method(gap_method)
    model = load_model("builtin:tiny-random", tmp_path / "cache", with_text=False)
    ref = load_model("builtin:tiny-random", tmp_path / "cache", with_text=False).unet.requires_grad_(False)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.003 * torch.randn_like(p))
    loss, metrics = compute_loss(cfg, model.noise_scheduler, model.unet, ref, random_step_inputs(4), torch.device("cpu"))
    assert list(metrics.as_dict()) == ["loss", "gap", "err_ref_r"]
    assert metrics.gap == pytest.approx(loss.item(), rel=1e-6) and loss.item() != 0.0
    assert loss.requires_grad


def test_an_unregistered_method_is_refused_again(tmp_path: Path) -> None:
    assert "gap-test" not in METHODS
    with pytest.raises(ConfigError, match="unknown method"):
        load_config("tiny", ["train.method=gap-test"])
