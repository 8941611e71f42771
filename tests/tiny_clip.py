"""A tiny random CLIP model + processor saved in transformers format, built without any hub file.

The tokenizer is a byte-level BPE with no merges (every byte is a token, plus its `</w>`
end-of-word variant), so it needs no downloaded vocab. Scores computed with these random weights
mean nothing; the model only exercises the loading and scoring code paths.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SIZE = 32
PROJECTION_DIM = 16


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def tiny_vocab() -> dict[str, int]:
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_tiny_clip(
    path: str | Path,
    *,
    seed: int = 0,
    logit_scale: float | None = None,
    processor: str = "same",
) -> Path:
    """Save a random CLIPModel (+ CLIPProcessor) under `path` and return it.

    processor: "same" (processor files beside the model, like openai/clip-vit-*), "subdir"
    (in `processor/`, the PickScore_v1 layout this project supports) or "none".
    logit_scale: the model's `logit_scale` parameter (log of the temperature), e.g. math.log(100).
    """
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:  # transformers >= 5: the PIL backend works without torchvision
        from transformers.models.clip import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers 4.x: the default processor is PIL-based
        from transformers import CLIPImageProcessor as ImageProcessor

    vocab = tiny_vocab()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**common, "vocab_size": len(vocab), "max_position_embeddings": 77, "bos_token_id": bos,
                     "eos_token_id": eos, "pad_token_id": eos, "projection_dim": PROJECTION_DIM},
        vision_config={**common, "image_size": IMAGE_SIZE, "patch_size": 8, "projection_dim": PROJECTION_DIM},
        projection_dim=PROJECTION_DIM,
        logit_scale_init_value=math.log(100.0) if logit_scale is None else logit_scale,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    out = Path(path)
    model.save_pretrained(out)
    if processor != "none":
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
        image_processor = ImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
        proc_dir = out / "processor" if processor == "subdir" else out
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(proc_dir)
    return out


def random_images(n: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[Image.Image]:
    """`n` random RGB images (not square, so resize + center crop is exercised)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]
