"""Export: a tiny SD-format model, a tiny AnimateDiff model and the world base model as diffusers folders
that DiffusionPipeline loads and samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AnimateDiffPipeline, DiffusionPipeline, StableDiffusionPipeline

from seppo_lib.cli import main
from seppo_lib.errors import CheckpointError
from seppo_lib.export import export_model
from seppo_lib.models import load_model
from seppo_lib.world_pipeline import WorldPipeline
from tests.tiny_clip import tiny_vocab


def build_tiny_sd(dest: Path) -> Path:
    """Stable Diffusion layout with random weights: UNet on 4-channel latents, tiny VAE (factor 2), CLIP text encoder."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab = tiny_vocab()
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).save_pretrained(dest / "unet")  # fmt: skip
    AutoencoderKL(
        latent_channels=4, block_out_channels=(8, 16), norm_num_groups=8, sample_size=16,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).save_pretrained(dest / "vae")  # fmt: skip
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )).save_pretrained(dest / "text_encoder")  # fmt: skip
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77).save_pretrained(dest / "tokenizer")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(dest / "scheduler")
    return dest


def test_tiny_sd_export_loads_as_stable_diffusion(tmp_path: Path) -> None:
    base = build_tiny_sd(tmp_path / "sd")
    out = export_model(base, str(base), tmp_path / "export", tmp_path / "cache", {"note": "test"})
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((out / "lineage.json").read_text()) == {"base_model": str(base), "note": "test"}
    pipe = DiffusionPipeline.from_pretrained(out)
    assert isinstance(pipe, StableDiffusionPipeline) and pipe.safety_checker is None
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (16, 16)  # UNet sample size 8 x VAE factor 2
    assert load_model(str(out), tmp_path / "cache").vae is not None  # seppo still reads its own export


def test_world_base_export_command_loads_as_world_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "world"
    assert main(["export", "builtin:world-base", str(out), "data.max_caption_tokens=16"]) == 0
    assert "WorldPipeline" in capsys.readouterr().out
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["world_pipeline", "WorldPipeline"] and index["max_caption_tokens"] == 16
    assert (out / "text_encoder" / "model.safetensors").is_file() and not (out / "seppo_model.json").exists()
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(out)
    pipe = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    assert isinstance(pipe, WorldPipeline) and pipe.config.max_caption_tokens == 16
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["a red circle", "a blue square"], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert [i.size for i in images] == [(32, 32)] * 2 and images[0].tobytes() != images[1].tobytes()
    assert main(["export", "builtin:world-base", str(out)]) == 2  # never overwrites a folder


def test_animatediff_export_command_loads_and_generates_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """builtin:tiny-random:motion (UNetMotionModel + VAE) -> an AnimateDiffPipeline folder that makes a clip."""
    out = tmp_path / "motion"
    assert main(["export", "builtin:tiny-random:motion", "--out", str(out), f"bank.cache_dir={tmp_path / 'cache'}"]) == 0
    assert "AnimateDiffPipeline" in capsys.readouterr().out
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "AnimateDiffPipeline" and index["unet"] == ["diffusers", "UNetMotionModel"]
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file() and (out / "vae").is_dir()
    pipe = DiffusionPipeline.from_pretrained(out)
    assert isinstance(pipe, AnimateDiffPipeline) and pipe.motion_adapter is None  # the motion modules live in the UNet
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("a red circle moving right", num_frames=4, num_inference_steps=2, height=16, width=16,
                  generator=torch.Generator().manual_seed(0), output_type="pil").frames  # fmt: skip
    assert len(frames) == 1 and [f.size for f in frames[0]] == [(16, 16)] * 4
    assert frames[0][0].tobytes() != frames[0][3].tobytes()  # frames of a clip, not one image repeated


def test_export_refuses_a_checkpoint_without_safetensors(tmp_path: Path) -> None:
    (tmp_path / "ckpt" / "unet").mkdir(parents=True)
    (tmp_path / "ckpt" / "unet" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        export_model(tmp_path / "ckpt", "builtin:world-base", tmp_path / "out", tmp_path / "cache")
