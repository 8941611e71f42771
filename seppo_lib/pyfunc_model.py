"""The MLflow pyfunc flavor of an exported model: prompts in, base64 PNG images out.

Every registered version is an MLflow model (`save_pyfunc_model`, models-from-code: the model
file is `seppo_lib/pyfunc_entry.py`, no pickle) whose artifact `pipeline` is the diffusers folder
of `seppo_lib.export`; `mlflow.pyfunc.load_model("models:/<name>@champion")`
and `mlflow models serve` load it through `DiffusionPyfunc`.
"""

from __future__ import annotations

import base64
import io
import logging
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

logger = logging.getLogger(__name__)

PIPELINE_ARTIFACT = "pipeline"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 7.5
REQUIREMENTS = ("seppo", "mlflow", "torch", "diffusers", "transformers", "pandas", "pillow")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed", required=False)]),
    outputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed"), ColSpec("string", "image"),
                    ColSpec("long", "width"), ColSpec("long", "height"), ColSpec("long", "frames")]),  # fmt: skip
    params=ParamSchema([ParamSpec("num_inference_steps", "long", DEFAULT_STEPS),
                        ParamSpec("guidance_scale", "double", DEFAULT_GUIDANCE)]),  # fmt: skip
)


class DiffusionPyfunc(mlflow.pyfunc.PythonModel):
    """A seppo model as an MLflow pyfunc: one generated image per input row.

    Input: a pandas DataFrame with a `prompt` column (str) and an optional `seed` column
    (int; missing or NaN = the row's index). Each row is sampled on its own, with a CPU
    generator seeded by `seed`, so a row's image does not depend on the other rows.
    Params (optional): `num_inference_steps` (default 20) and `guidance_scale` (default 7.5);
    the sampler is DDIM built from the model's noise schedule (seppo's default sampler).
    Output: a DataFrame with one row per input row: `prompt`, `seed`, `image` (base64 of a
    PNG; for video models an animated PNG of the clip), `width`, `height` (pixels) and `frames`
    (1 for images). Decode with `PIL.Image.open(io.BytesIO(base64.b64decode(row.image)))`.
    The diffusers folder is the artifact `pipeline`, loaded with
    `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` (seppo must be installed).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import torch
        from diffusers import DDIMScheduler, DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(context.artifacts[PIPELINE_ARTIFACT], trust_remote_code=True, use_safetensors=True)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to("cuda" if torch.cuda.is_available() else "cpu")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch

        params = params or {}
        steps = int(params.get("num_inference_steps", DEFAULT_STEPS))
        guidance = float(params.get("guidance_scale", DEFAULT_GUIDANCE))
        seeds = model_input["seed"] if "seed" in model_input else pd.Series(range(len(model_input)), index=model_input.index)
        rows = []
        for i, (prompt, seed) in enumerate(zip(model_input["prompt"], seeds, strict=True)):
            seed = i if pd.isna(seed) else int(seed)
            out = self.pipe(prompt, num_inference_steps=steps, guidance_scale=guidance,
                            generator=torch.Generator().manual_seed(seed))  # fmt: skip
            frames = out.frames[0] if getattr(out, "frames", None) is not None else [out.images[0]]
            rows.append({"prompt": str(prompt), "seed": seed, "image": encode_png(frames),
                         "width": frames[0].width, "height": frames[0].height, "frames": len(frames)})  # fmt: skip
        return pd.DataFrame(rows, columns=list(SIGNATURE.outputs.input_names()))


def encode_png(frames: list[Any]) -> str:
    """Base64 of a PNG of one PIL image, or of an animated PNG of several frames."""
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=len(frames) > 1, append_images=frames[1:])
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def save_pyfunc_model(pipeline_dir: str | Path, dest: str | Path) -> Path:
    """Write the MLflow model `dest` (MLmodel, signature, input example) around the diffusers folder `pipeline_dir`.

    The folder is staged as a plain copy (symlinked files of a cached export dereferenced):
    MLflow refuses artifacts that resolve outside their folder.
    """
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix=".pyfunc-", dir=dest.parent) as staging:
        staged = Path(staging) / PIPELINE_ARTIFACT
        shutil.copytree(pipeline_dir, staged, symlinks=False)
        mlflow.pyfunc.save_model(
            path=str(dest), python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts={PIPELINE_ARTIFACT: str(staged)}, signature=SIGNATURE,
            input_example=pd.DataFrame({"prompt": ["a red circle on the left"], "seed": [0]}),
            pip_requirements=_requirements(),
        )  # fmt: skip
    logger.info("saved the MLflow pyfunc model of %s at %s", pipeline_dir, dest)
    return dest


def pipeline_dir(model_dir: str | Path) -> Path:
    """The diffusers folder inside a downloaded MLflow model written by `save_pyfunc_model`."""
    from mlflow.models import Model

    model_dir = Path(model_dir)
    flavor = Model.load(str(model_dir / "MLmodel")).flavors.get("python_function", {})
    return model_dir / flavor["artifacts"][PIPELINE_ARTIFACT]["path"]


def model_folder(downloaded: str | Path) -> Path:
    """The diffusers folder of a downloaded registry version: inside the MLflow model when it is one
    (versions registered as pyfunc models), else the download itself (older plain-file versions)."""
    downloaded = Path(downloaded)
    return pipeline_dir(downloaded) if (downloaded / "MLmodel").is_file() else downloaded
