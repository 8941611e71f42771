"""The Kubernetes manifests in k8s/: they render, validate, and follow the project's rules.

Rendering uses `kubectl kustomize DIR` (fully offline) when kubectl is on PATH. Without
kubectl, `_fallback_render` stands in: a deliberately minimal renderer for what this
repo's kustomizations use, namely `resources` (files and directories) and `patches`
(strategic merge approximated by a recursive merge of maps, lists replaced; target by
kind, name and `k=v` label selector). When kubectl is present, a test checks that the
fallback gives exactly kubectl's objects, so it cannot silently drift.

Built-in objects are validated strictly (unknown fields rejected) with kubernetes-validate;
the two Kubeflow CRD instances in k8s/templates/ against schemas written below.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/gpu"]
PYTORCHJOB = K8S / "templates" / "pytorchjob-train-round.yaml"
SCHEDULEDWORKFLOW = K8S / "templates" / "scheduledworkflow.yaml"
# Oldest Kubernetes minor the manifests must be valid for, and the newest the package ships.
K8S_VERSIONS = ["1.33", kubernetes_validate.latest_version()]
SEPPO_IMAGE = "ghcr.io/seppo-ml/seppo"
GPU = "nvidia.com/gpu"
PRUNE_DIRS = {".git", ".venv", "seppo-runs", "data", "build", "dist", "node_modules", ".pytest_cache"}


# ---- rendering --------------------------------------------------------------------------


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kubectl_render(directory: Path, home: Path | None = None) -> list[dict[str, Any]]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home or Path.home())}
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, f"kubectl kustomize {directory} failed: {out.stderr.strip()}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _matches(obj: dict[str, Any], target: dict[str, str]) -> bool:
    labels = obj["metadata"].get("labels", {})
    wanted = dict(p.split("=", 1) for p in target.get("labelSelector", "").split(",") if p)
    return (
        obj["kind"] == target.get("kind", obj["kind"])
        and obj["metadata"]["name"] == target.get("name", obj["metadata"]["name"])
        and all(labels.get(k) == v for k, v in wanted.items())
    )


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in patch.items()}}
    return patch


def _fallback_render(directory: Path) -> list[dict[str, Any]]:
    """Minimal kustomize: `resources` then `patches`; anything else is refused."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "patches"}
    assert not unsupported, f"{directory}: the fallback renderer does not support {sorted(unsupported)}"
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += _fallback_render(path) if path.is_dir() else _yaml_docs(path)
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        target = patch.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
        spec = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")}
        objects = [_merge(o, spec) if _matches(o, target) else o for o in objects]
    return objects


@functools.lru_cache(maxsize=None)
def render(name: str) -> tuple[dict[str, Any], ...]:
    directory = K8S / name
    return tuple(_kubectl_render(directory) if shutil.which("kubectl") else _fallback_render(directory))


def _by_id(objects: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}


def _find(objects: Any, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def _all_rendered() -> list[dict[str, Any]]:
    return list(_by_id(o for name in KUSTOMIZATIONS for o in render(name)).values())


def _templates() -> list[dict[str, Any]]:
    return _yaml_docs(PYTORCHJOB) + _yaml_docs(SCHEDULEDWORKFLOW)


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template an object carries."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        yield name, spec["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield name, spec["template"]["spec"]
    elif obj["kind"] == "PyTorchJob":
        for replica, rspec in spec["pytorchReplicaSpecs"].items():
            yield f"{name}/{replica}", rspec["template"]["spec"]


def containers(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, pod in pod_specs(obj):
        for c in pod.get("initContainers", []) + pod["containers"]:
            yield f"{where}/{c['name']}", c


def _builtin(obj: dict[str, Any]) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


# ---- rendering works --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_offline(name: str, tmp_path: Path) -> None:
    """No kubeconfig, no cluster, an empty HOME: rendering needs nothing but the files."""
    objects = _kubectl_render(K8S / name, home=tmp_path)
    assert objects and all(o.get("kind") and o.get("metadata", {}).get("name") for o in objects)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_fallback_renderer_matches_kubectl(name: str) -> None:
    assert _by_id(_fallback_render(K8S / name)) == _by_id(render(name))


def test_templates_stay_outside_kustomizations() -> None:
    """Templates are filled per run: `kubectl apply -k` must never create them."""
    rendered_kinds = {o["kind"] for o in _all_rendered()}
    assert not rendered_kinds & {"PyTorchJob", "ScheduledWorkflow"}
    for name in KUSTOMIZATIONS:
        resources = yaml.safe_load((K8S / name / "kustomization.yaml").read_text())["resources"]
        assert not [r for r in resources if "templates" in r], f"{name} includes k8s/templates"


# ---- schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_objects_validate_strictly(name: str, version: str) -> None:
    """Every object `kubectl apply -k` creates is built-in (no CRD needed) and schema-valid."""
    errors = []
    for obj in render(name):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert _builtin(obj), f"{where}: {obj['apiVersion']} is not a built-in API"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{name}: {where} invalid for {version} at {list(err.path)}: {err.message}")
    assert not errors, "\n".join(errors)


def _obj(properties: dict[str, Any], required: list[str], closed: bool = True) -> dict[str, Any]:
    """JSON schema of an object; `closed` rejects fields not listed (typos in the template)."""
    schema = {"type": "object", "properties": properties, "required": required}
    return {**schema, "additionalProperties": False} if closed else schema


_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_TIME = {"type": "string", "format": "date-time", "pattern": r"Z$"}
_CONTAINER = _obj(
    {
        "image": {"type": "string", "pattern": r"^[^\s@]+:[\w][\w.-]{0,127}$"},
        "command": {**_STRINGS, "minItems": 1},
        "args": _STRINGS,
        "resources": _obj({"limits": _obj({}, ["cpu", "memory", GPU], closed=False)}, ["requests", "limits"], False),
    },
    ["name", "image", "command", "args", "resources"],
    closed=False,
)
_POD_TEMPLATE = _obj(
    {
        "spec": _obj(
            {"containers": {"type": "array", "minItems": 1, "items": _CONTAINER,
                            "contains": {"properties": {"name": {"const": "pytorch"}}}}},
            ["containers"],
            closed=False,
        )
    },
    ["spec"],
    closed=False,
)
_REPLICA = _obj(
    {
        "replicas": {"type": "integer", "minimum": 1},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": _POD_TEMPLATE,
    },
    ["replicas", "restartPolicy", "template"],
)
_RUN_POLICY = _obj(
    {
        "cleanPodPolicy": {"enum": ["None", "Running", "All"]},
        **{
            k: {"type": "integer", "minimum": 0}
            for k in ("backoffLimit", "ttlSecondsAfterFinished", "activeDeadlineSeconds")
        },
    },
    [],
)
PYTORCHJOB_SCHEMA = _obj(
    {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "PyTorchJob"},
        "metadata": _obj({"name": _NAME}, ["name", "namespace"], closed=False),
        "spec": _obj(
            {
                "nprocPerNode": {"type": "string", "pattern": r"^[1-9][0-9]*$"},
                "elasticPolicy": {"type": "object"},
                "runPolicy": _RUN_POLICY,
                "pytorchReplicaSpecs": _obj(
                    {"Master": {"allOf": [_REPLICA, {"properties": {"replicas": {"const": 1}}}]}, "Worker": _REPLICA},
                    ["Master", "Worker"],
                ),
            },
            ["nprocPerNode", "runPolicy", "pytorchReplicaSpecs"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
_PARAMETER = _obj({"name": {"type": "string"}, "value": {"type": "string"}}, ["name", "value"])
# KFP cron: six fields, seconds first.
_CRON = _obj({"cron": {"type": "string", "pattern": r"^\S+( \S+){5}$"}, "startTime": _TIME, "endTime": _TIME}, ["cron"])
SCHEDULEDWORKFLOW_SCHEMA = _obj(
    {
        "apiVersion": {"const": "kubeflow.org/v1beta1"},
        "kind": {"const": "ScheduledWorkflow"},
        "metadata": _obj({"name": _NAME}, ["name"], closed=False),
        "spec": _obj(
            {
                "enabled": {"type": "boolean"},
                "maxConcurrency": {"const": 1},
                "noCatchup": {"const": True},
                "maxHistory": {"type": "integer", "minimum": 0, "maximum": 100},
                "serviceAccount": _NAME,
                **{k: {"type": "string"} for k in ("experimentId", "pipelineId", "pipelineVersionId", "pipelineName")},
                "trigger": _obj({"cronSchedule": _CRON}, ["cronSchedule"]),
                "workflow": _obj({"spec": {}, "parameters": {"type": "array", "items": _PARAMETER}}, ["parameters"]),
            },
            ["enabled", "maxConcurrency", "noCatchup", "trigger", "workflow"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)


@pytest.mark.parametrize(
    ("path", "schema"), [(PYTORCHJOB, PYTORCHJOB_SCHEMA), (SCHEDULEDWORKFLOW, SCHEDULEDWORKFLOW_SCHEMA)]
)
def test_crd_templates_match_schema(path: Path, schema: dict[str, Any]) -> None:
    [obj] = _yaml_docs(path)
    jsonschema.validate(obj, schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pytorchjob_pod_templates_validate_strictly(version: str) -> None:
    [job] = _yaml_docs(PYTORCHJOB)
    for replica, spec in job["spec"]["pytorchReplicaSpecs"].items():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": replica.lower()}}
        kubernetes_validate.validate({**pod_template, "template": spec["template"]}, version, strict=True)


# ---- secrets and references -------------------------------------------------------------


def _repo_yaml_files() -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in PRUNE_DIRS]
        yield from (Path(dirpath) / f for f in filenames if f.endswith((".yaml", ".yml")))


def test_no_secret_in_the_repo_carries_a_value() -> None:
    secrets = [o for o in _all_rendered() if o["kind"] == "Secret"]
    for path in _repo_yaml_files():
        try:
            docs = yaml.safe_load_all(path.read_text())
            secrets += [d for d in docs if isinstance(d, dict) and d.get("kind") == "Secret"]
        except yaml.YAMLError:
            assert "kind: Secret" not in path.read_text(), f"{path}: unparsable YAML declaring a Secret"
    assert len({s["metadata"]["name"] for s in secrets}) >= 3, "the Secret templates were not found"
    for secret in secrets:
        for field in ("data", "stringData"):
            assert not secret.get(field), f"Secret {secret['metadata']['name']} carries {field} values"


def _declared_keys(obj: dict[str, Any]) -> set[str]:
    if obj["kind"] == "ConfigMap":
        return set(obj.get("data", {}))
    notes = obj["metadata"].get("annotations", {})
    return {k for a in ("seppo.ml/required-keys", "seppo.ml/optional-keys") for k in notes.get(a, "").split(",") if k}


def _references(obj: dict[str, Any]) -> Iterator[tuple[str, str, str | None, bool]]:
    """(kind, name, key or None, optional) of every Secret/ConfigMap a pod reads."""
    for _, pod in pod_specs(obj):
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                for item in volume["configMap"].get("items", [{"key": None}]):
                    yield "ConfigMap", volume["configMap"]["name"], item["key"], False
        for c in pod.get("initContainers", []) + pod["containers"]:
            for source in c.get("envFrom", []):
                for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if field in source:
                        yield kind, source[field]["name"], None, source[field].get("optional", False)
            for env in c.get("env", []):
                for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = env.get("valueFrom", {}).get(field)
                    if ref:
                        yield kind, ref["name"], ref["key"], ref.get("optional", False)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_secret_and_configmap_reference_resolves(name: str) -> None:
    objects = render(name)
    available = {
        (o["kind"], o["metadata"]["name"]): _declared_keys(o) for o in objects if o["kind"] in ("Secret", "ConfigMap")
    }
    for obj in objects:
        for kind, ref, key, optional in _references(obj):
            where = f"{obj['kind']}/{obj['metadata']['name']} -> {kind}/{ref}"
            assert optional or (kind, ref) in available, f"{where}: not defined in {name}"
            assert key is None or optional or key in available[(kind, ref)], f"{where}: no key {key}"


def test_secret_templates_declare_the_credentials() -> None:
    base = render("base")
    s3 = _find(base, "Secret", "seppo-s3-credentials")
    assert _declared_keys(s3) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    dev = render("overlays/dev")
    assert _declared_keys(_find(dev, "Secret", "seppo-postgres-credentials")) == {"POSTGRES_USER", "POSTGRES_PASSWORD"}


# ---- containers -------------------------------------------------------------------------


def _all_containers() -> list[tuple[str, dict[str, Any]]]:
    return [c for obj in _all_rendered() + _templates() for c in containers(obj)]


def test_every_image_is_pinned_by_tag() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    found = _all_containers()
    assert len(found) >= 6
    for where, c in found:
        name, _, digest = c["image"].partition("@")
        tag = name.rsplit("/", 1)[-1].partition(":")[2]
        assert tag or digest, f"{where}: image {c['image']} has no tag"
        assert tag != "latest", f"{where}: image {c['image']} uses :latest"
        if name.startswith(SEPPO_IMAGE + ":"):
            assert tag == version, f"{where}: seppo image {tag} != pyproject version {version}"


def test_mlflow_server_image_matches_the_pinned_mlflow() -> None:
    lines = (ROOT / "requirements/constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line)
    [(_, mlflow)] = containers(_find(render("overlays/dev"), "Deployment", "mlflow"))
    assert mlflow["image"] == f"ghcr.io/seppo-ml/mlflow-server:{pins['mlflow']}"


def test_every_container_has_requests_and_limits() -> None:
    for where, c in _all_containers():
        for field in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(c.get("resources", {}).get(field, {}))
            assert not missing, f"{where}: resources.{field} lacks {sorted(missing)}"


def test_long_running_containers_have_probes() -> None:
    servers = [o for o in _all_rendered() if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    assert {o["metadata"]["name"] for o in servers} >= {"minio", "mlflow", "postgres"}
    for obj in servers:
        for where, c in containers(obj):
            assert c.get("readinessProbe") and c.get("livenessProbe"), f"{where}: needs readiness and liveness probes"


def test_pods_run_non_root_with_a_read_only_root_filesystem() -> None:
    for obj in _all_rendered() + _templates():
        for where, pod in pod_specs(obj):
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
            for c in pod["containers"]:
                ctx = c["securityContext"]
                assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True, where
                assert ctx["capabilities"]["drop"] == ["ALL"], where


# ---- base -------------------------------------------------------------------------------


def test_namespaced_objects_live_in_seppo() -> None:
    for obj in _all_rendered() + [_yaml_docs(PYTORCHJOB)[0]]:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "seppo", f"{obj['kind']}/{obj['metadata']['name']}"


def test_rbac_is_namespaced_and_least_privilege() -> None:
    objects = _all_rendered()
    assert not {o["kind"] for o in objects} & {"ClusterRole", "ClusterRoleBinding"}
    role = _find(objects, "Role", "seppo-pipeline-runner")
    allowed = {
        ("", "pods"): {"get", "list", "watch", "create", "delete", "patch"},
        ("", "pods/log"): {"get"},
        ("", "configmaps"): {"get"},
        ("", "secrets"): {"get"},
        ("argoproj.io", "workflows"): {"get", "list", "watch", "update", "patch"},
        ("argoproj.io", "workflowtaskresults"): {"create", "patch"},
        ("kubeflow.org", "pytorchjobs"): {"get", "list", "watch", "create", "delete"},
    }
    secret_names = {o["metadata"]["name"] for o in render("base") if o["kind"] == "Secret"}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert set(rule["verbs"]) <= allowed[(group, resource)], f"{group}/{resource}: {rule['verbs']}"
                if resource == "secrets":
                    assert set(rule["resourceNames"]) == secret_names, "secrets only by name"
    binding = _find(objects, "RoleBinding", "seppo-pipeline-runner")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "seppo-pipeline-runner"
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "seppo-pipeline-runner", "namespace": "seppo"}]
    _find(objects, "ServiceAccount", "seppo-pipeline-runner")


def _settings() -> dict[str, str]:
    return _find(render("base"), "ConfigMap", "seppo-settings")["data"]


def _preset() -> dict[str, Any]:
    return yaml.safe_load(_find(render("base"), "ConfigMap", "seppo-retrain-preset")["data"]["preset.yaml"])


def test_settings_hold_the_cluster_endpoints() -> None:
    settings = _settings()
    assert settings["MLFLOW_TRACKING_URI"] == "http://mlflow.seppo.svc:5000"
    assert settings["SEPPO_BANK_URI"] == "s3://seppo/bank"
    assert settings["AWS_ENDPOINT_URL"].startswith("http") and settings["KFP_HOST"].startswith("http")
    assert settings["SEPPO_DVC_REMOTE"].startswith("s3://")
    assert not any(re.search("SECRET|PASSWORD|TOKEN|ACCESS_KEY", k) for k in settings)


def test_retrain_preset_is_a_valid_config_matching_the_settings() -> None:
    from seppo_lib.config import SeppoConfig

    config = SeppoConfig.model_validate(_preset())
    settings = _settings()
    assert config.bank.uri == settings["SEPPO_BANK_URI"]
    assert config.tracking.mlflow_uri == settings["MLFLOW_TRACKING_URI"]
    assert config.storage.s3_endpoint_url == settings["AWS_ENDPOINT_URL"]
    assert config.storage.s3_addressing_style == "path"


def test_retrain_cronjob() -> None:
    cron = _find(render("base"), "CronJob", "seppo-retrain")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    minute, hour, day, month, weekday = spec["schedule"].split()
    assert (day, month) == ("*", "*") and weekday.isdigit(), "weekly schedule"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    [(_, pod)] = pod_specs(cron)
    [(_, c)] = containers(cron)
    assert c["image"] == f"{SEPPO_IMAGE}:0.1.0"
    assert c["command"] == ["seppo", "pipeline", "submit", "--config", "/config/preset.yaml"]
    assert any(m["mountPath"] == "/config" for m in c["volumeMounts"])
    sources = {(k, s[k]["name"]) for s in c["envFrom"] for k in s if k.endswith("Ref")}
    assert {("configMapRef", "seppo-settings"), ("secretRef", "seppo-s3-credentials")} <= sources
    assert pod["serviceAccountName"] == "seppo-pipeline-runner"


def test_scheduledworkflow_matches_the_cronjob() -> None:
    """Same weekly time (KFP cron has a leading seconds field) and the same preset."""
    from seppo_lib.config import SeppoConfig

    [swf] = _yaml_docs(SCHEDULEDWORKFLOW)
    seconds, *rest = swf["spec"]["trigger"]["cronSchedule"]["cron"].split()
    assert seconds == "0" and " ".join(rest) == _find(render("base"), "CronJob", "seppo-retrain")["spec"]["schedule"]
    params = {p["name"]: p["value"] for p in swf["spec"]["workflow"]["parameters"]}
    assert SeppoConfig.from_json(params["config_json"]) == SeppoConfig.model_validate(_preset())


# ---- overlays ---------------------------------------------------------------------------


def test_dev_services_reach_their_pods() -> None:
    objects = render("overlays/dev")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    for svc in (o for o in objects if o["kind"] == "Service"):
        selector = svc["spec"]["selector"].items()
        [target] = [w for w in workloads if selector <= w["spec"]["template"]["metadata"]["labels"].items()]
        ports = {p["name"] for _, c in containers(target) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            where = f"Service/{svc['metadata']['name']}"
            assert port["targetPort"] in ports, f"{where}: no container port {port['targetPort']}"


def test_dev_mlflow_minio_and_buckets() -> None:
    objects = render("overlays/dev")
    [(_, mlflow)] = containers(_find(objects, "Deployment", "mlflow"))
    args = mlflow["command"]
    assert args[:2] == ["mlflow", "server"] and args[args.index("--backend-store-uri") + 1].startswith("postgresql://")
    assert args[args.index("--artifacts-destination") + 1] == "s3://mlflow/"
    assert args[args.index("--host") + 1] == "0.0.0.0" and args[args.index("--port") + 1] == "5000"
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false" and "MLFLOW_S3_ENDPOINT_URL" in env
    [(_, minio)] = containers(_find(objects, "Deployment", "minio"))
    creds = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in minio["env"] if e["name"].startswith("MINIO_ROOT")
    }
    assert creds == {"MINIO_ROOT_USER": "seppo-s3-credentials", "MINIO_ROOT_PASSWORD": "seppo-s3-credentials"}
    [(_, mc)] = containers(_find(objects, "Job", "seppo-create-buckets"))
    buckets = set(next(e["value"] for e in mc["env"] if e["name"] == "BUCKETS").split())
    needed = {_settings()["SEPPO_BANK_URI"], _settings()["SEPPO_DVC_REMOTE"], "s3://mlflow/"}
    assert {uri.removeprefix("s3://").split("/")[0] for uri in needed} == buckets == {"seppo", "mlflow", "dvc"}


def _gpus(pod: dict[str, Any]) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get(GPU, 0)) for c in pod["containers"])


def test_gpu_pods_are_placed_on_gpu_nodes() -> None:
    gpu_objects = list(render("overlays/gpu")) + _yaml_docs(PYTORCHJOB)
    gpu_pods = [(w, p) for o in gpu_objects for w, p in pod_specs(o) if _gpus(p)]
    assert len(gpu_pods) >= 3, "the GPU smoke Job and both PyTorchJob replicas request GPUs"
    for where, pod in gpu_pods:
        assert pod.get("nodeSelector") == {"nvidia.com/gpu.present": "true"}, where
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod.get("tolerations", []), where
    for name in ("base", "overlays/dev"):
        assert not any(_gpus(p) for o in render(name) for _, p in pod_specs(o)), f"{name} requests no GPU"


def test_gpu_overlay_quota_and_limits() -> None:
    objects = render("overlays/gpu")
    [quota] = [o for o in objects if o["kind"] == "ResourceQuota"]
    assert int(quota["spec"]["hard"][f"requests.{GPU}"]) > 0
    [limit_range] = [o for o in objects if o["kind"] == "LimitRange"]
    [container] = [lim for lim in limit_range["spec"]["limits"] if lim["type"] == "Container"]
    assert {"cpu", "memory"} <= set(container["default"]) and {"cpu", "memory"} <= set(container["defaultRequest"])


def test_pytorchjob_runs_one_process_per_gpu_with_shared_memory() -> None:
    [job] = _yaml_docs(PYTORCHJOB)
    nproc = job["spec"]["nprocPerNode"]
    for where, pod in pod_specs(job):
        [c] = pod["containers"]
        assert c["resources"]["limits"][GPU] == c["resources"]["requests"][GPU] == nproc, where
        line = c["command"] + c["args"]
        assert "--nproc-per-node=$(PET_NPROC_PER_NODE)" in line, where
        run = line[line.index("seppo"):]
        assert run[:2] == ["seppo", "train-round"] and "--config-json" in run and "--round" in run, where
        shm = {v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"}
        assert any(m["mountPath"] == "/dev/shm" and m["name"] in shm for m in c["volumeMounts"]), where
