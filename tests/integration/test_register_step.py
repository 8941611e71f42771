"""Step register: two tiny runs, synthetic evaluations, champion / challenger, margin, errors."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from seppo_lib import identity
from seppo_lib.config import SeppoConfig
from seppo_lib.evaluation.report import build_metrics
from seppo_lib.orchestrate import run_rounds
from seppo_lib.pyfunc_model import pipeline_dir
from seppo_lib.registry import RegistryError, download, list_versions
from seppo_lib.steps import register
from seppo_lib.steps.common import open_bank
from seppo_lib.tracking.mlflow_logger import MlflowLogger
from seppo_lib.tracking.steps import step_tracking
from tests.helpers import make_image_folder, tiny_config
from tests.mlflow_server import MlflowServer, mlflow_server  # noqa: F401 - fixture

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
TINY = ("train.method=sft", "train.n_rounds=1", "train.updates_per_round=1", "train.warmup_steps=0")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on 2 shared cores: one intra-op thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two one-round training runs ('a' and 'b') sharing a workdir; tracking off while training."""
    root = tmp_path_factory.mktemp("register")
    data = make_image_folder(root / "data", n=8)
    out: dict[str, Any] = {"root": root, "data": data, "db": f"sqlite:///{root / 'mlflow.db'}"}
    for name, seed in (("a", 0), ("b", 1)):
        cfg = tiny_config(root, data, *TINY, f"train.seed={seed}", f"bank.run_id=run-{name}")
        out[name] = run_rounds(cfg).final_checkpoint
    return out


def _cfg(runs: dict[str, Any], name: str, model: str, *extra: str, uri: str | None = None) -> SeppoConfig:
    """The training config of run `name` with tracking on (same bank run: bank.run_id is explicit)."""
    return tiny_config(
        runs["root"], runs["data"], *TINY, f"bank.run_id=run-{name}", "tracking.enabled=true",
        f"tracking.mlflow_uri={uri or runs['db']}", f"registry.model_name={model}", *extra,
    )  # fmt: skip


def _evaluation(folder: Path, candidate: float, champion: float, champion_uri: str) -> Path:
    """A metrics.json in the evaluate step's schema (built by its own code) plus a grid PNG."""
    folder.mkdir(parents=True)
    doc = build_metrics(
        candidate_uri="bank:x", champion_uri=champion_uri,
        candidate={"world": [candidate - 0.1, candidate + 0.1, candidate]},
        champion={"world": [champion - 0.1, champion + 0.1, champion]},
        n_prompts=3, images_per_prompt=1, gate=("world", "higher", 0.0), n_boot=100, seed=0, config_hash="h",
    )  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(doc))
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "grid.png")
    return folder


def _aliases(client: MlflowClient, model: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(model).aliases.items()}


def _bank_weights(cfg: SeppoConfig, ckpt: str) -> bytes:
    return (open_bank(cfg).fetch(ckpt) / WEIGHTS).read_bytes()


def test_better_run_is_champion_worse_stays_challenger(runs: dict[str, Any], tmp_path: Path) -> None:
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    cfg_a, cfg_b = _cfg(runs, "a", model), _cfg(runs, "b", model)
    # run a against the base model (no champion yet) -> champion
    a = register.run(cfg_a, f"bank:{runs['a']}", _evaluation(tmp_path / "eval-a", 0.6, 0.3, cfg_a.model.pretrained))
    # run b against the re-scored champion (run a's folder) -> worse -> challenger only
    b = register.run(cfg_b, f"bank:{runs['b']}", _evaluation(tmp_path / "eval-b", 0.4, 0.6, str(tmp_path / "champion")))
    print(f"a: {a['decision']} v{a['version']}; b: {b['decision']} v{b['version']} ({b['reason']})")
    assert (a["decision"], b["decision"]) == ("promoted", "rejected")
    assert b["champion"] == a["version"] and b["challenger"] == b["version"]
    assert b["champion_score"] == pytest.approx(0.6) and b["candidate_score"] == pytest.approx(0.4)
    assert set(a) >= {"model_name", "version", "decision", "champion", "challenger", "model_uri"}

    client = MlflowClient(runs["db"])
    assert _aliases(client, model) == {"champion": a["version"], "challenger": b["version"]}
    tags = client.get_model_version(model, a["version"]).tags
    assert tags["seppo.checkpoint"] == runs["a"] and tags["seppo.bank_run_id"] == "run-a"
    assert tags["seppo.config_hash"] == cfg_a.config_hash() and tags["seppo.bank_uri"] == cfg_a.bank.uri
    assert float(tags["seppo.metric.world"]) == pytest.approx(0.6)
    # the step's run holds the evaluation; the pipeline's parent run is ended
    step_run = client.get_run(a["mlflow_run_id"])
    assert {f.path for f in client.list_artifacts(step_run.info.run_id, "eval")} == {"eval/grid.png", "eval/metrics.json"}
    assert step_run.data.metrics["world"] == pytest.approx(0.6) and step_run.info.status == "FINISHED"
    assert client.get_run(step_run.data.tags["mlflow.parentRunId"]).info.status == "FINISHED"

    dest = download(f"models:/{model}@champion", tmp_path / "champion-dl", tracking_uri=runs["db"])
    pipe = pipeline_dir(dest)  # an MLflow model around the diffusers folder
    assert (pipe / WEIGHTS).read_bytes() == _bank_weights(cfg_a, runs["a"])
    assert (pipe / WEIGHTS).read_bytes() != _bank_weights(cfg_b, runs["b"])
    assert (dest / "MLmodel").is_file() and (pipe / "model_index.json").is_file() and (pipe / "lineage.json").is_file()
    assert not any(p.is_symlink() for p in dest.rglob("*"))  # the linked local export was copied, not linked


def test_min_margin_blocks_a_small_gain(runs: dict[str, Any], tmp_path: Path) -> None:
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    cfg_a = _cfg(runs, "a", model, "registry.min_margin=0.05")
    cfg_b = _cfg(runs, "b", model, "registry.min_margin=0.05")
    register.run(cfg_a, f"bank:{runs['a']}", _evaluation(tmp_path / "eval-a", 0.60, 0.3, cfg_a.model.pretrained))
    # b beats the re-scored champion by 0.02 < 0.05: blocked
    b = register.run(cfg_b, f"bank:{runs['b']}", _evaluation(tmp_path / "eval-b", 0.62, 0.60, str(tmp_path / "champion")))
    print(f"margin 0.05, gain 0.02: {b['decision']} ({b['reason']})")
    assert b["decision"] == "rejected" and "margin 0.05" in b["reason"]
    assert b["champion"] == "1" and b["challenger"] == "2"


def test_recorded_champion_score_decides_when_only_the_base_model_was_scored(runs: dict[str, Any], tmp_path: Path) -> None:
    """metrics.json compared b with the base model (0.5 vs 0.2): the champion's recorded 0.6 decides."""
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    cfg_a, cfg_b = _cfg(runs, "a", model), _cfg(runs, "b", model)
    register.run(cfg_a, f"bank:{runs['a']}", _evaluation(tmp_path / "eval-a", 0.6, 0.3, cfg_a.model.pretrained))
    b = register.run(cfg_b, f"bank:{runs['b']}", _evaluation(tmp_path / "eval-b", 0.5, 0.2, cfg_b.model.pretrained))
    assert b["decision"] == "rejected" and b["champion_score"] == pytest.approx(0.6)
    assert [v["aliases"] for v in list_versions(model, tracking_uri=runs["db"])] == [["champion"], ["challenger"]]


def test_bad_input_gives_one_line_errors(runs: dict[str, Any], tmp_path: Path) -> None:
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    evaluation = _evaluation(tmp_path / "eval", 0.6, 0.3, "builtin:tiny-random")
    off = tiny_config(runs["root"], runs["data"], *TINY, "bank.run_id=run-a")
    cases = [
        (off, f"bank:{runs['a']}", evaluation, "registration needs tracking.enabled=true"),
        (_cfg(runs, "a", model), "builtin:tiny-random", evaluation, "pass bank:<checkpoint id>"),
        (_cfg(runs, "a", model), f"bank:{runs['a']}", tmp_path / "nowhere", "metrics.json does not exist"),
        (_cfg(runs, "a", model, "eval.scorers=[world,clip]", "eval.gate_metric=clip"), f"bank:{runs['a']}", evaluation,
         "has no scorer 'clip'"),
    ]  # fmt: skip
    for cfg, candidate, folder, message in cases:
        with pytest.raises(RegistryError, match=message) as err:
            register.run(cfg, candidate, folder)
        assert "\n" not in str(err.value)
    with pytest.raises(RegistryError, match="no registered model"):  # nothing was registered by the failures
        list_versions(model, tracking_uri=runs["db"])


@pytest.mark.servers
def test_register_against_a_tracking_server(
    runs: dict[str, Any], mlflow_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    cfg = _cfg(runs, "a", model, f"tracking.experiment=register-{model}", uri=mlflow_server.url)
    result = register.run(cfg, f"bank:{runs['a']}", _evaluation(tmp_path / "eval", 0.6, 0.3, cfg.model.pretrained))
    assert result["decision"] == "promoted" and result["model_uri"] == f"models:/{model}/1"
    client = MlflowClient(mlflow_server.url)
    version = client.get_model_version(model, "1")
    assert version.tags["seppo.checkpoint"] == runs["a"] and version.run_id == result["mlflow_run_id"]
    assert _aliases(client, model) == {"champion": "1", "challenger": "1"}
    dest = download(f"models:/{model}@champion", tmp_path / "dl", tracking_uri=mlflow_server.url)
    assert (pipeline_dir(dest) / WEIGHTS).read_bytes() == _bank_weights(cfg, runs["a"])
    # as a user would: the environment names the server (mlflow.set_*_uri would leak into later tests)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_server.url)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model}@champion")
    out = pyfunc.predict(pd.DataFrame({"prompt": ["a red circle", "a blue square"], "seed": [0, 1]}), params={"num_inference_steps": 2})
    images = [Image.open(io.BytesIO(base64.b64decode(b64))) for b64 in out["image"]]
    assert [(i.format, i.size) for i in images] == [("PNG", (8, 8))] * 2  # the tiny model's sample size
    assert list(out["seed"]) == [0, 1] and images[0].tobytes() != images[1].tobytes()


def _parent_status(client: MlflowClient, step_run_id: str) -> str:
    return str(client.get_run(client.get_run(step_run_id).data.tags["mlflow.parentRunId"]).info.status)


def test_every_candidate_is_registered_and_ends_the_pipeline_run(runs: dict[str, Any], tmp_path: Path) -> None:
    """No champion yet: a candidate worse than the base model is v1, challenger only; one that beats the base
    model is v2 and champion. Both registrations end the pipeline's parent run FINISHED (failed and passed gate)."""
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(runs["db"])
    results = []
    for name, (candidate, base) in (("a", (0.3, 0.5)), ("b", (0.6, 0.5))):
        cfg = _cfg(runs, name, model, f"tracking.experiment=tree-{model}")
        with step_tracking(cfg, "train_round-1") as earlier:  # an earlier step opened the parent run
            assert isinstance(earlier, MlflowLogger) and client.get_run(str(earlier.parent_run_id)).info.status == "RUNNING"
        evaluation = _evaluation(tmp_path / f"eval-{name}", candidate, base, cfg.model.pretrained)
        results.append(register.run(cfg, f"bank:{runs[name]}", evaluation))
        assert _parent_status(client, results[-1]["mlflow_run_id"]) == "FINISHED"
    a, b = results
    print(f"a: {a['decision']} ({a['reason']}); b: {b['decision']} ({b['reason']})")
    assert (a["decision"], a["version"], a["champion"], a["compared_with"]) == ("rejected", "1", None, "base model")
    assert (b["decision"], b["version"], b["champion"], b["previous_champion"]) == ("promoted", "2", "2", None)
    assert _aliases(client, model) == {"champion": "2", "challenger": "2"}
    tags = client.get_model_version(model, "1").tags
    assert tags["seppo.gate.base_score"] == "0.5"
    lineage = identity.lineage_tags(_cfg(runs, "a", model))  # the resolved data version and base model
    assert {"seppo.data_version", "seppo.base_model"} <= set(lineage) and lineage.items() <= tags.items()


def test_a_failing_registration_fails_the_pipeline_run(runs: dict[str, Any], tmp_path: Path) -> None:
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    cfg = _cfg(runs, "a", model, f"tracking.experiment=fail-{model}")
    with step_tracking(cfg, "train_round-1") as earlier:
        assert isinstance(earlier, MlflowLogger)
    with pytest.raises(RegistryError, match="metrics.json does not exist"):
        register.run(cfg, f"bank:{runs['a']}", tmp_path / "no-evaluation")
    client = MlflowClient(runs["db"])
    parent = client.get_run(str(earlier.parent_run_id))
    (step,) = client.search_runs([parent.info.experiment_id], "tags.`seppo.step` = 'register'")
    assert (parent.info.status, step.info.status) == ("FAILED", "FAILED")


def test_a_checkpoint_is_registered_once(runs: dict[str, Any], tmp_path: Path) -> None:
    """A rerun of a run that trained nothing new evaluates the same checkpoint again: its version is returned,
    no second version is made, and the pipeline's parent run still ends FINISHED."""
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    cfg = _cfg(runs, "a", model, f"tracking.experiment=once-{model}")
    first = register.run(cfg, f"bank:{runs['a']}", _evaluation(tmp_path / "eval-1", 0.6, 0.3, cfg.model.pretrained))
    client = MlflowClient(runs["db"])
    parent = client.get_run(first["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    client.update_run(parent, status="RUNNING")  # as if the rerun were still going
    again = register.run(cfg, f"bank:{runs['a']}", _evaluation(tmp_path / "eval-2", 0.2, 0.3, cfg.model.pretrained))
    assert (first["already_registered"], again["already_registered"]) == (False, True)
    assert (again["version"], again["decision"], again["champion"]) == ("1", "promoted", "1")
    assert again["aliases"] == ["challenger", "champion"]
    assert [v["version"] for v in list_versions(model, tracking_uri=runs["db"])] == ["1"]
    assert _parent_status(client, again["mlflow_run_id"]) == "FINISHED"
