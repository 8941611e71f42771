"""The sections of `seppo_lib.config.SeppoConfig` (data, model, train, bank, sampling, eval, storage, tracking,
registry, resolved): frozen pydantic models that forbid unknown keys.

Every field documents its paper symbol (ALGORITHM.md), range and unit; validators raise with the allowed values and
never rewrite a value. Import them from `seppo_lib.config`, which assembles them into the one run config.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from seppo_lib.config_uris import S3URI, GitURI, Location, TrackingURI, check_uri
from seppo_lib.methods import METHODS, method_choices, unknown_method_message


def _registered_method(name: str) -> str:
    if name not in METHODS:
        raise PydanticCustomError("unknown_method", unknown_method_message(name))
    return name


Method = Annotated[str, AfterValidator(_registered_method)]  # a name in seppo_lib.methods.METHODS
Criterion = Literal["sign", "indicator", "sft_mse", "none"]
ReferenceStrategy = Literal["uniform", "latest", "initial"]

SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SEED = 2**32 - 1  # numpy and torch generators both take it
DEFAULT_WORKDIR = "seppo-runs"
#: bank fields that default to a folder under `workdir` (field -> folder name); docs show `<workdir>/<folder>`
WORKDIR_DEFAULTS = {"uri": "bank", "cache_dir": "cache"}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DataConfig(_Section):
    source: Location = Field(
        "builtin:world",
        description="Winner-only training data: a folder with metadata.jsonl (file_name, caption), "
        "a Pick-a-Pic style parquet file or folder of parquet files, an s3:// URI of either, or "
        "'builtin:world' (the built-in synthetic world, generated on first use).",
    )
    format: Literal["auto", "folder", "pickapic", "video"] = Field(
        "auto", description="Source layout; 'auto' picks 'pickapic' for parquet, 'video' for a folder whose metadata.jsonl "
        "names video files (.gif/.mp4/.webm) or frame folders, else 'folder'."
    )
    dvc_repo: GitURI = Field(
        None, description="Git repo (path or URL) whose DVC-tracked `source` path is read; None reads `source` directly."
    )
    dvc_rev: str | None = Field(None, description="Git revision of `dvc_repo` to read the data at (tag, branch, SHA).")
    resolution: int = Field(32, ge=8, le=2048, description="Square training resolution in pixels (resize + center crop).")
    num_frames: int = Field(
        8, ge=1, le=1024, description="F: frames per training clip (video data, e.g. builtin:world-video); shorter videos are dropped as too_short."
    )
    frame_stride: int = Field(
        1, ge=1, le=64, description="Take every n-th source frame when cutting the clip (video data only); 1 = consecutive frames."
    )
    random_flip: bool = Field(False, description="Horizontally flip winner and partner together with p=0.5 in training.")
    caption_dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="Fraction of training captions replaced by '' (keeps CFG working); never when sampling."
    )
    max_rows: int | None = Field(None, ge=1, le=10**9, description="Keep at most this many valid rows (in source order); None keeps all.")
    shard_size: int = Field(1024, ge=1, le=10**6, description="Rows per precomputed latent shard written by prepare_data.")
    max_caption_tokens: int = Field(77, ge=4, le=512, description="Tokenizer max length (text embeddings are padded to it).")
    max_image_pixels: int = Field(
        8192 * 8192, ge=1, le=2**31,
        description="Largest image or video frame (width × height, from its header) a data row may have; larger rows are "
        "counted as image_too_large before anything is decoded.",
    )


class LoraSettings(_Section):
    """LoRA adapter of `model.trainable=lora` (PEFT `LoraConfig`, injected with `unet.add_adapter` as diffusers'
    scripts do). Defaults: diffusers examples/text_to_image/train_text_to_image_lora.py and
    examples/dreambooth/train_dreambooth_lora.py (`--rank` 4, `lora_alpha=rank`, `init_lora_weights="gaussian"`,
    UNet target_modules to_k/to_q/to_v/to_out.0); examples/research_projects/diffusion_dpo/train_diffusion_dpo.py
    has the same defaults and its README runs `--rank=8`."""

    rank: int = Field(4, ge=1, le=4096, description="r: rank of the LoRA update B·A (diffusers scripts' --rank, default 4).")
    alpha: float | None = Field(
        None, gt=0, le=1e6, description="LoRA α: the update is scaled by α/r; None = rank (scale 1), as the diffusers "
        "scripts set lora_alpha=rank.",
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA branch's input in training, [0, 1) (train_dreambooth_lora.py "
        "--lora_dropout, default 0).",
    )
    target_modules: list[str] = Field(
        ["to_k", "to_q", "to_v", "to_out.0"], min_length=1,
        description="UNet module names (suffixes) that get an adapter; default: the attention projections, as in "
        "diffusers' train_text_to_image_lora.py / train_diffusion_dpo.py.",
    )

    @field_validator("target_modules")
    @classmethod
    def _modules_named(cls, modules: list[str]) -> list[str]:
        if any(not m.strip() for m in modules) or len(set(modules)) != len(modules):
            raise ValueError(f"target_modules must be distinct non-empty module names, got {modules}")
        return modules

    @property
    def scale_alpha(self) -> float:
        """The α PEFT gets (α/r scales the update)."""
        return float(self.rank) if self.alpha is None else self.alpha


class ModelConfig(_Section):
    pretrained: Location = Field(
        "builtin:world-base",
        description="Base model θ_0: a diffusers-format folder (unet/, scheduler/, text_encoder/, tokenizer/, optional vae/), "
        "an s3:// URI of one, a registry version models:/NAME@ALIAS or models:/NAME/VERSION (tracking URI from "
        "tracking.mlflow_uri / MLFLOW_TRACKING_URI), 'builtin:world-base' (shipped weights) or 'builtin:tiny-random' (random test model).",
    )
    trainable: Literal["full", "motion", "lora"] = Field(
        "full", description="Which UNet parameters train: all, only AnimateDiff motion modules (video), or a LoRA "
        "adapter (model.lora; bank checkpoints then hold the adapter only, θ_k = θ_0 + adapter_k).",
    )
    lora: LoraSettings = Field(
        LoraSettings(), description="LoRA adapter of model.trainable=lora (rank, alpha, dropout, target_modules); ignored otherwise."
    )
    fallback: S3URI = Field(
        None, description="Base model used when model.pretrained is models:/NAME@ALIAS and the registry has no such model "
        "or alias yet (a first scheduled run from @champion); same forms as model.pretrained. None = that is an error.",
    )


class TrainConfig(_Section):
    method: Method = Field("seppo", description=f"Training method (a record of seppo_lib.methods): {method_choices()}.")
    beta: float = Field(
        2000.0, gt=0, le=1e6,
        description="β: literal coefficient on the mean-MSE difference. Diffusion-DPO's script multiplies by 0.5, so its "
        "beta_dpo equals 2·β: beta_dpo=5000 is β=2500, and the SePPO paper's β=2000 (beta_dpo convention) is β=1000.",
    )
    criterion: Criterion = Field(
        "sign", description="Anchor criterion when the reference fits the winner better: sign (s=-1), indicator (s=0), "
        "sft_mse (MSE on the winner), none (always s=+1)."
    )
    n_rounds: int = Field(3, ge=1, le=1000, description="K: number of rounds; the bank holds θ_0..θ_K at the end.")
    updates_per_round: int = Field(30, ge=1, le=10**6, description="U: optimizer updates per round (paper: 30).")
    batch_size: int = Field(4, ge=1, le=65536, description="Pairs per micro-batch per process.")
    grad_accum: int = Field(1, ge=1, le=65536, description="Micro-batches accumulated per update; effective batch = batch_size·grad_accum·num_processes.")
    num_processes: int = Field(1, ge=1, le=4096, description="Data-parallel training processes (GPUs); must match the accelerate launch.")
    lr: float = Field(1e-4, gt=0, le=1.0, description="Peak learning rate of AdamW (reached after warmup; see lr_scheduler).")
    warmup_steps: int = Field(0, ge=0, le=10**9, description="Linear LR warmup, in optimizer updates (counted over the whole run).")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="LR after warmup: constant, or decayed to 0 at the run's last update (n_rounds·updates_per_round) "
        "linearly or along a half cosine (diffusers.optimization.get_scheduler; resumes exactly across rounds)."
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW β1 (first-moment decay), [0, 1).")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW β2 (second-moment decay), [0, 1).")
    weight_decay: float = Field(1e-2, ge=0, le=10, description="AdamW decoupled weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, le=1e6, description="Gradient-norm clip threshold.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="Autocast precision; master weights stay fp32.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Run seed: data order, noise, timesteps, reference draws and sample seeds derive from it.")
    gradient_checkpointing: bool = Field(False, description="Recompute UNet activations in backward (less memory, ~30% slower).")
    channels_last: bool = Field(
        False, description="Policy and reference UNets in channels-last memory format (faster convolutions; same loss and "
        "gradients within float rounding, docs/performance.md)."
    )
    adamw_impl: Literal["for-loop", "foreach", "fused"] = Field(
        "foreach", description="AdamW kernel: foreach (multi-tensor; bit-identical to the per-tensor for-loop, which was "
        "torch's CPU default), for-loop, or fused (one kernel; the same update within float rounding)."
    )
    compile: bool = Field(
        False, description="torch.compile the policy and reference UNets (the first update of a process pays the compile; "
        "reference swaps and later rounds reuse it)."
    )

    @model_validator(mode="after")
    def _decay_after_warmup(self) -> TrainConfig:
        total = self.n_rounds * self.updates_per_round
        if self.lr_scheduler != "constant" and self.warmup_steps >= total:
            raise ValueError(f"train.lr_scheduler={self.lr_scheduler} decays after the warmup, but train.warmup_steps="
                             f"{self.warmup_steps} is not below the run's {total} updates (n_rounds·updates_per_round)")
        return self


class BankConfig(_Section):
    uri: Location = Field(
        f"{DEFAULT_WORKDIR}/bank", json_schema_extra={"derived_default": "<workdir>/bank"},
        description="Checkpoint bank root: local path or s3://bucket/prefix; unset (or null) = <workdir>/bank.",
    )
    run_id: str = Field(
        "auto", pattern=SAFE_NAME,
        description="Bank run id (a folder name: letters, digits, '_', '.', '-'); 'auto' = '<name>-<identity hash[:10]>' of the training fields, data version and base model, so reruns of the same inputs resume (seppo_lib.identity).",
    )
    reference: ReferenceStrategy | None = Field(
        None, description="Reference choice from θ_0..θ_{k-1}: uniform (SePPO), latest (SPIN), initial (DITTO). "
        "None = the method's own (seppo: uniform, spin: latest, dpo: initial)."
    )
    reference_resample: Literal["round", "step"] = Field(
        "round", description="Draw the reference once per round or once per update (from the bank at round start)."
    )
    cache_dir: str = Field(
        f"{DEFAULT_WORKDIR}/cache", json_schema_extra={"derived_default": "<workdir>/cache"},
        description="Local cache of downloaded checkpoints and models; unset (or null) = <workdir>/cache.",
    )


class SamplingConfig(_Section):
    scheduler: Literal["ddim", "ddpm", "euler", "dpmsolver"] = Field("ddim", description="Sampler for reference samples.")
    num_inference_steps: int = Field(20, ge=1, le=1000, description="Sampler steps.")
    guidance_scale: float = Field(7.5, ge=0, le=100, description="Classifier-free guidance w (1 = no guidance).")
    eta: float = Field(0.0, ge=0, le=1, description="DDIM η (0 = deterministic).")
    batch_size: int = Field(16, ge=1, le=65536, description="Samples per sampler forward batch.")
    n_shards: int = Field(1, ge=1, le=1024, description="Workers the round's reference samples are split over.")
    decode_roundtrip: bool = Field(False, description="Decode reference latents with the VAE and re-encode (paper: off).")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="dtype the reference sampler runs in (UNet weights, latents and scheduler steps, like a diffusers "
        "pipeline's torch_dtype); samples are returned as fp32."
    )
    channels_last: bool = Field(
        False, description="Sampling UNet in channels-last memory format (faster convolutions; samples equal within float rounding)."
    )
    compile: bool = Field(
        False, description="torch.compile the sampling UNet (compiled once per process; later checkpoints reuse the graph)."
    )


class EvalConfig(_Section):
    prompts: Location = Field(
        "builtin:world-test",
        description="Prompt set: a file (txt/jsonl/parquet/tsv/json, local or s3://), builtin:world-test / "
        "builtin:world-train (image world) or builtin:world-video-test / builtin:world-video-train (video world).",
    )
    max_prompts: int | None = Field(64, ge=1, le=10**6, description="Use at most this many prompts (None = all).")
    images_per_prompt: int = Field(1, ge=1, le=10**4, description="Samples (images, or clips for video) per prompt.")
    seed: int = Field(1234, ge=0, le=MAX_SEED, description="Base seed of evaluation samples (same for candidate and champion).")
    scorers: list[str] = Field(
        ["world"],
        description="Scorers. Image models: world, pickscore, clip, aesthetic, hpsv2, imagereward. Video models: "
        "world_motion, psnr, ssim (per clip), fvd, fid (set-level Fréchet distances, lower is better).",
    )
    scorer_paths: dict[str, str] = Field(
        {},
        description="Local/S3 locations per scorer name: image scorer weights; video: fvd / fid feature-extractor "
        "folders and reference_clips (video folder with metadata.jsonl; unset = the video world's ground-truth renders).",
    )
    gate_metric: str = Field(
        "world", description="Metric whose mean decides promotion (fvd / fid: the set-level value, with registry.gate_direction=lower)."
    )
    bootstrap: int = Field(1000, ge=100, le=10**6, description="Bootstrap resamples for win-rate confidence intervals.")


    @field_validator("scorer_paths")
    @classmethod
    def _paths_have_no_credentials(cls, paths: dict[str, str]) -> dict[str, str]:
        for value in paths.values():
            check_uri(value, "s3")
        return paths


class StorageConfig(_Section):
    s3_endpoint_url: S3URI = Field(None, description="S3 endpoint (MinIO: http://minio:9000); None = AWS. Env AWS_ENDPOINT_URL also works.")
    s3_region: str | None = Field(None, description="S3 region; None = from the environment.")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field("auto", description="S3 addressing (MinIO: path).")
    s3_max_attempts: int = Field(8, ge=1, le=50, description="S3 retries per request after the first attempt (also bounded by s3_time_budget_s).")
    s3_time_budget_s: float = Field(
        120.0, gt=0, le=3600,
        description="Total seconds one S3 request may take with its retries (a line is logged per retry); each attempt's "
        "connect/read timeouts are capped at a third of it. A hanging endpoint ends with one error naming it.",
    )


class TrackingConfig(_Section):
    mlflow_uri: TrackingURI = Field(
        None, description="MLflow tracking URI, without credentials (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN from the "
        "environment); None = sqlite:///<workdir>/mlflow.db."
    )
    experiment: str = Field("seppo", description="MLflow experiment name.")
    enabled: bool = Field(True, description="Log to MLflow at all.")


class RegistryConfig(_Section):
    model_name: str | None = Field(
        None, pattern=SAFE_NAME, description="Registered model name (letters, digits, '_', '.', '-'); None = 'seppo-<config name>'."
    )
    gate_direction: Literal["higher", "lower"] = Field("higher", description="Which direction of gate_metric is better.")
    min_margin: float = Field(0.0, ge=0, le=1e6, description="Candidate must beat the champion by at least this (metric units).")


class ResolvedInputs(_Section):
    """What a run's inputs resolved to (`seppo_lib.identity.resolve`); travels in the config JSON between steps."""

    data_version: str = Field(
        description="dvc:<commit SHA>:<DVC md5> | md5:<content md5> (folder/parquet) | s3:<md5 of the listing> | "
        "builtin:<generator hash>:<parameters>."
    )
    data_rev: str | None = Field(None, description="Git commit SHA the DVC data was read at (None: not DVC).")
    data_md5: str | None = Field(None, description="DVC's md5 of the tracked folder, or the content md5 of a local source.")
    data_rev_requested: str | None = Field(None, description="data.dvc_rev as given (a branch, tag or SHA) before pinning.")
    base_model: str = Field(description="models:/NAME/<version> | md5:<content md5> (folder, builtin) | s3:<md5 of the listing>.")
    base_model_requested: str = Field(description="model.pretrained (or the base_model pipeline parameter) as given.")
    fallback: bool = Field(False, description="True when model.fallback was used because the registry alias did not exist.")
