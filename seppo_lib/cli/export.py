"""`seppo export MODEL_URI OUT_DIR`: write a model as a diffusers pipeline folder."""

from __future__ import annotations

import argparse
import json

from seppo_lib.cli.common import add_output_positional, output_from
from seppo_lib.cli.train import add_config_args, config_from


def _export(args: argparse.Namespace) -> int:
    from seppo_lib.export import export_uri

    dest = output_from(args, "OUT_DIR")  # first: with --out, a positional after MODEL_URI is an override
    out = export_uri(config_from(args), args.model, dest, merge=args.merge)
    pipeline = json.loads((out / "model_index.json").read_text())["_class_name"]
    trust = ", trust_remote_code=True" if isinstance(pipeline, list) else ""
    print(f"{args.model} -> {out} ({pipeline[1] if trust else pipeline}); "
          f"load: DiffusionPipeline.from_pretrained({str(out)!r}{trust})")  # fmt: skip
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export", help="write a model as a diffusers pipeline folder (model_index.json + components)",
        description="Export MODEL_URI as a folder that diffusers' DiffusionPipeline.from_pretrained loads: "
        "StableDiffusionPipeline / AnimateDiffPipeline for VAE models, seppo's WorldPipeline "
        "(trust_remote_code=True) for pixel-space models. The config gives the bank (bank:), the "
        "tracking URI (models:/) and data.max_caption_tokens.",
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL_URI",
                   help="bank:<ckpt id>, models:/NAME@ALIAS or models:/NAME/VERSION, a model folder, s3://..., builtin:world-base")  # fmt: skip
    add_output_positional(p, "OUT_DIR", "destination folder (must not exist or be empty)")
    p.add_argument("--merge", action="store_true",
                   help="a LoRA checkpoint: merge the adapter into the UNet (default: base UNet + pytorch_lora_weights.safetensors)")  # fmt: skip
    add_config_args(p)
    p.set_defaults(func=_export)
