"""The model-family seam (seppo_lib/families): Conditioning, detection, per-family encode / sample / export.

Per-family tests run over FAMILY_MODELS; a new family adds its tiny model URI there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from seppo_lib.data.shards import LatentDataset, write_shard
from seppo_lib.diffusion import slot_draws
from seppo_lib.errors import ModelError
from seppo_lib.export import export_model
from seppo_lib.families import Conditioning, family_for
from seppo_lib.models import load_model, resolve_model_dir
from seppo_lib.sampling import sample_latents

# family -> (tiny model URI, resolution, conditioning keys)
FAMILY_MODELS = {
    "sd": ("builtin:tiny-random:vae", 16, ["hidden"]),
    "sdxl": ("builtin:tiny-random:sdxl", 16, ["hidden", "pooled", "time_ids"]),
    "sd3": ("builtin:tiny-random:sd3", 16, ["hidden", "pooled"]),
}
PIPELINES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline"}
SAMPLERS = {"sd3": "euler"}  # family -> sampling.scheduler of the batch-size test (default ddim)
PIPELINE_KWARGS = {"sd3": {"text_encoder_3": None, "tokenizer_3": None}}  # the tiny SD3 has no T5


def _cond(n: int, offset: float = 0.0) -> Conditioning:
    hidden = torch.arange(n * 2, dtype=torch.float32).view(n, 1, 2) + offset
    return Conditioning({"hidden": hidden, "pooled": hidden[:, 0, :1], "time_ids": torch.full((n, 1), 7)})


def test_conditioning_rows_repeat_cat_where_by_hand() -> None:
    c = _cond(2)  # hidden rows [[0, 1]], [[2, 3]]; pooled [0], [2]
    assert c.repeat(2)["pooled"].flatten().tolist() == [0, 2, 0, 2]
    assert c.repeat_interleave(2)["pooled"].flatten().tolist() == [0, 0, 2, 2]
    assert Conditioning.cat([c, _cond(1, 10.0)])["pooled"].flatten().tolist() == [0, 2, 10]
    dropped = c.where(torch.tensor([False, True]), _cond(1, 100.0))  # row 1 <- the one "" row
    assert dropped.hidden.flatten().tolist() == [0, 1, 100, 101] and dropped["pooled"].flatten().tolist() == [0, 100]
    assert c.rows([1])["pooled"].tolist() == [[2.0]] and len(c.expand(1) if len(c) == 1 else c) == 2
    half = c.to(dtype=torch.float16)
    assert half.hidden.dtype == torch.float16 and half["time_ids"].dtype == torch.int64  # integer tensors keep theirs
    with pytest.raises(ModelError, match="batch size"):
        Conditioning({"hidden": torch.zeros(2, 1, 1), "pooled": torch.zeros(3, 1)})
    with pytest.raises(ModelError, match="'hidden'"):
        Conditioning({"pooled": torch.zeros(3, 1)})


def test_conditioning_flat_round_trip_and_legacy_shards(tmp_path: Path) -> None:
    c = _cond(2)
    flat = c.to_flat("text_emb")
    assert sorted(flat) == ["cond.pooled", "cond.time_ids", "text_emb"]
    back = Conditioning.from_flat(flat, "text_emb")
    assert back.keys() == ["hidden", "pooled", "time_ids"] and all(torch.equal(back[k], c[k]) for k in c.keys())
    # a dataset prepared before families: shards hold only text_emb, uncond only emb
    write_shard(tmp_path, 0, {"latents_w": torch.zeros(2, 3, 2, 2), "text_emb": c.hidden}, ["a", "b"], ["0", "1"])
    save_file({"emb": c.hidden[:1].contiguous()}, str(tmp_path / "uncond.safetensors"))
    meta = {"shards": ["shard-00000"], "shard_sizes": [2], "paired": False, "latent_shape": [3, 2, 2]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = LatentDataset(tmp_path)
    assert ds.get([1]).cond.keys() == ["hidden"] and ds.get([1]).text_emb.flatten().tolist() == [2.0, 3.0]
    assert ds.uncond.keys() == ["hidden"]


@pytest.mark.parametrize(("uri", "name"), [("builtin:tiny-random", "sd"), ("builtin:tiny-random:vae", "sd"),
                                           ("builtin:tiny-random:video", "animatediff"), ("builtin:tiny-random:motion", "animatediff"),
                                           ("builtin:tiny-random:sdxl", "sdxl"), ("builtin:tiny-random:sd3", "sd3")])  # fmt: skip
def test_each_tiny_model_belongs_to_exactly_one_family(uri: str, name: str, tmp_path: Path) -> None:
    folder = resolve_model_dir(uri, tmp_path)
    assert family_for(folder).name == name
    model = load_model(uri, tmp_path, with_text=False)
    assert model.family.name == name and family_for(model.denoiser).name == name
    assert model.is_video == (name == "animatediff")


def test_the_sd_timestep_draw_keeps_the_slot_rng_order(tmp_path: Path) -> None:
    model = load_model("builtin:tiny-random", tmp_path, with_text=False)
    default = slot_draws([3, 4, 5], (3, 2, 2), 1000, 0.5, 0.5)
    routed = slot_draws([3, 4, 5], (3, 2, 2), 1000, 0.5, 0.5, lambda g: model.family.draw_timestep(g, model.noise_scheduler))
    assert torch.equal(default.noise.timesteps, routed.noise.timesteps) and torch.equal(default.noise.noise, routed.noise.noise)
    assert torch.equal(default.drop, routed.drop) and torch.equal(default.flip, routed.flip)


def test_sdxl_conditioning_is_diffusers_encode_prompt(tmp_path: Path) -> None:
    """hidden / pooled as StableDiffusionXLPipeline.encode_prompt computes them; time ids (R, R, 0, 0, R, R)."""
    from diffusers import StableDiffusionXLPipeline

    model = load_model("builtin:tiny-random:sdxl", tmp_path)
    parts = {k: model.parts[k] for k in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")}
    pipe = StableDiffusionXLPipeline(vae=model.vae, unet=model.unet, scheduler=model.noise_scheduler, **parts)
    prompts = ["a red square", "two blue circles"]
    embeds, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    cond = model.condition(prompts, 77, 16)
    assert cond.keys() == ["hidden", "pooled", "time_ids"]
    torch.testing.assert_close(cond.hidden, embeds.float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(cond["pooled"], pooled.float(), rtol=0, atol=1e-6)
    assert cond["time_ids"].tolist() == [[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]] * 2


@pytest.mark.parametrize("family", list(FAMILY_MODELS))
def test_sampling_is_batch_size_invariant(family: str, tmp_path: Path) -> None:
    uri, res, keys = FAMILY_MODELS[family]
    model = load_model(uri, tmp_path)
    cond, uncond = model.condition(["a", "b", "c"], 8, res), model.condition([""], 8, res)
    assert cond.keys() == keys
    kw = {"steps": 3, "guidance_scale": 3.0, "scheduler": SAMPLERS.get(family, "ddim")}
    shape = model.latent_shape(res)
    whole = sample_latents(model.unet, model.noise_scheduler.config, cond, uncond, [1, 2, 3], shape, batch_size=3, **kw)
    ones = sample_latents(model.unet, model.noise_scheduler.config, cond, uncond, [1, 2, 3], shape, batch_size=1, **kw)
    tail = sample_latents(model.unet, model.noise_scheduler.config, cond.rows(slice(2, 3)), uncond, [3], shape, batch_size=1, **kw)
    torch.testing.assert_close(whole, ones, rtol=0, atol=1e-4)
    torch.testing.assert_close(whole[2:], tail, rtol=0, atol=1e-4)
    assert whole[0].sub(whole[1]).abs().max() > 1e-3  # different prompts and seeds give different samples


@pytest.mark.parametrize("family", list(FAMILY_MODELS))
def test_export_loads_in_the_family_pipeline_and_generates(family: str, tmp_path: Path) -> None:
    from diffusers import DiffusionPipeline

    uri, res, _ = FAMILY_MODELS[family]
    out = export_model(resolve_model_dir(uri, tmp_path), uri, tmp_path / "export", tmp_path)
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINES[family]
    absent = [p for p in family_for(out).optional_parts if not (out / p).is_dir()]  # sd3 without T5
    assert all(index[p] == [None, None] for p in absent) and (family != "sd3" or absent == ["text_encoder_3", "tokenizer_3"])
    pipe = DiffusionPipeline.from_pretrained(out, **PIPELINE_KWARGS.get(family, {}))
    assert type(pipe).__name__ == PIPELINES[family]
    image = pipe("a red square", num_inference_steps=2, height=res, width=res, output_type="np").images
    assert image.shape == (1, res, res, 3)
    assert load_model(str(out), tmp_path).family.name == family  # seppo reads its own export back
