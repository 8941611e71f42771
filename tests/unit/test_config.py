"""Config: presets load, overrides apply, errors are one line and name the problem."""

from __future__ import annotations

import pytest

from seppo_lib.config import PRESET_DIR, ConfigError, SeppoConfig, load_config


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_loads(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.name
    assert SeppoConfig.from_json(cfg.to_json()) == cfg


def test_paper_preset_values() -> None:
    cfg = load_config("sd15-pickapic")
    assert cfg.effective_batch == 2048 and cfg.train.updates_per_round == 30
    assert cfg.train.beta == 2000 and cfg.train.lr == pytest.approx(2e-5)
    assert cfg.sampling.num_inference_steps == 20 and cfg.sampling.guidance_scale == 7.5


def test_overrides_and_hash() -> None:
    a = load_config("tiny", ["train.beta=123", "train.method=spin"])
    assert a.train.beta == 123.0 and a.reference_strategy == "latest"
    b = load_config("tiny", ["train.beta=123", "train.method=spin"])
    assert a.config_hash() == b.config_hash() and a.run_id == b.run_id
    assert load_config("tiny").config_hash() != a.config_hash()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.bogus=1", "train.bogus: unknown key"),
        ("train.beta=0", "train.beta: Input should be greater than 0"),
        ("train.beta=-5", "train.beta"),
        ("train.criterion=maybe", "train.criterion: Input should be 'sign', 'indicator', 'sft_mse' or 'none'"),
        ("bank.reference=best", "bank.reference"),
        ("train.method=spin", None),
    ],
)
def test_errors_are_one_line(override: str, needle: str | None) -> None:
    if needle is None:
        load_config("tiny", [override])
        return
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    msg = str(err.value)
    assert "\n" not in msg and needle in msg


def test_method_reference_conflict() -> None:
    with pytest.raises(ConfigError, match="train.method=spin uses the 'latest' reference"):
        load_config("tiny", ["train.method=spin", "bank.reference=uniform"])


def test_unknown_preset_lists_presets() -> None:
    with pytest.raises(ConfigError, match="presets: .*tiny"):
        load_config("nope")


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("tiny", ["train.beta"])
