"""model.trainable=lora end to end on the tiny model: adapter-only bank checkpoints, frozen base and
references, exact resume, export that diffusers' load_lora_weights reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.config import SeppoConfig, load_config
from seppo_lib.lora import ADAPTER_DIR, ADAPTER_FILE, LORA_WEIGHTS, inject_adapter, load_adapter_, read_adapter
from seppo_lib.models import load_unet
from seppo_lib.orchestrate import run_rounds
from seppo_lib.steps.common import open_bank
from seppo_lib.tracking import InMemoryLogger
from tests.helpers import make_image_folder

FAST = ["train.updates_per_round=2", "train.n_rounds=2", "sampling.num_inference_steps=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "pairs", n=16, paired=True)


def _overrides(tmp: Path, data: Path, *overrides: str) -> list[str]:
    return [f"workdir={tmp / 'work'}", f"bank.uri={tmp / 'bank'}", f"bank.cache_dir={tmp / 'cache'}",
            f"data.source={data}", "tracking.enabled=false", *FAST, *overrides]  # fmt: skip


def lora_config(tmp: Path, data: Path, *overrides: str) -> SeppoConfig:
    """The tiny-lora preset pointed at tmp dirs and a local data folder."""
    return load_config("tiny-lora", _overrides(tmp, data, *overrides))


def _adapter(cfg: SeppoConfig, round_idx: int) -> dict[str, torch.Tensor]:
    bank = open_bank(cfg)
    return read_adapter(bank.fetch(bank.entry_for_round(round_idx).id))[0]  # type: ignore[union-attr]


def _base_weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's non-adapter tensors (parameters and buffers, e.g. SD3's positional embedding) under the base
    denoiser's own names (PEFT's `.base_layer` removed)."""
    return {n.replace(".base_layer", ""): t.detach().clone() for n, t in unet.state_dict().items() if ".lora_" not in n}


SD3_TARGETS = ",".join(load_config("sd35-pickapic-lora").model.lora.target_modules)  # the joint-attention projections
# family -> (tiny model URI, extra overrides)
LORA_FAMILIES = {
    "sdxl": ("builtin:tiny-random:sdxl", []),
    "sd3": ("builtin:tiny-random:sd3", ["sampling.scheduler=euler", f"model.lora.target_modules=[{SD3_TARGETS}]"]),
}
NO_T5 = {"sd3": {"text_encoder_3": None, "tokenizer_3": None}}
METHODS = ("sft", "dpo", "spin", "seppo")
#: every method on the sd tiny model (fast), and on every other LoRA family (slow)
METHOD_CASES = [("sd", m) for m in METHODS] + [pytest.param(f, m, marks=pytest.mark.slow) for f in LORA_FAMILIES for m in METHODS]


def _family_overrides(family: str) -> tuple[str, ...]:
    if family == "sd":
        return ()
    uri, extra = LORA_FAMILIES[family]
    return (f"model.pretrained={uri}", "data.resolution=16", *extra)


@pytest.mark.parametrize(("family", "method"), METHOD_CASES)
def test_lora_rounds_train_only_the_adapter(
    family: str, method: str, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seppo_lib.training import trainer

    committed: list[dict[str, torch.Tensor]] = []
    refs: list[trainer.ReferenceModel] = []
    commit, ref_init = trainer._commit, trainer.ReferenceModel.__init__

    def spy_commit(unet, *args, **kwargs):  # type: ignore[no-untyped-def]
        committed.append(_base_weights(unet))
        return commit(unet, *args, **kwargs)

    def spy_ref(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        ref_init(self, *args, **kwargs)
        refs.append(self)

    monkeypatch.setattr(trainer, "_commit", spy_commit)
    monkeypatch.setattr(trainer.ReferenceModel, "__init__", spy_ref)
    cfg = lora_config(tmp_path, data_dir, f"train.method={method}", *_family_overrides(family))
    run_rounds(cfg, InMemoryLogger())
    bank = open_bank(cfg)
    entries = bank.entries()
    assert [e.round for e in entries] == [0, 1, 2]
    den = "transformer" if family == "sd3" else "unet"
    theta0 = load_file(str(bank.fetch("initial") / den / "diffusion_pytorch_model.safetensors"))
    for e in entries[1:]:  # adapter-only checkpoints: adapter/ + state/, lora tensors only, a small fraction of θ_0
        assert {rel.split("/")[0] for rel in e.files} == {ADAPTER_DIR, "state"}
        tensors = load_file(str(bank.fetch(e.id) / ADAPTER_DIR / ADAPTER_FILE))
        assert tensors and all(".lora_A." in k or ".lora_B." in k for k in tensors)
        size = (bank.fetch(e.id) / ADAPTER_DIR / ADAPTER_FILE).stat().st_size
        assert size < 0.15 * (bank.fetch("initial") / den / "diffusion_pytorch_model.safetensors").stat().st_size
    a1, a2 = _adapter(cfg, 1), _adapter(cfg, 2)
    assert max(float(v.abs().max()) for k, v in a1.items() if ".lora_B." in k) > 0  # B left its zero init
    assert max(float((a1[k] - a2[k]).abs().max()) for k in a1) > 0  # round 2 moved the adapter again
    assert len(committed) == 2 and all(w.keys() == theta0.keys() for w in committed)
    assert all(torch.equal(w[k], theta0[k]) for w in committed for k in theta0)  # base of the policy never moved
    for ref in refs:  # the reference is θ_0's UNet + a frozen adapter equal to its checkpoint's
        assert all(not p.requires_grad for p in ref.unet.parameters())
        assert ref.swap is not None and ref.swap.current is not None
        want = ref.swap.tensors(ref.swap.current)
        got = {n.replace(".default", ""): p for n, p in ref.unet.named_parameters() if ".lora_" in n}
        assert all(torch.equal(got[k].cpu(), want[k]) for k in want)
        assert all(torch.equal(v, theta0[k]) for k, v in _base_weights(ref.unet).items())
    assert (method == "sft") == (not refs)


def test_lora_resume_is_exact(tmp_path: Path, data_dir: Path) -> None:
    """Stop after round 1, resume round 2 in a fresh call: round-2 adapter and optimizer state identical."""
    full = lora_config(tmp_path / "full", data_dir)
    run_rounds(full, InMemoryLogger())
    part = lora_config(tmp_path / "part", data_dir)
    assert len(run_rounds(part, InMemoryLogger(), last=1).rounds) == 1
    resumed = run_rounds(part, InMemoryLogger())
    assert [r["skipped"] for r in resumed.rounds] == [True, False]
    a, b = _adapter(full, 2), _adapter(part, 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    states = [load_file(str(open_bank(c).fetch(open_bank(c).entry_for_round(2).id) / "state" / "optimizer.safetensors"))  # type: ignore[union-attr]
              for c in (full, part)]  # fmt: skip
    assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    from seppo_lib.bank_admin import gc  # gc of adapter checkpoints: round 1 removed, a rerun skips every round

    bank = open_bank(part)
    gc(part.bank.uri, bank.run_id, keep_last=1)
    assert bank.entry_for_round(1) is None and bank.ids() == ["initial", bank.entry_for_round(2).id]  # type: ignore[union-attr]
    assert [r["skipped"] for r in run_rounds(part, InMemoryLogger()).rounds] == [True, True]


def test_lora_export_loads_with_load_lora_weights(tmp_path: Path, data_dir: Path) -> None:
    """A trained adapter on the tiny SD-format model: base pipeline + load_lora_weights = the policy; --merge too."""
    from diffusers import StableDiffusionPipeline

    from seppo_lib.cli import main
    from seppo_lib.export import export_uri, resolve_model_uri
    from seppo_lib.models import load_model

    overrides = _overrides(tmp_path, data_dir, "model.pretrained=builtin:tiny-random:vae", "train.method=sft",
                           "train.n_rounds=1", "model.lora.alpha=8")  # fmt: skip
    cfg = load_config("tiny-lora", overrides)
    run_rounds(cfg, InMemoryLogger())
    bank = open_bank(cfg)
    ckpt = bank.entry_for_round(1).id  # type: ignore[union-attr]
    policy = load_unet(bank.fetch("initial") / "unet")
    inject_adapter(policy, cfg.model.lora)
    load_adapter_(policy, read_adapter(bank.fetch(ckpt))[0])
    g = torch.Generator().manual_seed(0)
    x, t, c = torch.randn(2, 4, 4, 4, generator=g), torch.tensor([10, 700]), torch.randn(2, 16, 32, generator=g)
    with torch.no_grad():
        want = policy(x, t, encoder_hidden_states=c).sample
        base = load_unet(bank.fetch("initial") / "unet")(x, t, encoder_hidden_states=c).sample
    assert float((want - base).abs().max()) > 1e-6  # the adapter changes the output
    out = export_uri(cfg, f"bank:{ckpt}", tmp_path / "export")
    assert (out / LORA_WEIGHTS).is_file()
    pipe = StableDiffusionPipeline.from_pretrained(out)
    pipe.load_lora_weights(out)
    with torch.no_grad():
        got = pipe.unet(x, t, encoder_hidden_states=c).sample
    assert torch.allclose(got, want, atol=1e-6), float((got - want).abs().max())
    merged = tmp_path / "merged"
    assert main(["export", f"bank:{ckpt}", str(merged), "--merge", "--config", "tiny-lora", *overrides]) == 0
    assert not (merged / LORA_WEIGHTS).exists() and (merged / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    for folder in (merged, resolve_model_uri(cfg, f"bank:{ckpt}")):  # evaluation / registry read the merged export
        with torch.no_grad():
            got = load_model(str(folder), cfg.bank.cache_dir, with_text=False).unet(x, t, encoder_hidden_states=c).sample
        assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())


def test_lora_reference_samples_of_theta0_are_the_base_models(tmp_path: Path, data_dir: Path) -> None:
    """Round 1 samples θ_0 only: the lora sampler (base + zero adapter) gives the full run's samples bit for bit."""
    from seppo_lib.orchestrate import round_dir
    from seppo_lib.training.references import REFS_TENSORS

    lora_cfg = lora_config(tmp_path / "lora", data_dir, "train.n_rounds=1")
    full_cfg = load_config("tiny", [*_overrides(tmp_path / "full", data_dir, "train.n_rounds=1")])
    refs = []
    for cfg in (lora_cfg, full_cfg):
        run_rounds(cfg, InMemoryLogger())
        refs.append(load_file(str(round_dir(cfg, 1) / "refs-000" / REFS_TENSORS))["latents"])
    assert refs[0].abs().max() > 0 and torch.equal(refs[0], refs[1])




@pytest.mark.parametrize("family", list(LORA_FAMILIES))
def test_lora_round_and_export_per_family(family: str, tmp_path: Path, data_dir: Path) -> None:
    """One seppo round of adapter training on the family's denoiser folder; the base stays θ_0, and the export
    (base denoiser + diffusers LoRA file, or merged) in the family's pipeline gives the policy's prediction."""
    from diffusers import DiffusionPipeline

    from seppo_lib.export import export_uri, resolve_model_uri
    from seppo_lib.models import load_model

    uri, extra = LORA_FAMILIES[family]
    cfg = lora_config(tmp_path, data_dir, f"model.pretrained={uri}", "data.resolution=16", "train.n_rounds=1", *extra)
    run_rounds(cfg, InMemoryLogger())
    bank = open_bank(cfg)
    model = load_model(uri, cfg.bank.cache_dir)
    den = model.family.denoiser_folder  # type: ignore[union-attr]
    ckpt = bank.entry_for_round(1)
    assert {rel.split("/")[0] for rel in ckpt.files} == {ADAPTER_DIR, "state"}  # type: ignore[union-attr]
    tensors = read_adapter(bank.fetch(ckpt.id))[0]  # type: ignore[union-attr]
    assert max(float(v.abs().max()) for k, v in tensors.items() if ".lora_B." in k) > 0
    theta0 = load_file(str(bank.fetch("initial") / den / "diffusion_pytorch_model.safetensors"))
    base = model.denoiser.state_dict()
    assert theta0.keys() == base.keys() and all(torch.equal(theta0[k], base[k]) for k in theta0)
    policy = load_unet(bank.fetch("initial") / den)
    inject_adapter(policy, cfg.model.lora)
    load_adapter_(policy, tensors)
    cond = model.condition(["a red square"], cfg.data.max_caption_tokens, 16)
    x, t = torch.randn(1, *model.latent_shape(16), generator=torch.Generator().manual_seed(0)), torch.tensor([700.0])
    with torch.no_grad():
        want = model.family.denoise(policy, x, t, cond)  # type: ignore[union-attr]
        assert float((want - model.family.denoise(model.denoiser, x, t, cond)).abs().max()) > 1e-6  # type: ignore[union-attr]
    out = export_uri(cfg, f"bank:{ckpt.id}", tmp_path / "export")  # type: ignore[union-attr]
    pipe = DiffusionPipeline.from_pretrained(out, **NO_T5.get(family, {}))
    pipe.load_lora_weights(out)
    merged = load_model(str(resolve_model_uri(cfg, f"bank:{ckpt.id}")), cfg.bank.cache_dir, with_text=False)  # type: ignore[union-attr]
    with torch.no_grad():
        for denoiser in (getattr(pipe, den), merged.denoiser):
            got = model.family.denoise(denoiser, x, t, cond)  # type: ignore[union-attr]
            assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
