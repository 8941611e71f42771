"""The compiled pipeline (IR YAML + Kubernetes platform spec) and `seppo pipeline compile|submit|schedule`."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import re
import shlex
import socket
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from seppo_lib import __version__, pipeline_runner
from seppo_lib.cli import main
from seppo_lib.config import SeppoConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
GPU_TASKS = ("sample-reference", "train-round")
#: What the cluster's rules (validate_config with shared_storage) need on top of the tiny preset.
CLUSTER = ["bank.uri=s3://seppo-test/bank", "tracking.mlflow_uri=http://mlflow.seppo.svc:5000"]


def _compile(tmp_path: Path, *overrides: str, image: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = load_config("tiny", list(overrides))
    path = pipeline_runner.compile_package(cfg, tmp_path / "p.yaml", image)
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the pipeline (root and nested DAGs) by name, with its executor label."""
    found: dict[str, dict[str, Any]] = {}

    def walk(dag: dict[str, Any]) -> None:
        for name, task in dag["tasks"].items():
            comp = spec["components"][task["componentRef"]["name"]]
            if "dag" in comp:
                walk(comp["dag"])
            found[name] = {**task, "executor": comp.get("executorLabel")}

    walk(spec["root"]["dag"])
    return found


def _resources(spec: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    return spec["deploymentSpec"]["executors"][task["executor"]]["container"].get("resources", {})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    return _compile(tmp_path_factory.mktemp("compiled"), "train.n_rounds=2", "sampling.n_shards=3")


def test_rounds_are_unrolled_with_a_parallel_for_per_round(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    tasks = _tasks(spec)
    samples = sorted(n for n in tasks if n.startswith("sample-reference"))
    trains = sorted(n for n in tasks if n.startswith("train-round"))
    assert samples == ["sample-reference", "sample-reference-2"] and trains == ["train-round", "train-round-2"]
    loops = {n: t for n, t in spec["root"]["dag"]["tasks"].items() if "parameterIterator" in t}
    assert sorted(t["taskInfo"]["name"] for t in loops.values()) == ["round-1-shards", "round-2-shards"]
    assert all(json.loads(t["parameterIterator"]["items"]["raw"]) == [0, 1, 2] for t in loops.values())
    # train k gathers its round's shards (dsl.Collected) and waits for train k-1
    train2 = spec["root"]["dag"]["tasks"]["train-round-2"]
    assert set(train2["dependentTasks"]) >= {"train-round", next(n for n, t in loops.items() if t["taskInfo"]["name"] == "round-2-shards")}
    refs = train2["inputs"]["artifacts"]["references"]["taskOutputArtifact"]
    assert refs["outputArtifactKey"].startswith("pipelinechannel--sample-reference-2-references")
    assert tasks["sample-reference-2"]["taskInfo"]["name"] == "round 2: sample reference"
    assert tasks["train-round-2"]["taskInfo"]["name"] == "round 2: train"
    assert spec["root"]["dag"]["tasks"]["resolve-inputs"]["dependentTasks"] == ["validate-config"]
    assert spec["root"]["dag"]["tasks"]["prepare-data"]["dependentTasks"] == ["resolve-inputs"]


def test_register_always_follows_evaluate(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Every evaluated candidate is registered (challenger or champion): no condition around register."""
    spec, _ = compiled
    tasks = _tasks(spec)
    assert not any("triggerPolicy" in t for t in tasks.values())
    register = spec["root"]["dag"]["tasks"]["register"]
    assert "evaluate" in register["dependentTasks"]
    assert register["inputs"]["artifacts"]["report"]["taskOutputArtifact"] == {"outputArtifactKey": "report", "producerTask": "evaluate"}


def test_gpu_requests_placement_and_shared_memory(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, platform = compiled
    for name, task in _tasks(spec).items():
        if not task["executor"]:
            continue
        res, k8s = _resources(spec, task), platform[task["executor"]]
        if name.startswith(GPU_TASKS):
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "1"
            assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
            assert {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "16Gi"} in k8s["emptyDirMounts"]
        if name in ("validate-config", "register"):
            assert "accelerator" not in res and "nodeSelector" not in k8s
        assert res["resourceCpuRequest"] and res["resourceMemoryRequest"] == res["resourceMemoryLimit"]


def test_training_requests_one_gpu_per_process(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, "train.num_processes=4", "train.n_rounds=1")
    assert _resources(spec, _tasks(spec)["train-round"])["accelerator"]["resourceCount"] == "4"


def test_caching_off_for_non_deterministic_steps_and_retries_with_backoff(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    for name, task in _tasks(spec).items():
        if not task["executor"]:
            continue
        cached = task["cachingOptions"].get("enableCache", False)
        assert cached is (name in ("validate-config", "prepare-data")), name  # prepare-data: keyed on resolved inputs
        if name.startswith(GPU_TASKS):
            assert task["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "60s", "backoffFactor": 2.0,
                                           "backoffMaxDuration": "3600s"}  # fmt: skip
        else:
            assert "retryPolicy" not in task


def test_prepare_data_caches_on_the_resolved_inputs_only(tmp_path: Path) -> None:
    """Its one parameter is resolve_inputs' resolved config (pinned SHA + base model), never a run id or a branch."""
    spec, _ = _compile(tmp_path, f"data.source={tmp_path}", "train.n_rounds=1")
    tasks = _tasks(spec)
    assert tasks["prepare-data"]["cachingOptions"].get("enableCache", False) is True
    assert tasks["resolve-inputs"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["prepare-data"]["inputs"] == {"parameters": {"config_json": {"taskOutputParameter": {
        "outputParameterKey": "resolved_config", "producerTask": "resolve-inputs"}}}}  # fmt: skip


def test_secrets_and_settings_as_environment(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, platform = compiled
    for name, task in _tasks(spec).items():
        if not task["executor"]:
            continue
        k8s = platform[task["executor"]]
        settings = k8s["configMapAsEnv"][0]
        assert settings["configMapName"] == "seppo-settings" and settings["optional"] is True
        assert {"configMapKey": "MLFLOW_TRACKING_URI", "envVar": "MLFLOW_TRACKING_URI"} in settings["keyToEnv"]
        if name == "validate-config":
            assert "secretAsEnv" not in k8s
            continue
        secrets = {s["secretName"]: s for s in k8s["secretAsEnv"]}
        s3, mlflow = secrets["seppo-s3-credentials"], secrets["seppo-mlflow-credentials"]
        assert {e["envVar"] for e in s3["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} and not s3["optional"]
        assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= {e["envVar"] for e in mlflow["keyToEnv"]}
        assert mlflow["optional"] is True


def test_secret_names_match_the_k8s_templates() -> None:
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all((ROOT / "k8s/base/secrets.yaml").read_text())}
    s3_keys = secrets["seppo-s3-credentials"]["metadata"]["annotations"]["seppo.ml/required-keys"].split(",")
    mlflow_keys = secrets["seppo-mlflow-credentials"]["metadata"]["annotations"]["seppo.ml/optional-keys"].split(",")
    module = pipeline_runner.pipeline_module()
    assert set(s3_keys) == set(module.S3_KEYS) and set(mlflow_keys) == set(module.MLFLOW_KEYS)


@pytest.mark.parametrize("method", ["sft", "kto"])
def test_methods_without_samples_have_no_sampling_tasks_and_chain_rounds(tmp_path: Path, method: str) -> None:
    spec, _ = _compile(tmp_path, f"train.method={method}", "train.n_rounds=3")
    tasks = _tasks(spec)
    assert not any(n.startswith("sample-reference") or n.startswith("for-loop") for n in tasks)
    assert tasks["train-round-3"]["dependentTasks"] == ["prepare-data", "train-round-2"]


def test_config_is_the_run_parameter_and_the_image_is_pinned(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, "train.n_rounds=1", image="registry.example.com/seppo:sha-abc")
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert SeppoConfig.from_json(default) == load_config("tiny", ["train.n_rounds=1"])
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/seppo:sha-abc"}
    spec, _ = _compile(tmp_path, "train.n_rounds=1")
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {f"ghcr.io/seppo-ml/seppo:{__version__}"}


def test_compiling_imports_neither_torch_nor_seppo_lib() -> None:
    code = (
        "import sys, pipelines.seppo_pipeline, components\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'seppo_lib', 'diffusers', 'mlflow'))\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_script_compiles(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    subprocess.run([sys.executable, str(ROOT / "pipelines/seppo_pipeline.py"), "--config", "tiny", "--out", str(out)],
                   cwd=tmp_path, check=True, capture_output=True)  # fmt: skip
    assert yaml.safe_load_all(out.read_text())


# ---- CLI ------------------------------------------------------------------------------------


def test_cli_compile_default_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["pipeline", "compile", "--config", "tiny", "train.n_rounds=2", *CLUSTER]) == 0
    cfg = load_config("tiny", ["train.n_rounds=2", *CLUSTER])
    assert (tmp_path / f"seppo-{__version__}-{cfg.config_hash()[:10]}.yaml").is_file()
    assert "2 round(s)" in capsys.readouterr().out


def test_submit_without_host(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    assert main(["pipeline", "submit", "--config", "tiny", *CLUSTER]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "seppo: error: no KFP API host: pass --host or set KFP_HOST (e.g. http://ml-pipeline.kubeflow.svc:8888)"


def test_submit_unreachable_host(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{port}")
    assert main(["pipeline", "submit", "--config", "tiny", *CLUSTER]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"KFP at http://127.0.0.1:{port} unreachable" in err[0] and "KFP_HOST" in err[0]


def _filtered_name(filter: str | None) -> str:
    """The display name a KFP list filter asks for (EQUALS on display_name, as kfp.Client.get_pipeline_id builds it)."""
    (predicate,) = json.loads(str(filter))["predicates"]
    assert predicate["key"] == "display_name" and predicate["operation"] == 1
    return str(predicate["stringValue"])


class FakeClient:
    """Records what seppo asks of kfp.Client and keeps pipelines and versions like the KFP API does. Every call
    is bound against the real kfp.Client method's signature, so a wrong or missing argument fails here too."""

    calls: list[tuple[str, dict[str, Any]]] = []
    pipelines: dict[str, str] = {}  # display name -> pipeline id
    versions: dict[str, list[SimpleNamespace]] = {}  # pipeline id -> its versions
    packages: dict[str, str] = {}  # version id -> the uploaded YAML

    def __init__(self, host: str, namespace: str = "kubeflow") -> None:
        self.calls.append(("init", {"host": host, "namespace": namespace}))

    def _record(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from kfp.client.client import Client  # the real one: the fixture replaces kfp.Client with this fake

        bound = inspect.signature(getattr(Client, method)).bind(self, *args, **kwargs).arguments
        bound.pop("self")
        self.calls.append((method, bound))
        return bound

    def list_pipelines(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        name = _filtered_name(self._record("list_pipelines", *args, **kwargs)["filter"])
        return SimpleNamespace(pipelines=[SimpleNamespace(pipeline_id=self.pipelines[name])] if name in self.pipelines else None)

    def upload_pipeline(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        call = self._record("upload_pipeline", *args, **kwargs)
        pipeline_id = f"pipeline-{len(self.pipelines) + 1}"
        self.pipelines[call["pipeline_name"]] = pipeline_id
        # KFP files the package as the new pipeline's first version, named like the pipeline
        self.versions[pipeline_id] = [SimpleNamespace(pipeline_version_id=f"{pipeline_id}-v0", display_name=call["pipeline_name"],
                                                      description=None)]  # fmt: skip
        return SimpleNamespace(pipeline_id=pipeline_id)

    def list_pipeline_versions(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        call = self._record("list_pipeline_versions", *args, **kwargs)
        name = _filtered_name(call["filter"])
        found = [v for v in self.versions[call["pipeline_id"]] if v.display_name == name]
        return SimpleNamespace(pipeline_versions=found or None)

    def upload_pipeline_version(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        call = self._record("upload_pipeline_version", *args, **kwargs)
        versions = self.versions[call["pipeline_id"]]
        version_id = f"{call['pipeline_id']}-v{len(versions)}"
        versions.append(SimpleNamespace(pipeline_version_id=version_id, display_name=call["pipeline_version_name"],
                                        description=call.get("description")))  # fmt: skip
        self.packages[version_id] = Path(call["pipeline_package_path"]).read_text()
        return SimpleNamespace(pipeline_id=call["pipeline_id"], pipeline_version_id=version_id)

    def create_experiment(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(experiment_id=f"exp-{self._record('create_experiment', *args, **kwargs)['name']}")

    def run_pipeline(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        self._record("run_pipeline", *args, **kwargs)
        return SimpleNamespace(run_id="run-123")

    def create_recurring_run(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        self._record("create_recurring_run", *args, **kwargs)
        return SimpleNamespace(recurring_run_id="job-1")

    @classmethod
    def called(cls, method: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in cls.calls if name == method]


@pytest.fixture()
def fake_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeClient]:
    import kfp

    FakeClient.calls, FakeClient.pipelines, FakeClient.versions, FakeClient.packages = [], {}, {}, {}
    monkeypatch.setattr(kfp, "Client", FakeClient)
    monkeypatch.setattr(pipeline_runner, "probe_kfp", lambda host: None)
    monkeypatch.setenv("KFP_HOST", "http://kfp.example:8888")
    monkeypatch.setenv("SEPPO_GIT_SHA", "0123456789abcdef")
    monkeypatch.chdir(tmp_path)
    return FakeClient


def test_submit(fake_kfp: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "submit", "--config", "tiny", "--experiment", "nightly", "train.beta=100", *CLUSTER]) == 0
    cfg = load_config("tiny", ["train.beta=100", *CLUSTER])
    assert fake_kfp.calls[0] == ("init", {"host": "http://kfp.example:8888", "namespace": "kubeflow"})
    (upload,) = fake_kfp.called("upload_pipeline")
    (version,) = fake_kfp.called("upload_pipeline_version")
    assert upload["pipeline_name"] == "seppo-tiny"
    assert version["pipeline_version_name"] == f"{__version__}-{cfg.config_hash()[:10]}-0123456"
    (run,) = fake_kfp.called("run_pipeline")
    assert (run["pipeline_id"], run["version_id"]) == ("pipeline-1", "pipeline-1-v1") and "pipeline_package_path" not in run
    assert run["job_name"] == f"seppo-tiny-0123456-{cfg.config_hash()[:10]}"
    assert run["experiment_id"] == "exp-nightly" and run["service_account"] == "seppo-pipeline-runner"
    assert SeppoConfig.from_json(run["params"]["config_json"]) == cfg
    out = capsys.readouterr().out
    assert "KFP run id run-123" in out and f"pipeline seppo-tiny version {version['pipeline_version_name']}" in out


def test_schedule(fake_kfp: type[FakeClient]) -> None:
    assert main(["pipeline", "schedule", "--config", "tiny", "--cron", "0 0 3 * * 1", *CLUSTER]) == 0
    (job,) = fake_kfp.called("create_recurring_run")
    assert job["cron_expression"] == "0 0 3 * * 1" and job["max_concurrency"] == 1 and job["no_catchup"] is True
    assert job["experiment_id"] == "exp-seppo" and job["job_name"].startswith("seppo-tiny-")
    assert (job["pipeline_id"], job["version_id"]) == ("pipeline-1", "pipeline-1-v1") and "pipeline_package_path" not in job
    assert SeppoConfig.from_json(job["params"]["config_json"]) == load_config("tiny", CLUSTER)


def test_schedule_rejects_five_field_cron(fake_kfp: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "schedule", "--config", "tiny", "--cron", "0 3 * * 1", *CLUSTER]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 5 fields" in err[0] and "0 0 3 * * 1" in err[0]
    assert fake_kfp.calls == []


def test_schedule_help_explains_six_field_cron(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pipeline", "schedule", "--help"])
    out = capsys.readouterr().out
    assert "SECONDS MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK" in out and "'0 0 3 * * 1'  = every Monday at 03:00:00" in out


def test_submit_refused_by_kfp(fake_kfp: type[FakeClient], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from kfp_server_api.exceptions import ApiException

    def refuse(self: FakeClient, *args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(FakeClient, "run_pipeline", refuse)
    assert main(["pipeline", "submit", "--config", "tiny", *CLUSTER]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["seppo: error: KFP at http://kfp.example:8888 refused the request: 403 Forbidden (check credentials / namespace)"]


def test_no_register_task_without_tracking(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, "tracking.enabled=false", "train.n_rounds=1")
    tasks = _tasks(spec)
    assert "register" not in tasks and not any("triggerPolicy" in t for t in tasks.values())


def test_evaluate_declares_the_run_report_as_markdown_and_html(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The KFP UI renders an evaluate task's system.Markdown / system.HTML outputs: the run report."""
    spec, _ = compiled
    component = spec["components"][_tasks(spec)["evaluate"]["componentRef"]["name"]]
    outputs = component["outputDefinitions"]["artifacts"]
    assert outputs["report_md"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert outputs["report_html"]["artifactType"]["schemaTitle"] == "system.HTML"


# ---- validation before anything leaves the machine; pipeline versions ---------------------------


def _validate_error(*overrides: str) -> str:
    """validate_config's one line for the tiny preset + overrides (compile applies its checks, not the cluster's storage rules)."""
    from seppo_lib.config import ConfigError
    from seppo_lib.steps import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config.run(load_config("tiny", list(overrides)).to_json())
    return str(err.value)


@pytest.mark.parametrize(("overrides", "field"), [
    (["data.dvc_rev=v2"], "data.dvc_rev"), (["model.pretrained=models:/seppo@"], "model.pretrained"),
    (["model.pretrained=models:/seppo@champion", "tracking.enabled=false"], "tracking.enabled"),
], ids=["dvc_rev without dvc_repo", "bad registry reference", "registry without tracking"])  # fmt: skip
def test_compile_fails_with_validate_configs_line_and_writes_nothing(
    overrides: list[str], field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["pipeline", "compile", "--config", "tiny", "--out", str(tmp_path / "out" / "p.yaml"), *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"seppo: error: {_validate_error(*overrides)}"] and field in err[0]
    assert list(tmp_path.iterdir()) == []


def test_compile_takes_a_local_bank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package may get its config_json at submit time: compile does not demand the cluster's remote storage."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "--config", "world", "--out", str(out)]) == 0
    params = next(yaml.safe_load_all(out.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert {k: params[k]["parameterType"] for k in ("data_rev", "base_model")} == {"data_rev": "STRING", "base_model": "STRING"}


@pytest.mark.parametrize("command", [["submit"], ["schedule", "--cron", "0 0 3 * * 1"]], ids=["submit", "schedule"])
def test_submit_and_schedule_validate_before_contacting_kfp(
    command: list[str], fake_kfp: type[FakeClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from seppo_lib.config import ConfigError
    from seppo_lib.steps import validate_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["pipeline", *command, "--config", "tiny", "--out", str(tmp_path / "kept.yaml")]) == 2
    with pytest.raises(ConfigError) as cluster:  # the cluster's rules: a remote bank
        validate_config.run(load_config("tiny").to_json(), shared_storage=True)
    assert capsys.readouterr().err.strip().splitlines() == [f"seppo: error: {cluster.value}"]
    assert fake_kfp.calls == [] and not (tmp_path / "kept.yaml").exists()


def test_the_pipeline_version_is_reused_by_name_and_package(fake_kfp: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        assert main(["pipeline", "submit", "--config", "tiny", *CLUSTER]) == 0
    assert main(["pipeline", "schedule", "--config", "tiny", *CLUSTER]) == 0
    assert len(fake_kfp.called("upload_pipeline")) == 1 and len(fake_kfp.called("upload_pipeline_version")) == 1
    runs = [*fake_kfp.called("run_pipeline"), *fake_kfp.called("create_recurring_run")]
    assert [r["version_id"] for r in runs] == ["pipeline-1-v1"] * 3
    assert "existing; same package as" in capsys.readouterr().out
    # another config of the same name: the same pipeline, a new version
    assert main(["pipeline", "submit", "--config", "tiny", "train.beta=100", *CLUSTER]) == 0
    assert len(fake_kfp.called("upload_pipeline")) == 1 and fake_kfp.called("run_pipeline")[-1]["version_id"] == "pipeline-1-v2"
    (version, _) = fake_kfp.called("upload_pipeline_version")
    digest = hashlib.sha256(Path(version["pipeline_package_path"]).read_bytes()).hexdigest()
    assert f"package sha256:{digest}" in version["description"]


def test_a_version_name_holding_another_package_is_refused(fake_kfp: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "submit", "--config", "tiny", *CLUSTER]) == 0
    capsys.readouterr()
    assert main(["pipeline", "submit", "--config", "tiny", "--image", "registry.example.com/seppo:other", *CLUSTER]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already has a version" in err[0] and "with another package" in err[0]
    assert len(fake_kfp.called("run_pipeline")) == 1


def test_no_cache_is_compiled_into_its_own_version(fake_kfp: type[FakeClient]) -> None:
    """A run of a pipeline version cannot override caching, so --no-cache turns it off in the uploaded package."""
    assert main(["pipeline", "submit", "--config", "tiny", "--no-cache", "sampling.n_shards=2", *CLUSTER]) == 0
    (version,) = fake_kfp.called("upload_pipeline_version")
    assert version["pipeline_version_name"].endswith("-nocache")
    (run,) = fake_kfp.called("run_pipeline")
    spec = next(yaml.safe_load_all(fake_kfp.packages[run["version_id"]]))
    tasks = {name: t for name, t in _tasks(spec).items() if t["executor"]}
    assert "sample-reference" in tasks  # inside the ParallelFor
    assert {name: t["cachingOptions"].get("enableCache") for name, t in tasks.items()} == dict.fromkeys(tasks, False)


@pytest.mark.parametrize(("registration", "line"), [
    (None, "gate failed -> not registered (tracking.enabled=false; the registry is MLflow's)"),
    ({"model_name": "seppo-world", "version": "2", "decision": "rejected", "previous_champion": "1"},
     "gate failed -> seppo-world v2 (challenger; champion unchanged: v1)"),
    ({"model_name": "seppo-world", "version": "1", "decision": "rejected", "previous_champion": None},
     "gate failed -> seppo-world v1 (challenger; no champion yet)"),
    ({"model_name": "seppo-world", "version": "3", "decision": "promoted", "previous_champion": "1"},
     "gate passed -> seppo-world v3 (champion; was v1)"),
    ({"model_name": "seppo-world", "version": "1", "decision": "rejected", "already_registered": True, "aliases": [],
      "champion": "2"}, "already registered -> seppo-world v1 (no alias; champion: v2)"),
])  # fmt: skip
def test_seppo_run_summary_says_what_register_did(registration: dict[str, Any] | None, line: str) -> None:
    from seppo_lib.cli.pipeline import registry_summary

    assert registry_summary(registration, gate_passes=False) == line


# ---- submit-time parameters data_rev / base_model (run identity) ----------------------------------


def test_compiled_world_spec_takes_data_rev_and_base_model(tmp_path: Path) -> None:
    """`seppo pipeline compile --config world`: data_rev and base_model are typed string run parameters ("" = the
    config's), fed to resolve-inputs next to config_json."""
    out = tmp_path / "world.yaml"
    assert main(["pipeline", "compile", "--config", "world", "-o", str(out), *CLUSTER]) == 0
    spec, _ = yaml.safe_load_all(out.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("data_rev", "base_model"):
        assert params[name] == {"defaultValue": "", "isOptional": True, "parameterType": "STRING"}, name
    inputs = spec["root"]["dag"]["tasks"]["resolve-inputs"]["inputs"]["parameters"]
    assert inputs == {name: {"componentInputParameter": name} for name in ("config_json", "data_rev", "base_model")}


def test_submit_passes_data_rev_and_base_model(fake_kfp: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pipeline", "submit", "--config", "tiny", "--base-model", "models:/seppo-tiny/3", *CLUSTER]
    assert main(argv) == 0
    (run,) = fake_kfp.called("run_pipeline")
    assert (run["params"]["data_rev"], run["params"]["base_model"]) == ("", "models:/seppo-tiny/3")
    assert SeppoConfig.from_json(run["params"]["config_json"]).resolved is None  # resolved inside the run, not here
    # a revision needs DVC data: one line, nothing submitted
    assert main([*argv, "--data-rev", "main"]) == 2
    assert "data_rev='main' needs a DVC data source: set data.dvc_repo" in capsys.readouterr().err
    assert len(fake_kfp.called("run_pipeline")) == 1


def test_schedule_defaults_to_the_latest_data_and_the_champion(fake_kfp: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    from seppo_lib.cli.pipeline import schedule_parameters

    assert main(["pipeline", "schedule", "--config", "tiny", *CLUSTER]) == 0
    (job,) = fake_kfp.called("create_recurring_run")
    assert (job["params"]["data_rev"], job["params"]["base_model"]) == ("", "models:/seppo-tiny@champion")
    assert "note: model.fallback is unset" in capsys.readouterr().out
    dvc = load_config("tiny", ["data.dvc_repo=https://git.example/data.git", "registry.model_name=prod"])
    assert schedule_parameters(dvc, None, None) == ("main", "models:/prod@champion")
    assert schedule_parameters(dvc, "v2", "models:/prod/4") == ("v2", "models:/prod/4")


def _help_examples() -> list[tuple[str, str]]:
    """The `example:` line of each `seppo pipeline compile|submit|schedule --help`."""
    found = []
    for command in ("compile", "submit", "schedule"):
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit):
            main(["pipeline", command, "--help"])
        text = " ".join(out.getvalue().split())
        if "example: " in text:
            found.append((f"seppo pipeline {command} --help", text.split("example: ", 1)[1]))
    return found


def _doc_examples() -> list[tuple[str, dict[str, str], list[str]]]:
    """(where, environment, argv) of every `seppo pipeline compile|submit|schedule` command in README.md and
    docs/*.md (fenced blocks; `export` lines of the block and VAR=value prefixes set the environment) and --help."""
    lines: list[tuple[str, str, dict[str, str]]] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, block in enumerate(re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(), re.S | re.M)):
            env: dict[str, str] = {}
            for line in block.replace("\\\n", " ").splitlines():  # shell lines only: blocks also hold YAML, Python
                if line.startswith("export "):
                    env.update(t.split("=", 1) for t in shlex.split(line, comments=True)[1:] if "=" in t)
                elif "seppo pipeline " in line:
                    lines.append((f"{path.name} block {n}", line, dict(env)))
    lines += [(where, line, {}) for where, line in _help_examples()]
    examples = []
    for where, line, env in lines:
        tokens = shlex.split(line, comments=True)
        for i in range(len(tokens) - 2):
            if tokens[i : i + 2] == ["seppo", "pipeline"] and tokens[i + 2] in ("compile", "submit", "schedule"):
                prefix = dict(t.split("=", 1) for t in tokens[:i] if re.fullmatch(r"[A-Z_]+=\S*", t))
                examples.append((where, {**env, **prefix}, tokens[i + 1 :]))
    return examples


def test_every_documented_pipeline_command_passes_the_cluster_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README, docs and --help examples of compile/submit/schedule (data.dvc_rev ones included) validate with
    the cluster's rules. The MLflow server comes from the environment the docs tell cluster users to set."""
    from seppo_lib.cli import build_parser
    from seppo_lib.cli.train import config_from
    from seppo_lib.config import ConfigError

    monkeypatch.chdir(ROOT)  # --config pipelines/configs/<preset>.yaml
    examples = _doc_examples()
    assert sum("dvc_rev" in " ".join(argv) for _, _, argv in examples) >= 4  # docs/pipeline.md x2, deployment.md, --help
    failures = []
    for where, env, argv in examples:
        with monkeypatch.context() as m:
            m.setenv("MLFLOW_TRACKING_URI", "http://mlflow.seppo.svc:5000")
            for key, value in env.items():
                m.setenv(key, value)
            try:
                pipeline_runner.check_for_cluster(config_from(build_parser().parse_args(argv)))
            except ConfigError as err:
                failures.append(f"{where}: seppo {' '.join(argv)} -> {err}")
    assert failures == []
