"""# SEAM READY
The model-family seam: what seppo needs to know about one kind of diffusers model.

The trainer, sampler, bank and export talk to a model only through three records:

`Conditioning` — a frozen batch of text conditioning tensors, one row per sample:
    "hidden"   (B, L, D) always: the denoiser's `encoder_hidden_states`;
    "pooled"   (B, P) optional: a pooled text embedding (SDXL `text_embeds`, SD3 `pooled_projections`);
    "time_ids" (B, 6) optional: SDXL micro-conditioning (original size, crop, target size);
    any other key a family needs (same batch size B on dim 0).
  It moves/casts (`to`), selects rows (`rows`), repeats (`repeat`, `repeat_interleave`, `expand`),
  concatenates (`Conditioning.cat`), replaces rows (`where`, caption dropout) and round-trips through a
  flat tensor dict (`to_flat`/`from_flat`: "hidden" under `hidden_key`, e.g. the shards' legacy
  "text_emb", the others under "cond.<key>"), so prepared shards hold any family's conditioning.

`NoiseProcess` — the training forward process, keyed by the noise scheduler's class name (NOISES):
    draw_timestep(generator, scheduler) -> 0-d tensor   one sample's training timestep, drawn from its
                                                        own generator (slot_draws calls it between the
                                                        flip and the eps draws: keep ONE draw call per
                                                        sample so the RNG order stays fixed);
    add_noise(scheduler, x0, noise, t) -> x_t
    target(scheduler, x0, noise, t) -> the regression target of the denoiser's prediction.
  `ddpm` (DDPMScheduler, integer t ~ U{0..T-1}, eps or v targets) lives in families/sd.py; a flow-matching
  process registers its own with `register_noise` (its scheduler class name must be unique in NOISES).

`ModelFamily` — one family (sd, sdxl, animatediff, sd3, ...). A family MUST set:
    name: str                          registry key, e.g. "sdxl";
    denoiser_folder: str               "unet" or "transformer" (the sub-folder the bank stores and trains);
    denoiser_classes: tuple[str, ...]  diffusers class names accepted in <denoiser_folder>/config.json;
    is_video: bool                     5-D (B, C, F, H, W) samples;
    frozen_parts: tuple[str, ...]      folders export copies from the base model (scheduler, text_encoder,
                                       text_encoder_2, tokenizer, tokenizer_2, vae, ...); absent ones skip;
    text_parts: tuple[str, ...]        the subset of frozen_parts `load_text` loads (encoders + tokenizers);
    noise_scheduler_class: str         diffusers class of scheduler/ for training (NOISES key);
    pipeline_class: str                diffusers pipeline class export writes in model_index.json;
    pipeline_extras: dict              extra model_index.json entries (unused components as [None, None],
                                       pipeline flags); default none;
    sampler_names: tuple[str, ...]     `sampling.scheduler` values the family samples with;
  and implement:
    accepts(denoiser_config: dict) -> bool          True for this family's denoiser config.json (must be
                                                    exclusive: no two families accept the same config);
    load_text(folder, meta) -> dict[str, Any]       {part name: frozen module or tokenizer} for text_parts;
    encode_prompts(model, prompts, max_length, resolution) -> Conditioning
                                                    `model` is a models.DiffusionModel: `.parts` holds
                                                    what load_text returned, also `.denoiser`, `.vae`,
                                                    `.vae_factor`, `.source`; `resolution` is the pixel
                                                    size (None: the family's default); run under no_grad,
                                                    return float32 tensors on the encoder's device;
    denoise(denoiser, noisy, timesteps, cond) -> Tensor
                                                    the denoiser forward with the family's kwargs
                                                    (encoder_hidden_states, added_cond_kwargs,
                                                    pooled_projections, ...), returning the prediction
                                                    tensor; `denoiser` may be DDP-wrapped (`.module`);
                                                    `timesteps` is (B,) in training, 0-d in sampling.
  Defaults it MAY override: `optional_parts` (the text_parts a model may lack, e.g. SD3's T5: export
  writes each absent one as [None, None] in model_index.json), `pipeline_index(denoiser_class)`, `matches(folder)`,
  `load_denoiser(folder)`, `load_noise_scheduler(folder)`,
  `noise` (NOISES[noise_scheduler_class]), `sampling_scheduler(name, config)` (diffusers class from
  SAMPLERS), `init_noise_sigma(scheduler)`, `scale_model_input(scheduler, x, t)`, `step_kwargs(name, eta, generators)`,
  `draw_timestep`/`add_noise`/`target` (delegate to `noise`).
  The sampler (seppo_lib/sampling.py) runs, per chunk: `sched = sampling_scheduler(name, config)`,
  `sched.set_timesteps(steps, device=...)`, latents = N(0, I) * `init_noise_sigma(sched)`, then for t in
  `sched.timesteps`: x = `scale_model_input(sched, cat([x, x]) if CFG, t)`, pred = `denoise(denoiser, x,
  t, cat([uncond, cond]))`, CFG mix, `sched.step(pred, t, latents, **step_kwargs(name, eta, generators))
  .prev_sample`. The trainer (seppo_lib/diffusion.py) noises with `add_noise` and regresses `denoise`
  onto `target`; the bank stores <denoiser_folder>/ + scheduler/ as θ_0 and each round's <denoiser_folder>/.
  Register an instance with `register_family` and add the module's name to BUILTIN (imported lazily, on
  the first read of FAMILIES/NOISES); `family_for(x)` finds the family of a model folder, a
  DiffusionModel (its `.family`) or a denoiser module; `is_model_folder(folder)` tells a diffusers model
  folder (scheduler/ + any family's denoiser folder, `denoiser_folders()`). `Conditioning` lives in families/conditioning.py. After `# SEAM READY` names are only added.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seppo_lib.errors import ModelError
from seppo_lib.families.conditioning import FLAT_PREFIX, HIDDEN, Conditioning

__all__ = ["FAMILIES", "FLAT_PREFIX", "HIDDEN", "NOISES", "Conditioning", "ModelFamily", "NoiseProcess", "family_for", "noise_for",
           "register_family", "register_noise", "require_safetensors"]  # fmt: skip

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class NoiseProcess(ABC):
    """A training forward process (see the module docstring); one instance per scheduler class."""

    name: str
    scheduler_class: str

    @abstractmethod
    def draw_timestep(self, generator: torch.Generator, scheduler: Any) -> Tensor: ...

    @abstractmethod
    def add_noise(self, scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor: ...

    @abstractmethod
    def target(self, scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor: ...


BUILTIN = ("sd", "animatediff", "sdxl", "sd3")  # modules under seppo_lib/families/ that register a family


_BUILTIN_LOADED = False


def load_builtin() -> None:
    """Import the built-in family modules once (lazily: a family module may import seppo_lib.diffusion).
    Registry reads call this, so after the first complete load it is one flag test."""
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    import importlib

    for name in BUILTIN:
        importlib.import_module(f"seppo_lib.families.{name}")
    _BUILTIN_LOADED = True


class _LazyRegistry(MutableMapping[str, Any]):
    """A mapping whose reads first import the built-in modules (BUILTIN), so FAMILIES/NOISES are complete when
    read (`get`, `keys`, `items`, `in`, ... all go through `__getitem__` / `__iter__`); writes do not import."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        load_builtin()
        return self._items[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._items[key] = value

    def __delitem__(self, key: str) -> None:
        del self._items[key]

    def __iter__(self) -> Iterator[str]:
        load_builtin()
        return iter(self._items)

    def __len__(self) -> int:
        load_builtin()
        return len(self._items)


NOISES: MutableMapping[str, NoiseProcess] = _LazyRegistry()  # scheduler class name -> its process


def register_noise(process: NoiseProcess) -> NoiseProcess:
    NOISES[process.scheduler_class] = process
    return process


def noise_for(scheduler: Any) -> NoiseProcess:
    """The training process of a noise scheduler instance (by its class name)."""
    name = type(scheduler).__name__
    if name not in NOISES:
        raise ModelError(f"no training noise process for scheduler {name}; known: {', '.join(sorted(NOISES))}")
    return NOISES[name]


def require_safetensors(folder: Path, what: str) -> None:
    """Refuse a weight folder without *.safetensors: its pickle files (pytorch_model.bin) could run code."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
    found = "no *.safetensors weights"
    if pickles:
        found = f"only pickle weights ({', '.join(pickles[:3])}), refused because unpickling can run code"
    raise ModelError(f"{what} {folder} has {found}; convert it with save_pretrained(..., safe_serialization=True)")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (`.module`), or `module` itself."""
    return getattr(module, "module", module)


def _keep_x0_clipping(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """`config` for sampler class `cls`, keeping the model's x0 clipping: a model trained with
    `clip_sample=True` (the pixel-space world models) samples with its predicted x0 clipped to
    [-1, 1] in DDPM/DDIM, but DPM-Solver has no `clip_sample`; its dynamic thresholding with
    `sample_max_value=1` is the same clip (s = clamp(quantile, 1, 1) = 1), so it is switched on.
    A sampler with neither (Euler) or a clip range other than 1 gets a warning instead."""
    import inspect

    keys = inspect.signature(cls.__init__).parameters
    if not config.get("clip_sample") or "clip_sample" in keys:
        return config
    if "thresholding" in keys and float(config.get("clip_sample_range", 1.0)) == 1.0:
        return {**config, "thresholding": True, "sample_max_value": 1.0}
    logger.warning("%s cannot clip the predicted x0 as this model's scheduler does (clip_sample=True): samples may differ in quality",
                   cls.__name__)  # fmt: skip
    return config


SAMPLERS = {  # sampling.scheduler -> diffusers class
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
}


class ModelFamily(ABC):
    """One model family; see the module docstring for what a subclass sets and implements."""

    name: str
    denoiser_folder: str = "unet"
    denoiser_classes: tuple[str, ...] = ()
    is_video: bool = False
    frozen_parts: tuple[str, ...] = ()
    text_parts: tuple[str, ...] = ()
    optional_parts: tuple[str, ...] = ()  # text_parts a model may lack (export records them as [None, None])
    noise_scheduler_class: str = "DDPMScheduler"
    pipeline_class: str = ""
    sampler_names: tuple[str, ...] = tuple(SAMPLERS)
    pipeline_extras: dict[str, Any] = {}  # noqa: RUF012 — extra model_index.json entries (empty components, flags)

    @abstractmethod
    def accepts(self, denoiser_config: dict[str, Any]) -> bool: ...

    @abstractmethod
    def load_text(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]: ...

    @abstractmethod
    def encode_prompts(self, model: Any, prompts: list[str], max_length: int, resolution: int | None = None) -> Conditioning: ...

    @abstractmethod
    def denoise(self, denoiser: torch.nn.Module, noisy: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor: ...

    def __repr__(self) -> str:
        return f"<model family {self.name}>"

    def pipeline_index(self, denoiser_class: str) -> dict[str, Any]:
        """The model_index.json entries export adds for a `denoiser_class` denoiser with a VAE:
        `_class_name` (pipeline_class) and pipeline_extras; ModelError when no diffusers pipeline fits."""
        if not self.pipeline_class:
            raise ModelError(f"no diffusers pipeline for a {denoiser_class} with a VAE (family {self.name})")
        return {**self.pipeline_extras, "_class_name": self.pipeline_class}

    def matches(self, folder: Path) -> bool:
        """True when `folder`'s denoiser config.json is one this family accepts."""
        config = read_json(Path(folder) / self.denoiser_folder / "config.json")
        return bool(config) and self.accepts(config)

    def load_denoiser(self, folder: str | Path) -> torch.nn.Module:
        """Load a denoiser folder (config.json + safetensors) with the class named in its config."""
        import diffusers

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder} is not a {self.denoiser_folder} folder (no config.json)")
        name = read_json(folder / "config.json").get("_class_name", "")
        if name not in self.denoiser_classes:
            raise ModelError(f"unsupported {self.name} denoiser class {name!r}; supported: {', '.join(self.denoiser_classes)}")
        require_safetensors(folder, self.denoiser_folder)
        try:
            return getattr(diffusers, name).from_pretrained(folder, use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelError(f"cannot load {name} from {folder}: {str(err).splitlines()[0]}") from None

    def load_noise_scheduler(self, folder: Path) -> Any:
        import diffusers

        return getattr(diffusers, self.noise_scheduler_class).from_pretrained(Path(folder) / "scheduler")

    @property
    def noise(self) -> NoiseProcess:
        if self.noise_scheduler_class not in NOISES:
            raise ModelError(f"family {self.name}: no noise process registered for {self.noise_scheduler_class}")
        return NOISES[self.noise_scheduler_class]

    def draw_timestep(self, generator: torch.Generator, scheduler: Any) -> Tensor:
        return self.noise.draw_timestep(generator, scheduler)

    def add_noise(self, scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return self.noise.add_noise(scheduler, x0, noise, timesteps)

    def target(self, scheduler: Any, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return self.noise.target(scheduler, x0, noise, timesteps)

    def sampling_scheduler(self, name: str, scheduler_config: Mapping[str, Any]) -> Any:
        """A fresh sampling scheduler of kind `name` built from the model's noise schedule."""
        import diffusers

        if name not in self.sampler_names:
            raise ValueError(f"unknown sampler {name!r} for {self.name} models; allowed: {', '.join(self.sampler_names)}")
        cls = getattr(diffusers, SAMPLERS[name])
        return cls.from_config(_keep_x0_clipping(cls, dict(scheduler_config)))

    def init_noise_sigma(self, scheduler: Any) -> float:
        """The factor on the initial N(0, I) latents (flow-matching schedulers have none: override with 1.0)."""
        return scheduler.init_noise_sigma

    def scale_model_input(self, scheduler: Any, sample: Tensor, t: Tensor) -> Tensor:
        return scheduler.scale_model_input(sample, t)

    def step_kwargs(self, name: str, eta: float, generators: list[torch.Generator]) -> dict[str, Any]:
        """Extra `scheduler.step` arguments: per-sample generators, DDIM's eta."""
        kwargs: dict[str, Any] = {"generator": generators}
        if name == "ddim":
            kwargs["eta"] = eta
        return kwargs


FAMILIES: MutableMapping[str, ModelFamily] = _LazyRegistry()  # name -> family; reading it imports the built-in modules


def register_family(family: ModelFamily) -> ModelFamily:
    FAMILIES[family.name] = family
    return family


def denoiser_folders() -> tuple[str, ...]:
    """The distinct denoiser folders of the registered families ("unet", "transformer", ...)."""
    return tuple(dict.fromkeys(f.denoiser_folder for f in FAMILIES.values()))


def is_model_folder(folder: Path) -> bool:
    """True when `folder` has a scheduler/ and some family's denoiser folder (a diffusers model folder)."""
    return (folder / "scheduler").is_dir() and any((folder / d).is_dir() for d in denoiser_folders())


def family_of_config(config: dict[str, Any], where: str) -> ModelFamily:
    """The one family that accepts a denoiser config.json (`where` names its origin in the error)."""
    found = [f for f in FAMILIES.values() if f.accepts(config)]
    if len(found) != 1:
        what = "no model family accepts" if not found else f"families {[f.name for f in found]} all accept"
        raise ModelError(f"{what} the {config.get('_class_name', '?')} denoiser of {where}; known: {', '.join(FAMILIES)}")
    return found[0]


def family_for(obj: Any) -> ModelFamily:
    """The family of a model folder (str/Path), a DiffusionModel (its `.family`) or a denoiser module."""
    if isinstance(obj, (str, Path)):
        folder = Path(obj)
        found = [f for f in FAMILIES.values() if f.matches(folder)]
        if len(found) == 1:
            return found[0]
        denoisers = [d for d in denoiser_folders() if (folder / d / "config.json").is_file()]
        if not denoisers:
            raise ModelError(f"{folder} has no denoiser folder ({' or '.join(denoiser_folders())})")
        return family_of_config(read_json(folder / denoisers[0] / "config.json"), str(folder))
    family = getattr(obj, "family", None)
    if isinstance(family, ModelFamily):
        return family
    if isinstance(obj, torch.nn.Module):
        model = unwrap(obj)
        config = dict(getattr(model, "config", {}) or {})
        config["_class_name"] = type(model).__name__
        return family_of_config(config, type(model).__name__)
    raise ModelError(f"cannot tell the model family of {type(obj).__name__}")
