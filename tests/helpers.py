"""Small builders shared by tests: image folders, parquet files, configs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from seppo_lib.config import SeppoConfig, load_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def square_image(colour: str, size: int = 16, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.zeros((size, size, 3), dtype=np.uint8) + 20
    x, y = rng.integers(0, size // 2, 2)
    arr[y : y + size // 2, x : x + size // 2] = COLOURS[colour]
    return Image.fromarray(arr)


def make_image_folder(root: Path, n: int = 16, paired: bool = False, size: int = 16) -> Path:
    """A metadata.jsonl folder of n coloured squares ('a red square', ...)."""
    root.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    with (root / "metadata.jsonl").open("w") as f:
        for i in range(n):
            colour = names[i % len(names)]
            square_image(colour, size, i).save(root / f"{i:04d}.png")
            rec = {"file_name": f"{i:04d}.png", "caption": f"a {colour} square"}
            if paired:
                wrong = names[(i + 1) % len(names)]
                square_image(wrong, size, i).save(root / f"{i:04d}_l.png")
                rec["loser_file_name"] = f"{i:04d}_l.png"
            f.write(json.dumps(rec) + "\n")
    return root


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tiny_config(tmp: Path, data: Path, *overrides: str) -> SeppoConfig:
    """The tiny preset pointed at tmp dirs and a local data folder."""
    base = [
        f"workdir={tmp / 'work'}",
        f"bank.uri={tmp / 'bank'}",
        f"bank.cache_dir={tmp / 'cache'}",
        f"data.source={data}",
        "tracking.enabled=false",
    ]
    return load_config("tiny", [*base, *overrides])


def random_step_inputs(batch: int = 8, seed: int = 0):  # type: ignore[no-untyped-def]
    """Random StepInputs for the tiny pixel model (3x8x8 latents, 16x32 text states)."""
    import torch

    from seppo_lib.training.step import StepInputs

    g = torch.Generator().manual_seed(seed)
    return StepInputs(
        x_w=torch.randn(batch, 3, 8, 8, generator=g),
        x_p=torch.randn(batch, 3, 8, 8, generator=g),
        cond=torch.randn(batch, 16, 32, generator=g),
        timesteps=torch.randint(0, 1000, (batch,), generator=g),
        noise=torch.randn(batch, 3, 8, 8, generator=g),
    )


def perturbed_tiny_models(tmp_path: Path):  # type: ignore[no-untyped-def]
    """(noise scheduler, policy UNet nudged away from the reference, frozen reference UNet) of the tiny model."""
    import torch

    from seppo_lib.models import load_model

    model = load_model("builtin:tiny-random", tmp_path / "cache", with_text=False)
    ref = load_model("builtin:tiny-random", tmp_path / "cache", with_text=False).unet.requires_grad_(False)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.003 * torch.randn_like(p))
    return model.noise_scheduler, model.unet, ref
