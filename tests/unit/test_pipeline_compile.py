"""The compiled pipeline (IR YAML + Kubernetes platform spec) and `seppo pipeline compile|submit|schedule`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from seppo_lib import __version__, pipeline_runner
from seppo_lib.cli import main
from seppo_lib.config import SeppoConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
GPU_TASKS = ("sample-reference", "train-round")


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
    assert spec["root"]["dag"]["tasks"]["prepare-data"]["dependentTasks"] == ["validate-config"]


def test_register_runs_only_if_the_gate_passes(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    cond = next(t for t in spec["root"]["dag"]["tasks"].values() if "triggerPolicy" in t)
    assert cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    assert set(spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]) == {"register"}


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
        assert cached is (name in ("validate-config", "prepare-data")), name  # tiny uses builtin:world: pinned
        if name.startswith(GPU_TASKS):
            assert task["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "60s", "backoffFactor": 2.0,
                                           "backoffMaxDuration": "3600s"}  # fmt: skip
        else:
            assert "retryPolicy" not in task


def test_unpinned_data_is_not_cached(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, f"data.source={tmp_path}", "train.n_rounds=1")
    assert _tasks(spec)["prepare-data"]["cachingOptions"].get("enableCache", False) is False


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


def test_sft_has_no_sampling_tasks_and_chains_rounds(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, "train.method=sft", "train.n_rounds=3")
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
    assert main(["pipeline", "compile", "--config", "tiny", "train.n_rounds=2"]) == 0
    cfg = load_config("tiny", ["train.n_rounds=2"])
    assert (tmp_path / f"seppo-{__version__}-{cfg.config_hash()[:10]}.yaml").is_file()
    assert "2 round(s)" in capsys.readouterr().out


def test_submit_without_host(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    assert main(["pipeline", "submit", "--config", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "seppo: error: no KFP API host: pass --host or set KFP_HOST (e.g. http://ml-pipeline.kubeflow.svc:8888)"


def test_submit_unreachable_host(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{port}")
    assert main(["pipeline", "submit", "--config", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"KFP at http://127.0.0.1:{port} unreachable" in err[0] and "KFP_HOST" in err[0]


class FakeClient:
    """Records what seppo asks of kfp.Client."""

    calls: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, host: str, namespace: str = "kubeflow") -> None:
        self.calls.append(("init", {"host": host, "namespace": namespace}))

    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> Any:
        assert Path(pipeline_file).is_file()
        self.calls.append(("run", kwargs))
        return type("Result", (), {"run_id": "run-123"})()

    def create_experiment(self, name: str, namespace: str | None = None) -> Any:
        return type("Experiment", (), {"experiment_id": f"exp-{name}"})()

    def create_recurring_run(self, **kwargs: Any) -> Any:
        assert Path(kwargs["pipeline_package_path"]).is_file()
        self.calls.append(("recurring", kwargs))
        return type("Job", (), {"recurring_run_id": "job-1"})()


@pytest.fixture()
def fake_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeClient]:
    import kfp

    FakeClient.calls = []
    monkeypatch.setattr(kfp, "Client", FakeClient)
    monkeypatch.setattr(pipeline_runner, "probe_kfp", lambda host: None)
    monkeypatch.setenv("KFP_HOST", "http://kfp.example:8888")
    monkeypatch.setenv("SEPPO_GIT_SHA", "0123456789abcdef")
    monkeypatch.chdir(tmp_path)
    return FakeClient


def test_submit(fake_kfp: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "submit", "--config", "tiny", "--experiment", "nightly", "train.beta=100"]) == 0
    cfg = load_config("tiny", ["train.beta=100"])
    (_, init), (_, run) = fake_kfp.calls
    assert init["host"] == "http://kfp.example:8888"
    assert run["run_name"] == f"seppo-tiny-0123456-{cfg.config_hash()[:10]}"
    assert run["experiment_name"] == "nightly" and run["service_account"] == "seppo-pipeline-runner"
    assert SeppoConfig.from_json(run["arguments"]["config_json"]) == cfg
    assert "KFP run id run-123" in capsys.readouterr().out


def test_schedule(fake_kfp: type[FakeClient]) -> None:
    assert main(["pipeline", "schedule", "--config", "tiny", "--cron", "0 0 3 * * 1"]) == 0
    (_, job) = fake_kfp.calls[-1]
    assert job["cron_expression"] == "0 0 3 * * 1" and job["max_concurrency"] == 1 and job["no_catchup"] is True
    assert job["experiment_id"] == "exp-seppo" and job["job_name"].startswith("seppo-tiny-")
    assert SeppoConfig.from_json(job["params"]["config_json"]) == load_config("tiny")


def test_schedule_rejects_five_field_cron(fake_kfp: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "schedule", "--config", "tiny", "--cron", "0 3 * * 1"]) == 2
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

    def refuse(self: FakeClient, pipeline_file: str, **kwargs: Any) -> Any:
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(FakeClient, "create_run_from_pipeline_package", refuse)
    assert main(["pipeline", "submit", "--config", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["seppo: error: KFP at http://kfp.example:8888 refused the request: 403 Forbidden (check credentials / namespace)"]


def test_no_register_task_without_tracking(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, "tracking.enabled=false", "train.n_rounds=1")
    tasks = _tasks(spec)
    assert "register" not in tasks and not any("triggerPolicy" in t for t in tasks.values())
