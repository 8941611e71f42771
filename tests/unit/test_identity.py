"""Run identity (seppo_lib.identity): which fields enter the run id, data versions, content digests, binding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from seppo_lib import identity
from seppo_lib.config import ConfigError, ResolvedInputs, SeppoConfig, load_config
from seppo_lib.errors import DataError
from tests.helpers import make_image_folder

#: Changes that must not move the run id: evaluation, registry, tracking, storage, every location.
NEUTRAL = [
    "eval.max_prompts=3", "eval.seed=7", "eval.scorers=[world,clip]", "eval.bootstrap=200", "eval.images_per_prompt=2",
    "workdir=/elsewhere", "bank.uri=s3://other-bucket/bank", "bank.cache_dir=/tmp/other-cache", "storage.s3_region=eu-west-1",
    "tracking.enabled=false", "tracking.experiment=x", "tracking.mlflow_uri=http://mlflow:5000", "registry.model_name=other",
    "registry.min_margin=0.5", "registry.gate_direction=lower", "model.fallback=builtin:world-base",
]  # fmt: skip
#: Changes that must: training fields (one per section) and the base model.
TRAINING = [
    "train.lr=0.002", "train.seed=1", "train.beta=100", "train.n_rounds=2", "data.resolution=16", "data.max_rows=32",
    "data.caption_dropout=0.0", "sampling.num_inference_steps=3", "sampling.guidance_scale=1.0", "bank.reference=latest",
    "bank.reference_resample=step", "model.pretrained=builtin:tiny-random:vae",
]  # fmt: skip


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every config field by dotted path, sections (and the resolved section) expanded."""
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        section = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        if name == "resolved":
            section = ResolvedInputs
        paths |= _leaf_paths(section, f"{prefix}{name}.") if section else {f"{prefix}{name}"}
    return paths


def _tiny(tmp: Path, *overrides: str) -> SeppoConfig:
    return load_config("tiny", [f"bank.cache_dir={tmp / 'cache'}", *overrides])


def test_every_config_field_is_in_or_out_of_the_identity() -> None:
    """A new config field fails here until it is classified in identity.INCLUDED or identity.EXCLUDED."""
    fields = _leaf_paths(SeppoConfig)
    included, excluded = set(identity.INCLUDED), set(identity.EXCLUDED)
    assert not included & excluded
    assert fields - included - excluded == set(), "classify these in seppo_lib/identity.py"
    assert (included | excluded) - fields == set(), "no such config fields"


def test_evaluation_locations_and_registry_do_not_change_the_run_id(tmp_path: Path) -> None:
    base = _tiny(tmp_path).run_id
    assert base.startswith("tiny-") and len(base) == len("tiny-") + 10
    for change in NEUTRAL:
        assert load_config("tiny", [f"bank.cache_dir={tmp_path / 'cache'}", change]).run_id == base, change


def test_training_fields_and_the_base_model_change_the_run_id(tmp_path: Path) -> None:
    ids = {change: _tiny(tmp_path, change).run_id for change in TRAINING}
    assert len(set(ids.values()) | {_tiny(tmp_path).run_id}) == len(TRAINING) + 1, ids


def test_name_is_the_prefix_and_an_explicit_bank_run_id_wins(tmp_path: Path) -> None:
    """Migration of banks made before this identity: bank.run_id=<old id> keeps resuming them."""
    assert _tiny(tmp_path, "name=other").run_id.split("-", 1)[1] == _tiny(tmp_path).run_id.split("-", 1)[1]
    assert _tiny(tmp_path, "bank.run_id=tiny-0123456789", "train.lr=0.5").run_id == "tiny-0123456789"


def test_a_local_folder_is_versioned_by_content_not_location(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", n=4)
    copy = shutil.copytree(data, tmp_path / "copy")
    first = identity.resolve(_tiny(tmp_path, f"data.source={data}"))
    assert first.resolved is not None and first.resolved.data_version == f"md5:{first.resolved.data_md5}"
    assert _tiny(tmp_path, f"data.source={copy}").run_id == first.run_id
    (copy / "0000.png").write_bytes((copy / "0001.png").read_bytes())
    assert _tiny(tmp_path, f"data.source={copy}").run_id != first.run_id
    with pytest.raises(DataError, match="does not exist"):
        identity.resolve(_tiny(tmp_path, f"data.source={tmp_path / 'missing'}"))


def test_builtin_world_version_is_the_generator_and_its_parameters(tmp_path: Path) -> None:
    version = identity.resolve(_tiny(tmp_path)).resolved.data_version  # type: ignore[union-attr]
    assert version.startswith("builtin:world@") and "n=64" in version and "paired=False" in version
    assert identity.resolve(_tiny(tmp_path, "train.method=dpo")).resolved.data_version != version  # type: ignore[union-attr]


def test_content_digest_reads_an_unchanged_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_image_folder(tmp_path / "model", n=3)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "junk").write_text("skipped")
    reads: list[str] = []
    real = identity._file_md5
    monkeypatch.setattr(identity, "_file_md5", lambda path: reads.append(path.name) or real(path))
    first = identity.content_digest(folder, tmp_path / "cache")
    assert sorted(reads) == ["0000.png", "0001.png", "0002.png", "metadata.jsonl"]
    reads.clear()
    assert identity.content_digest(folder, tmp_path / "cache") == first and reads == []
    (folder / "0001.png").write_bytes(b"changed")
    assert identity.content_digest(folder, tmp_path / "cache") != first and reads == ["0001.png"]
    assert identity.content_digest(folder, tmp_path / "other-cache") != first  # no cache: computed from the bytes


def test_resolve_pins_once_and_travels_in_the_config_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _tiny(tmp_path)
    calls: list[str] = []
    real = identity.data_version
    monkeypatch.setattr(identity, "data_version", lambda c: calls.append(c.name) or real(c))
    run_id = cfg.run_id
    assert cfg.run_id == run_id and identity.resolve(cfg).run_id == run_id and calls == ["tiny"]  # memoized
    resolved = identity.resolve(cfg)
    again = SeppoConfig.from_json(resolved.to_json())
    assert again.resolved == resolved.resolved and again.run_id == run_id and calls == ["tiny"]  # never resolved again
    assert resolved.config_hash() == cfg.config_hash()  # the config's hash ignores the resolved section
    with pytest.raises(ConfigError, match="already resolved"):
        identity.resolve(resolved, base_model="builtin:world-base")
    with pytest.raises(ConfigError, match=r"data_rev='main' needs a DVC data source: set data.dvc_repo"):
        identity.resolve(cfg, data_rev="main")
    assert identity.resolve(cfg, base_model="builtin:tiny-random:vae").run_id == _tiny(tmp_path, "model.pretrained=builtin:tiny-random:vae").run_id


def test_lineage_tags_name_every_part(tmp_path: Path) -> None:
    cfg = identity.resolve(_tiny(tmp_path))
    tags = identity.lineage_tags(cfg)
    assert tags["seppo.run_id"] == cfg.run_id and tags["seppo.identity_hash"].startswith(cfg.run_id.split("-")[1])
    assert tags["seppo.data_version"] == cfg.resolved.data_version  # type: ignore[union-attr]
    assert tags["seppo.base_model"].startswith("builder:tiny-random:pixel@") and tags["seppo.base_model_uri"] == "builtin:tiny-random"
    assert tags["seppo.base_model_fallback"] == "false" and all(isinstance(v, str) and v for v in tags.values())
    line = identity.already_trained_line(cfg)
    assert line.startswith(f"already trained: {cfg.run_id} (data builtin:world@") and "base builtin:tiny-random (" in line


def test_bind_reads_the_resolved_config_of_an_artifact(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path)
    artifact = tmp_path / "dataset"
    identity.write_resolved(cfg, artifact)
    bound = identity.bind(cfg, artifact)
    assert bound.resolved is not None and bound.run_id == cfg.run_id
    assert identity.bind(bound, artifact) == bound  # a resolved config_json binds too
    doc: dict[str, Any] = json.loads((artifact / identity.RESOLVED_CONFIG).read_text())
    doc["model"]["pretrained"] = "models:/seppo-tiny/4"  # pinned fields may differ from the request
    (artifact / identity.RESOLVED_CONFIG).write_text(json.dumps(doc))
    assert identity.bind(cfg, artifact).model.pretrained == "models:/seppo-tiny/4"
    with pytest.raises(ConfigError, match=r"resolved from another config \(differs in train.lr\)"):
        identity.bind(_tiny(tmp_path, "train.lr=0.5"), artifact)
    with pytest.raises(ConfigError, match="resolved_config.json is missing"):
        identity.bind(cfg, tmp_path / "empty")


def test_config_show_prints_the_run_id_eval_and_workdir_leave_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seppo_lib.cli import main

    def shown(*overrides: str) -> str:
        """The run id part of `seppo config show`'s last line."""
        assert main(["config", "show", "--config", "tiny", f"bank.cache_dir={tmp_path / 'cache'}", *overrides]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith("# config hash ")
        return line.split("  ", 1)[1]

    base = shown()
    assert base.startswith("run id tiny-") and shown("eval.max_prompts=3", f"workdir={tmp_path / 'elsewhere'}") == base
    assert shown("train.lr=0.002") != base
    assert shown(f"data.source={tmp_path / 'missing'}").startswith("run id unknown here: its inputs do not resolve (data source")
