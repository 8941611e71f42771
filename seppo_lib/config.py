"""The one typed configuration of a seppo run, and how it is loaded.

`SeppoConfig` (sections in `config_sections`) is frozen and forbids unknown keys; every field documents its paper
symbol (see ALGORITHM.md), range and unit. Validators raise with the allowed values,
they never rewrite a value. Presets live in `pipelines/configs/*.yaml`; CLI overrides
are `a.b=value` strings parsed as YAML (see `config_loading`). Floats must be finite and
every number has an upper bound the code can hold; names that become path components
(`name`, `bank.run_id`, `registry.model_name`) match `SAFE_NAME`; URIs must not carry
credentials (they come from the environment, so they never reach a compiled pipeline).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from seppo_lib.config_loading import one_line, parse_override, read_yaml_file
from seppo_lib.config_sections import (
    DEFAULT_WORKDIR,
    MAX_SEED,
    SAFE_NAME,
    WORKDIR_DEFAULTS,
    BankConfig,
    Criterion,
    DataConfig,
    EvalConfig,
    LoraSettings,
    Method,
    ModelConfig,
    ReferenceStrategy,
    RegistryConfig,
    ResolvedInputs,
    SamplingConfig,
    StorageConfig,
    TrackingConfig,
    TrainConfig,
    _Section,
)
from seppo_lib.errors import ConfigError
from seppo_lib.methods import method_spec

PRESET_DIR = Path(__file__).resolve().parent.parent / "pipelines" / "configs"

__all__ = [
    "MAX_SEED", "PRESET_DIR", "BankConfig", "ConfigError", "Criterion", "DataConfig", "EvalConfig", "LoraSettings",
    "Method", "ModelConfig", "ReferenceStrategy", "RegistryConfig", "ResolvedInputs", "SamplingConfig", "SeppoConfig",
    "StorageConfig", "TrackingConfig", "TrainConfig", "apply_overrides", "load_config", "resolve_preset",
]


class SeppoConfig(_Section):
    name: str = Field("seppo", pattern=SAFE_NAME, description="Config name (run and model names).")
    workdir: str = Field(
        DEFAULT_WORKDIR,
        description="Local working directory: data, reports, exports, the default MLflow db, and (unless set) the bank "
        "(bank.uri) and cache (bank.cache_dir).",
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    bank: BankConfig = BankConfig()
    sampling: SamplingConfig = SamplingConfig()
    eval: EvalConfig = EvalConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegistryConfig = RegistryConfig()
    resolved: ResolvedInputs | None = Field(
        None, description="Filled by seppo (seppo_lib.identity.resolve), not by hand: the data version and base model this "
        "config's inputs resolved to; part of the run id. None = not resolved yet.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bank_under_workdir(cls, data: Any) -> Any:
        """bank.uri / bank.cache_dir not given (or null): folders under workdir, so `workdir=/x` moves everything."""
        if not isinstance(data, dict) or not isinstance(data.get("bank", {}), dict):
            return data  # not a mapping: field validation reports it
        workdir, bank = data.get("workdir", DEFAULT_WORKDIR), dict(data.get("bank", {}))
        if not isinstance(workdir, str):
            return data
        for key, folder in WORKDIR_DEFAULTS.items():
            if bank.get(key) is None:
                bank[key] = str(Path(workdir) / folder)
        return {**data, "bank": bank}

    @model_validator(mode="after")
    def _check_method_reference(self) -> SeppoConfig:
        spec, chosen = method_spec(self.train.method), self.bank.reference
        if chosen is None or chosen in spec.allowed_references:
            return self
        if not spec.needs_reference:
            raise ValueError(f"train.method={spec.name} uses no reference model; leave bank.reference unset")
        if len(spec.allowed_references) == 1:
            required = spec.allowed_references[0]
            raise ValueError(
                f"train.method={spec.name} uses the '{required}' reference; "
                f"bank.reference={chosen} contradicts it (leave it unset or set '{required}')"
            )
        raise ValueError(f"train.method={spec.name} allows bank.reference {', '.join(spec.allowed_references)}; got {chosen}")

    # ---- derived values -------------------------------------------------
    @property
    def reference_strategy(self) -> ReferenceStrategy | None:
        """The reference strategy actually used: bank.reference or the method's default (None: no reference)."""
        default = method_spec(self.train.method).default_reference
        return None if default is None else self.bank.reference or default

    @property
    def effective_batch(self) -> int:
        return self.train.batch_size * self.train.grad_accum * self.train.num_processes

    @property
    def samples_per_round(self) -> int:
        return self.effective_batch * self.train.updates_per_round

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every field but `resolved` (stable across processes).

        It names the config (pipeline packages, run names); the run id is `seppo_lib.identity`'s."""
        doc = self.model_dump(mode="json", exclude={"resolved"})
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def run_id(self) -> str:
        """bank.run_id when set, else '<name>-<identity hash[:10]>' of the resolved inputs (`seppo_lib.identity`;
        an unresolved config is resolved once, on first use)."""
        if self.bank.run_id != "auto":
            return self.bank.run_id
        from seppo_lib.identity import run_id  # the one place the identity is defined

        return run_id(self)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SeppoConfig:
        return _validate(json.loads(text), "config JSON")


# ---- loading -------------------------------------------------------------------


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        from seppo_lib.config_docs import unknown_key_message  # the field listing's module imports this one

        msg = unknown_key_message(loc)
    elif first["type"] == "credentials_in_uri":
        pass  # never echo the secret
    elif first["type"] == "string_pattern_mismatch":
        rule = "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit (it names folders)"
        msg = f"{rule}, got {one_line(repr(first['input']), 80)}"
    elif first["type"] == "literal_error":
        msg = f"{msg}, got {first.get('input')!r}"
    elif "input" in first and not isinstance(first["input"], dict):
        msg = f"{msg}, got {one_line(repr(first['input']), 120)}"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return one_line(f"invalid config ({origin}): {loc}: {msg}{more}", 600)


def _validate(data: dict[str, Any], origin: str) -> SeppoConfig:
    try:
        return SeppoConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, origin)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {one_line(repr(text), 120)}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def resolve_preset(name_or_path: str) -> Path:
    path = Path(name_or_path)
    try:
        if path.is_file():
            return path
        preset = PRESET_DIR / f"{name_or_path}.yaml"
        if preset.is_file():
            return preset
    except (OSError, ValueError):  # a NUL byte or an over-long name
        pass
    known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise ConfigError(f"config {one_line(repr(name_or_path), 120)} is neither a file nor a preset (presets: {known})")


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> SeppoConfig:
    """Load a YAML preset/file (or the defaults when None) and apply `a.b=value` overrides."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if name_or_path:
        path = resolve_preset(name_or_path)
        origin = str(path)
        data = read_yaml_file(path)
    return _validate(apply_overrides(data, overrides or []), origin)
