"""The sd3 family on the tiny random SD3 model: conditioning, sampling and training match diffusers' SD3 code."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seppo_lib.config import load_config
from seppo_lib.diffusion import per_sample_mse, slot_draws
from seppo_lib.families import FAMILIES, family_for, noise_for
from seppo_lib.families.base import Conditioning
from seppo_lib.methods import StepErrors, method_spec
from seppo_lib.testing.tiny_sd3 import JOINT_DIM, byte_vocab, build_tiny_sd3

SD3 = FAMILIES["sd3"]
PROMPTS = ["a red square", "two blue dots", ""]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd3(tmp_path_factory.mktemp("sd3") / "model")


@pytest.fixture(scope="module")
def pipe(folder: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)


def _model(folder: Path, pipe, **extra):  # type: ignore[no-untyped-def]
    parts = {**SD3.load_text(folder, {}), **extra}
    return SimpleNamespace(parts=parts, denoiser=pipe.transformer, source=str(folder), vae_factor=pipe.vae_scale_factor)


def test_folder_resolves_to_sd3_only(folder: Path) -> None:
    assert family_for(folder) is SD3
    assert type(SD3.load_denoiser(folder / "transformer")).__name__ == "SD3Transformer2DModel"
    assert noise_for(SD3.load_noise_scheduler(folder)).name == "flow_matching"
    assert not any(f.accepts({"_class_name": "SD3Transformer2DModel"}) for f in FAMILIES.values() if f is not SD3)


def test_conditioning_equals_the_pipelines_without_t5(folder: Path, pipe) -> None:  # type: ignore[no-untyped-def]
    cond = SD3.encode_prompts(_model(folder, pipe), PROMPTS, 77)
    hidden, _, pooled, _ = pipe.encode_prompt(PROMPTS, PROMPTS, PROMPTS, do_classifier_free_guidance=False)
    assert cond.hidden.shape == (3, 77 + 256, JOINT_DIM) and cond["pooled"].shape == (3, 64)
    assert torch.equal(cond.hidden, hidden) and torch.equal(cond["pooled"], pooled)


def test_conditioning_equals_the_pipelines_with_a_t5(folder: Path, pipe) -> None:  # type: ignore[no-untyped-def]
    """A tiny random T5 encoder (tokenised by the byte CLIP tokenizer) takes the place of the zero T5 rows."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(5)
    t5 = T5EncoderModel(T5Config(vocab_size=len(byte_vocab()), d_model=JOINT_DIM, d_kv=8, d_ff=37, num_layers=1, num_heads=2)).eval()
    with_t5 = copy.copy(pipe)
    with_t5.register_modules(text_encoder_3=t5, tokenizer_3=pipe.tokenizer)
    cond = SD3.encode_prompts(_model(folder, pipe, text_encoder_3=t5, tokenizer_3=pipe.tokenizer), PROMPTS, 77)
    hidden, _, pooled, _ = with_t5.encode_prompt(PROMPTS, PROMPTS, PROMPTS, do_classifier_free_guidance=False)
    assert torch.equal(cond.hidden[:, :77], hidden[:, :77]) and torch.equal(cond["pooled"], pooled)
    assert torch.allclose(cond.hidden[:, 77:], hidden[:, 77:], atol=1e-5)  # T5 under no_grad vs with grad: ~6e-6 apart
    assert cond.hidden[:, 77:].abs().sum() > 0


@torch.no_grad()
def _sample(  # type: ignore[no-untyped-def]
    denoiser, config, cond: Conditioning, uncond: Conditioning, noise: torch.Tensor, steps: int, cfg: float
) -> torch.Tensor:
    """The sampler loop of families/base.py's docstring, driven only by the family's hooks."""
    sched = SD3.sampling_scheduler("euler", config)
    sched.set_timesteps(steps)
    latents = noise * SD3.init_noise_sigma(sched)
    context = Conditioning.cat([uncond.expand(len(cond)), cond])
    for t in sched.timesteps:
        x = SD3.scale_model_input(sched, torch.cat([latents, latents]), t)
        pred_uncond, pred_cond = SD3.denoise(denoiser, x, t, context).chunk(2)
        latents = sched.step(pred_uncond + cfg * (pred_cond - pred_uncond), t, latents, **SD3.step_kwargs("euler", 0.0, [])).prev_sample
    return latents


def test_family_sampler_matches_the_pipeline_and_ignores_batch_size(folder: Path, pipe) -> None:  # type: ignore[no-untyped-def]
    model = _model(folder, pipe)
    cond, uncond = SD3.encode_prompts(model, PROMPTS[:2], 77), SD3.encode_prompts(model, [""], 77)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = _sample(pipe.transformer, pipe.scheduler.config, cond, uncond, noise, 3, 5.0)
    theirs = pipe(PROMPTS[:2], num_inference_steps=3, guidance_scale=5.0, height=16, width=16, latents=noise, output_type="latent").images
    assert torch.allclose(ours, theirs, atol=1e-5)
    one = _sample(pipe.transformer, pipe.scheduler.config, cond.rows(slice(1, 2)), uncond, noise[1:], 3, 5.0)
    assert torch.allclose(one, ours[1:], atol=1e-5)
    with pytest.raises(ValueError, match="unknown sampler 'ddim' for sd3"):
        SD3.sampling_scheduler("ddim", pipe.scheduler.config)


@pytest.mark.parametrize("method", ["sft", "dpo", "spin", "seppo"])
def test_an_update_moves_the_policy_and_never_the_reference(folder: Path, pipe, method: str) -> None:  # type: ignore[no-untyped-def]
    """One update of each method on velocity errors. Policy == reference at the first update: for the preference
    methods every Δ is 0, so the loss is exactly log 2 (and its gradient is still non-zero)."""
    spec, train = method_spec(method), load_config("tiny").train
    policy, ref = SD3.load_denoiser(folder / "transformer"), SD3.load_denoiser(folder / "transformer").requires_grad_(False)
    scheduler = SD3.load_noise_scheduler(folder)
    cond = SD3.encode_prompts(_model(folder, pipe), PROMPTS[:2], 77)
    x_w, x_p = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    draws = slot_draws([7, 8], (4, 8, 8), 1000, 0.0, 0.0, lambda g: SD3.draw_timestep(g, scheduler))  # the trainer's path
    x0, eps, t = torch.cat([x_w, x_p]), draws.noise.noise.repeat(2, 1, 1, 1), draws.noise.timesteps.repeat(2)
    noisy, target, both = SD3.add_noise(scheduler, x0, eps, t), SD3.target(scheduler, x0, eps, t), cond.repeat(2)
    assert torch.equal(target, eps - x0)
    policy_err = per_sample_mse(SD3.denoise(policy, noisy, t, both), target)
    with torch.no_grad():
        ref_err = per_sample_mse(SD3.denoise(ref, noisy, t, both), target)
    if spec.partner == "none":
        errors = StepErrors(policy_err[:2])
    else:
        errors = StepErrors(policy_err[:2], ref_err[:2], policy_err[2:], ref_err[2:])
    loss = spec.loss(errors, train).loss
    if spec.needs_reference:
        assert torch.equal(loss, torch.full((2,), math.log(2)))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    ref_before = {k: v.clone() for k, v in ref.state_dict().items()}
    loss.mean().backward()
    torch.optim.SGD(policy.parameters(), lr=1e-2).step()
    moved = [k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) > len(before) // 2
    assert all(torch.equal(v, ref_before[k]) for k, v in ref.state_dict().items())


def test_tiny_folder_is_a_working_sd3_pipeline_without_t5(pipe) -> None:  # type: ignore[no-untyped-def]
    assert pipe.text_encoder_3 is None and pipe.vae_scale_factor == 2
    image = pipe("a red square", num_inference_steps=2, guidance_scale=5.0, height=16, width=16, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 16, 16, 3) and bool(((image >= 0) & (image <= 1)).all()) and image.std() > 0
