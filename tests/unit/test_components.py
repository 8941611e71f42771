"""Each KFP component's Python function on the tiny preset, with artifacts under tmp_path.

The components are called through `.python_func` (what the KFP executor calls in the pod),
chained like the pipeline: validate -> prepare -> sample -> train -> evaluate -> register.
Also the validate_config step's one-line errors.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl

import components
from components._common import package_version
from seppo_lib import __version__
from seppo_lib.config import ConfigError, SeppoConfig
from seppo_lib.identity import resolve, write_resolved
from seppo_lib.steps import validate_config as validate_step
from tests.helpers import make_image_folder, tiny_config

FAST = ["train.n_rounds=1", "train.updates_per_round=2", "sampling.num_inference_steps=2", "eval.max_prompts=2",
        "eval.bootstrap=100"]  # fmt: skip


def _artifact(kind: type[dsl.Artifact], root: Path, name: str) -> Any:
    return kind(name=name, uri=str(root / name), metadata={})


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run prepare -> sample (2 shards) -> train -> evaluate once for the module's tests."""
    tmp = tmp_path_factory.mktemp("components")
    mlflow = f"tracking.mlflow_uri=sqlite:///{tmp / 'mlflow.db'}"
    cfg = tiny_config(tmp, make_image_folder(tmp / "data", n=12), *FAST, "tracking.enabled=true", mlflow)
    out = tmp / "artifacts"
    cfg_json = cfg.to_json()
    dataset = _artifact(dsl.Dataset, out, "dataset")
    components.prepare_data.python_func(config_json=cfg_json, kfp_run_id="run-1", dataset=dataset)
    refs = [_artifact(dsl.Dataset, out, f"references-{i}") for i in range(2)]
    for shard, ref in enumerate(refs):
        components.sample_reference.python_func(config_json=cfg_json, dataset=dataset, round_idx=1, shard=shard,
                                                n_shards=2, references=ref)  # fmt: skip
    model = _artifact(dsl.Model, out, "model")
    components.train_round.python_func(config_json=cfg_json, dataset=dataset, round_idx=1, kfp_run_id="run-1",
                                       model=model, references=refs)  # fmt: skip
    metrics, report = _artifact(dsl.Metrics, out, "metrics"), _artifact(dsl.Artifact, out, "report")
    rendered = {"report_md": _artifact(dsl.Markdown, out, "report_md"), "report_html": _artifact(dsl.HTML, out, "report_html")}
    passes = components.evaluate.python_func(config_json=cfg_json, model=model, kfp_run_id="run-1", metrics=metrics,
                                             report=report, **rendered)  # fmt: skip
    return {"cfg": cfg, "dataset": dataset, "refs": refs, "model": model, "metrics": metrics, "report": report,
            "passes": passes, "tmp": tmp, **rendered}  # fmt: skip


def test_image_tag_is_the_package_version() -> None:
    assert package_version() == __version__
    assert components.IMAGE == f"ghcr.io/seppo-ml/seppo:{__version__}"
    for comp in (components.validate_config, components.prepare_data, components.sample_reference,
                 components.train_round, components.evaluate, components.register):  # fmt: skip
        container = comp.component_spec.implementation.container
        assert container.image == components.IMAGE
        assert "pip install" not in " ".join(container.command), "nothing is installed at run time"


def test_validate_config_component(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, make_image_folder(tmp_path / "data", n=4))
    shape = validate_step.pipeline_shape(cfg)
    resolved = _artifact(dsl.Artifact, tmp_path, "resolved_config")
    out = components.validate_config.python_func(
        config_json=cfg.to_json(), expected_shape=json.dumps(shape), shared_storage=False, resolved_config=resolved
    )
    assert out.config_hash == cfg.config_hash() and not hasattr(out, "run_id")  # resolve_inputs names the run
    assert SeppoConfig.from_json(Path(resolved.path).read_text()) == cfg
    assert resolved.metadata["config_hash"] == cfg.config_hash()
    assert {"method", "bank_uri", "n_rounds", "n_shards", "num_processes"} <= set(resolved.metadata)


def test_prepare_data_metadata(chain: dict[str, Any]) -> None:
    cfg, meta = chain["cfg"], chain["dataset"].metadata
    assert meta["rows"] == 12 and meta["rows_total"] == 12 and meta["dropped"] == 0
    assert re.fullmatch(r"[0-9a-f]{32}", meta["source_md5"]) and re.fullmatch(r"[0-9a-f]{32}", meta["output_md5"])
    assert meta["config_hash"] == cfg.config_hash() and meta["run_id"] == cfg.run_id
    assert meta["bank_uri"].endswith(cfg.run_id) and meta["dvc_rev"] == ""
    assert (Path(chain["dataset"].path) / "dataset.json").is_file()


def test_sample_reference_metadata(chain: dict[str, Any]) -> None:
    metas = [r.metadata for r in chain["refs"]]
    assert [m["shard"] for m in metas] == [0, 1] and all(m["n_shards"] == 2 and m["round"] == 1 for m in metas)
    assert sum(m["samples"] for m in metas) == chain["cfg"].samples_per_round
    assert all(m["ckpt_ids"] == ["initial"] for m in metas)  # round 1 can only draw θ_0
    assert metas[0]["md5"] != metas[1]["md5"]
    assert all(m["config_hash"] == chain["cfg"].config_hash() for m in metas)


def test_train_round_writes_a_checkpoint_pointer(chain: dict[str, Any]) -> None:
    cfg, model = chain["cfg"], chain["model"]
    pointer = json.loads((Path(model.path) / "checkpoint.json").read_text())
    assert pointer == {"bank_uri": model.metadata["bank_uri"], "run_id": cfg.run_id,
                       "checkpoint": model.metadata["checkpoint"], "round": 1}  # fmt: skip
    assert pointer["checkpoint"].startswith("ckpt-") and model.metadata["step"] == 2
    assert model.metadata["skipped"] is False and model.metadata["config_hash"] == cfg.config_hash()
    assert "train_loss" in model.metadata
    assert not any(Path(model.path).glob("**/*.safetensors")), "weights stay in the bank"


def test_train_round_launches_accelerate_for_several_gpus(chain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Launched(Exception):
        pass

    def fake_run(cmd: list[str], **_: Any) -> None:
        calls.append(cmd)
        raise Launched

    monkeypatch.setattr(subprocess, "run", fake_run)
    cfg = SeppoConfig.model_validate({**chain["cfg"].model_dump(), "train": {**chain["cfg"].train.model_dump(), "num_processes": 4}})
    dataset = _artifact(dsl.Dataset, chain["tmp"], "dataset-4")  # num_processes is part of the run identity
    write_resolved(cfg, shutil.copytree(chain["dataset"].path, dataset.path))
    with pytest.raises(Launched):
        components.train_round.python_func(config_json=cfg.to_json(), dataset=dataset, round_idx=1, kfp_run_id="r",
                                           model=_artifact(dsl.Model, chain["tmp"], "m4"), references=chain["refs"])  # fmt: skip
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"] and "--num_processes=4" in cmd
    assert cmd[cmd.index("--config-json") + 1] == resolve(cfg).to_json() and cmd[cmd.index("--round") + 1] == "1"
    assert cmd[cmd.index("--refs") + 1 :] == [r.path for r in chain["refs"]]


def test_evaluate_logs_metrics_and_returns_the_gate(chain: dict[str, Any]) -> None:
    report_dir = Path(chain["report"].path)
    metrics_json = json.loads((report_dir / "metrics.json").read_text())
    assert chain["passes"] is metrics_json["gate"]["passes"]
    assert {"world_candidate_mean", "world_champion_ci_lo", "world_champion_ci_hi", "world_win_rate", "world_win_rate_lo",
            "gate_candidate", "gate_champion"} <= set(chain["metrics"].metadata)  # fmt: skip
    meta = chain["report"].metadata
    assert meta["candidate"] == f"bank:{chain['model'].metadata['checkpoint']}"
    assert meta["champion"] == chain["cfg"].model.pretrained  # no registered champion yet: the base model
    assert meta["gate_passes"] is chain["passes"] and re.fullmatch(r"[0-9a-f]{32}", meta["metrics_md5"])
    assert {"per_prompt.csv", "grid.png", "accuracy_world.png"} <= {p.name for p in report_dir.iterdir()}
    # the run report, as the KFP UI's Markdown and HTML outputs and in <workdir>/<run id>/
    run_folder = Path(chain["cfg"].workdir) / chain["cfg"].run_id
    assert Path(chain["report_md"].path).read_text() == (run_folder / "report.md").read_text() == (report_dir / "report.md").read_text()
    assert "data:image/png;base64," in Path(chain["report_html"].path).read_text()


def test_register_component_then_evaluate_against_the_champion(chain: dict[str, Any]) -> None:
    cfg, tmp = chain["cfg"], chain["tmp"]
    registration = _artifact(dsl.Artifact, tmp, "registration")
    components.register.python_func(config_json=cfg.to_json(), model=chain["model"], report=chain["report"], kfp_run_id="r",
                                    registration=registration)  # fmt: skip
    result = json.loads(Path(registration.path).read_text())
    meta = registration.metadata
    assert result["model_name"] == meta["model_name"] == "seppo-tiny" and meta["version"] == "1"
    # no champion yet: registered either way, champion only if it beat the base model (the evaluation's gate)
    assert meta["decision"] == ("promoted" if chain["passes"] else "rejected")
    assert meta["checkpoint"] == chain["model"].metadata["checkpoint"] and meta["config_hash"] == cfg.config_hash()
    if not chain["passes"]:
        from seppo_lib.registry import promote
        from seppo_lib.tracking.mlflow_logger import resolve_tracking_uri

        promote("seppo-tiny", "1", tracking_uri=resolve_tracking_uri(cfg))  # a champion for the next evaluation
    # the next evaluation compares against the registry's champion, not the base model
    report = _artifact(dsl.Artifact, tmp, "report-2")
    components.evaluate.python_func(config_json=cfg.to_json(), model=chain["model"], kfp_run_id="r",
                                    metrics=_artifact(dsl.Metrics, tmp, "metrics-2"), report=report,
                                    report_md=_artifact(dsl.Markdown, tmp, "md-2"), report_html=_artifact(dsl.HTML, tmp, "html-2"))  # fmt: skip
    assert report.metadata["champion"] == "models:/seppo-tiny@champion"
    assert json.loads((Path(report.path) / "metrics.json").read_text())["champion"] != cfg.model.pretrained


# ---- validate_config: one-line errors ------------------------------------------------------


@pytest.fixture()
def base(tmp_path: Path) -> SeppoConfig:
    return tiny_config(tmp_path, make_image_folder(tmp_path / "data", n=2))


def _with(cfg: SeppoConfig, **sections: dict[str, Any]) -> str:
    data = cfg.model_dump(mode="json")
    for name, values in sections.items():
        data[name] = {**data[name], **values} if isinstance(data[name], dict) else values
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"source": "/no/such/folder"}}, r"data.source='/no/such/folder' does not exist"),
        ({"data": {"source": "s3://Bad_Bucket/x"}}, r"data.source='s3://Bad_Bucket/x' is not a valid S3 URI"),
        ({"data": {"dvc_rev": "v1"}}, r"data.dvc_rev is set but data.dvc_repo is not"),
        ({"model": {"pretrained": "/no/model"}}, r"model.pretrained='/no/model' is not a diffusers model folder"),
        ({"bank": {"uri": "s3://x/bank"}}, r"bank.uri='s3://x/bank' is not a valid S3 URI"),
        ({"eval": {"prompts": "/no/prompts.txt"}}, r"eval.prompts='/no/prompts.txt' does not exist"),
        ({"eval": {"gate_metric": "pickscore"}}, r"eval.gate_metric='pickscore' is not one of eval.scorers"),
        ({"tracking": {"mlflow_uri": "ftp://host/x"}}, r"unsupported scheme 'ftp'"),
        ({"train": {"lr": 5.0}}, r"train.lr"),
    ],
)
def test_validate_config_errors(base: SeppoConfig, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        validate_step.run(_with(base, **change))
    assert "\n" not in str(err.value)


def test_validate_config_on_a_cluster_needs_shared_storage(base: SeppoConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=r"bank.uri=.* is local, but on a cluster"):
        validate_step.run(base.to_json(), shared_storage=True)
    remote_bank = _with(base, bank={"uri": "s3://seppo/bank"}, tracking={"enabled": True})
    with pytest.raises(ConfigError, match=r"MLflow at the default local sqlite db would be private to each pod"):
        validate_step.run(remote_bank, shared_storage=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.seppo.svc:5000")
    assert validate_step.run(remote_bank, shared_storage=True)["bank_uri"] == "s3://seppo/bank"


def test_validate_config_checks_the_compiled_shape(base: SeppoConfig) -> None:
    shape = validate_step.pipeline_shape(base)
    info = validate_step.run(base.to_json(), expect=shape)
    assert info["config_hash"] == base.config_hash() and "run_id" not in info
    assert SeppoConfig.from_json(info["config_json"]) == base
    with pytest.raises(ConfigError, match=r"n_rounds: compiled 3, got 5.*recompile with `seppo pipeline compile`"):
        validate_step.run(_with(base, train={"n_rounds": 5}), expect=shape)
    with pytest.raises(ConfigError, match=r"needs_sampling: compiled True, got False"):
        validate_step.run(_with(base, train={"method": "sft"}), expect=shape)
    with pytest.raises(ConfigError, match=r"registers: compiled False, got True"):
        validate_step.run(_with(base, tracking={"enabled": True}), expect=shape)
