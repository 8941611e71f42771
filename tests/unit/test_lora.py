"""seppo_lib.lora: θ_0 exactness, strict in-place adapter loads, adapter-only files, config and run identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib import lora
from seppo_lib.config import ConfigError, LoraSettings, load_config
from seppo_lib.errors import CheckpointError
from seppo_lib.testing.tiny_models import sd_unet as _unet


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 8, 8, generator=g), torch.tensor([10, 700]), torch.randn(2, 5, 32, generator=g)


def _out(unet: torch.nn.Module) -> torch.Tensor:
    x, t, c = _inputs()
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=c).sample


def _injected(settings: LoraSettings | None = None) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    unet = _unet("pixel", 3)
    before = _out(unet)
    lora.inject_adapter(unet, settings or LoraSettings(rank=2, alpha=3.0))
    return unet, before


def _perturb(unet: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in lora.adapter_parameters(unet).values():
            p.add_(0.05 * torch.randn_like(p))


def test_injection_and_the_zero_adapter_leave_the_base_output_exact() -> None:
    unet, before = _injected()
    assert torch.equal(_out(unet), before)  # fresh adapter: B = 0
    _perturb(unet)
    assert float((_out(unet) - before).abs().max()) > 1e-4
    lora.load_adapter_(unet, lora.zero_adapter(unet))  # θ_0
    assert torch.equal(_out(unet), before)


def test_injection_is_seeded_and_leaves_the_global_rng_alone() -> None:
    a, _ = _injected()
    state = torch.get_rng_state()
    b, _ = _injected()
    torch.set_rng_state(state)
    pa, pb = lora.adapter_parameters(a), lora.adapter_parameters(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    fresh = _unet("pixel", 3)
    probe = torch.get_rng_state()
    lora.inject_adapter(fresh, LoraSettings())
    assert torch.equal(torch.get_rng_state(), probe)


def test_only_adapter_tensors_train_and_are_saved(tmp_path: Path) -> None:
    from seppo_lib.training.trainer import trainable_parameters

    unet, _ = _injected()
    params = trainable_parameters(unet, "lora")
    names = {id(p): n for n, p in unet.named_parameters()}
    assert params and all(".lora_" in names[id(p)] for p in params)
    assert sum(p.numel() for p in params) < 0.05 * sum(p.numel() for p in unet.parameters())
    _perturb(unet)
    settings = LoraSettings(rank=2, alpha=3.0)
    lora.save_adapter(unet, tmp_path, settings, "md5:abc")
    saved = load_file(str(tmp_path / lora.ADAPTER_DIR / lora.ADAPTER_FILE))
    assert saved.keys() == lora.adapter_parameters(unet).keys()
    tensors, back, info = lora.read_adapter(tmp_path)
    assert back == settings and info["base"] == "initial" and info["base_model"] == "md5:abc"
    other, before = _injected()
    lora.load_adapter_(other, tensors)  # in place into a second base: same outputs
    assert torch.equal(_out(other), _out(unet)) and not torch.equal(_out(other), before)


def test_a_mismatched_adapter_is_refused() -> None:
    unet, _ = _injected()
    tensors = lora.zero_adapter(unet)
    key = next(iter(tensors))
    with pytest.raises(CheckpointError, match="does not fit"):
        lora.load_adapter_(unet, {k: v for k, v in tensors.items() if k != key})
    with pytest.raises(CheckpointError, match="shape"):
        lora.load_adapter_(unet, {**tensors, key: torch.zeros(1, 1)})
    with pytest.raises(CheckpointError, match="no LoRA adapter"):
        lora.adapter_parameters(_unet("pixel", 3))


def test_merge_folds_the_adapter_into_the_base_weights() -> None:
    unet, _ = _injected()
    _perturb(unet)
    want = _out(unet)
    merged = lora.merge_adapter(unet)
    assert not any(".lora_" in n or "base_layer" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_out(merged), want, atol=1e-5)


@pytest.mark.parametrize(
    "override", ["model.lora.rank=0", "model.lora.dropout=1.0", "model.lora.dropout=-0.1", "model.lora.target_modules=[]",
                 "model.lora.target_modules=[to_q,to_q]", "model.lora.target_modules=['']", "model.lora.alpha=0"],
)  # fmt: skip
def test_lora_settings_are_validated(override: str) -> None:
    with pytest.raises(ConfigError, match="model.lora"):
        load_config("tiny-lora", [override])


def test_lora_defaults_are_the_diffusers_scripts() -> None:
    s = LoraSettings()
    assert (s.rank, s.scale_alpha, s.dropout, s.target_modules) == (4, 4.0, 0.0, ["to_k", "to_q", "to_v", "to_out.0"])
    assert load_config("sd15-pickapic-lora").model.lora.rank == 8


def test_lora_fields_enter_the_run_id_only_for_lora_runs(tmp_path: Path) -> None:
    cache = f"bank.cache_dir={tmp_path / 'cache'}"
    full = load_config("tiny", [cache]).run_id
    assert load_config("tiny", [cache, "model.lora.rank=8"]).run_id == full  # a full run's id is unchanged
    ids = {load_config("tiny", [cache, "model.trainable=lora", o]).run_id
           for o in ("model.lora.rank=4", "model.lora.rank=8", "model.lora.alpha=2", "model.lora.dropout=0.1")}  # fmt: skip
    assert len(ids | {full}) == 5
