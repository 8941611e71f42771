"""The seppo Kubeflow pipeline: wiring only.

validate_config -> resolve_inputs -> prepare_data -> round k = 1..K: ParallelFor(shards) sample_reference,
gathered with dsl.Collected into train_round k -> evaluate -> register (every evaluated candidate:
challenger, and champion when the gate passes; left out with tracking.enabled=false, the registry
being MLflow's).

`build_pipeline(config_json)` takes the resolved config JSON (`SeppoConfig.to_json()`) and
unrolls the K rounds and the shard fan-out at compile time; methods without reference
samples (sft, dpo, kto: their `seppo_lib.methods` record) get no sampling tasks. The config is also the pipeline's run parameter
`config_json` (default: the compiled config), so a run or recurring run may change any value
except the compiled shape, which validate_config checks. Two more string parameters are set at
submit time: `data_rev` (a DVC branch, tag or SHA; "" = data.dvc_rev) and `base_model` (e.g.
`models:/NAME@champion`; "" = model.pretrained). resolve_inputs (never cached) pins both, and
prepare_data takes its resolved config as its one parameter: prepare_data's cache key is the
resolved commit SHA and base model version, never a branch name. Every later step binds to the
resolved config the dataset (and model) artifact carries, so a branch or champion moving
mid-run does not change the run.

Compile: `python pipelines/seppo_pipeline.py --config tiny --out pipeline.yaml`
(or `seppo pipeline compile`). Module level imports: standard library and kfp only (compiling reads the
method registry, `seppo_lib.methods`, which imports no torch).
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kfp import compiler, dsl, kubernetes  # noqa: E402
from kfp.dsl import Artifact, Metrics, Model  # noqa: E402

from components import (  # noqa: E402
    IMAGE,
    evaluate,
    prepare_data,
    register,
    sample_reference,
    train_round,
    validate_config,
)
from components.resolve_inputs import resolve_inputs  # noqa: E402

PIPELINE_NAME = "seppo"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # set by the NVIDIA GPU operator (k8s/overlays/gpu)
S3_SECRET = "seppo-s3-credentials"
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_SECRET = "seppo-mlflow-credentials"
MLFLOW_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
SETTINGS_CONFIG_MAP = "seppo-settings"  # k8s/base/settings.yaml
SETTINGS_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "DVC_NO_ANALYTICS")
SHM_SIZE = "16Gi"
RETRIES = {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2, "backoff_max_duration": "3600s"}


@dataclass(frozen=True)
class Resources:
    """Requests (= limits for memory) of one task; gpus > 0 puts it on a GPU node."""

    cpu: str
    memory: str
    gpus: int = 0
    cpu_limit: str | None = None


RESOURCES = {
    "validate": Resources("250m", "1Gi", cpu_limit="1"),
    "resolve": Resources("500m", "2Gi", cpu_limit="2"),  # git (DVC revision -> SHA), the registry, a model's hash
    "prepare": Resources("4", "32Gi", gpus=1, cpu_limit="8"),  # the VAE and text encoder run once over the data
    "sample": Resources("4", "32Gi", gpus=1, cpu_limit="8"),
    "train": Resources("8", "64Gi", gpus=1, cpu_limit="16"),  # gpus = train.num_processes
    "evaluate": Resources("4", "32Gi", gpus=1, cpu_limit="8"),
    "register": Resources("1", "4Gi", cpu_limit="2"),
}


def pipeline_shape(config: dict[str, Any]) -> dict[str, Any]:
    """What compiling fixes; must agree with seppo_lib.steps.validate_config.pipeline_shape."""
    from seppo_lib.methods import method_spec  # no torch; the method's record says whether it samples

    return {
        "n_rounds": config["train"]["n_rounds"],
        "n_shards": config["sampling"]["n_shards"],
        "needs_sampling": method_spec(config["train"]["method"]).needs_samples,
        "num_processes": config["train"]["num_processes"],
        "registers": config["tracking"]["enabled"],  # the model registry is MLflow's
    }


def _resources(task: dsl.PipelineTask, res: Resources, gpus: int | None = None) -> None:
    task.set_cpu_request(res.cpu).set_memory_request(res.memory).set_memory_limit(res.memory)
    if res.cpu_limit:
        task.set_cpu_limit(res.cpu_limit)
    n_gpus = res.gpus if gpus is None else gpus
    if n_gpus:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(n_gpus)
        kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
        kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
        # NCCL and DataLoader workers need more shared memory than the container's 64 MiB.
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)


def _environment(task: dsl.PipelineTask, secrets: bool = True) -> None:
    """Endpoints from the seppo-settings ConfigMap; S3 and MLflow credentials from Secrets."""
    kubernetes.use_config_map_as_env(task, SETTINGS_CONFIG_MAP, {k: k for k in SETTINGS_KEYS}, optional=True)
    if secrets:
        kubernetes.use_secret_as_env(task, S3_SECRET, {k: k for k in S3_KEYS})
        kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {k: k for k in MLFLOW_KEYS}, optional=True)


def _task(task: dsl.PipelineTask, name: str, res: Resources, *, image: str, cache: bool, retry: bool = False,
          gpus: int | None = None, secrets: bool = True) -> dsl.PipelineTask:  # fmt: skip
    task.set_display_name(name).set_caching_options(cache)
    if image != IMAGE:
        task.set_container_image(image)
    if retry:
        task.set_retry(**RETRIES)
    _resources(task, res, gpus)
    _environment(task, secrets)
    return task


def build_pipeline(
    config_json: str, *, image: str = IMAGE, local: bool = False, shard_parallelism: int = 0
) -> Callable[..., Any]:
    """The pipeline for this resolved config.

    local: for kfp.local on one machine. Every step then shares this machine's disk, so
        validate_config does not demand a remote bank and MLflow server, and failed sampling
        or training is not retried (kfp.local 2.17 honours retry backoff: minutes of waiting).
    shard_parallelism: sampling shards run at once per round (0 = all).
    """
    config = json.loads(config_json)
    shape = pipeline_shape(config)
    rounds, n_shards = shape["n_rounds"], shape["n_shards"]
    expected_shape = json.dumps(shape, sort_keys=True)
    job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

    class Outputs(NamedTuple):
        model: Model
        metrics: Metrics
        report: Artifact

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"SePPO on config {config['name']!r}: {rounds} round(s), {n_shards} sampling shard(s), method "
        f"{config['train']['method']}",
    )
    def seppo(config_json: str = config_json, data_rev: str = "", base_model: str = "") -> Outputs:  # type: ignore[valid-type]
        # Every step reads the pipeline parameter config_json itself, not validate_config's output:
        # kfp.local 2.17 replaces task-output parameters entering a ParallelFor with the loop item.
        cfg = config_json
        check = validate_config(config_json=cfg, expected_shape=expected_shape, shared_storage=not local)
        _task(check, "validate config", RESOURCES["validate"], image=image, cache=True, secrets=False)
        inputs = resolve_inputs(config_json=cfg, data_rev=data_rev, base_model=base_model).after(check)
        _task(inputs, "resolve inputs", RESOURCES["resolve"], image=image, cache=False)
        # no kfp_run_id: the cache key is the resolved config (pinned data SHA + base model version)
        data = prepare_data(config_json=inputs.outputs["resolved_config"])
        _task(data, "prepare data", RESOURCES["prepare"], image=image, cache=True)
        dataset = data.outputs["dataset"]
        previous = None
        for k in range(1, rounds + 1):
            refs: dict[str, Any] = {}
            if shape["needs_sampling"]:
                with dsl.ParallelFor(items=list(range(n_shards)), name=f"round-{k}-shards", parallelism=shard_parallelism) as shard:
                    sample = sample_reference(config_json=cfg, dataset=dataset, round_idx=k, shard=shard, n_shards=n_shards)
                    _task(sample, f"round {k}: sample reference", RESOURCES["sample"], image=image, cache=False, retry=not local)
                    if previous is not None:
                        sample.after(previous)
                refs = {"references": dsl.Collected(sample.outputs["references"])}
            train = train_round(config_json=cfg, dataset=dataset, round_idx=k, kfp_run_id=job_id, **refs)
            _task(train, f"round {k}: train", RESOURCES["train"], image=image, cache=False, retry=not local,
                  gpus=shape["num_processes"])
            if previous is not None:
                train.after(previous)
            previous = train
        assert previous is not None  # n_rounds >= 1 (SeppoConfig)
        model = previous.outputs["model"]
        scored = evaluate(config_json=cfg, model=model, kfp_run_id=job_id)
        _task(scored, "evaluate", RESOURCES["evaluate"], image=image, cache=False)
        if shape["registers"]:  # always after evaluate: the gate decides the alias, not whether to register
            reg = register(config_json=cfg, model=model, report=scored.outputs["report"], kfp_run_id=job_id)
            _task(reg, "register", RESOURCES["register"], image=image, cache=False)
        return Outputs(model=model, metrics=scored.outputs["metrics"], report=scored.outputs["report"])

    return seppo


def compile_pipeline(config_json: str, out: str | Path, *, image: str = IMAGE) -> Path:
    """Write the cluster pipeline's IR YAML to `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(config_json, image=image), str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from seppo_lib.cli.common import add_output_arg  # argparse only

    parser = argparse.ArgumentParser(description="Compile the seppo pipeline to KFP IR YAML.")
    parser.add_argument("--config", "-c", default=None, help="preset name or YAML file (default: built-in defaults)")
    add_output_arg(parser, "output YAML (default pipeline.yaml)", metavar="FILE")
    parser.add_argument("--image", default=IMAGE, help=f"component image (default {IMAGE})")
    parser.add_argument("overrides", nargs="*", metavar="a.b=value", help="config overrides")
    args = parser.parse_args(argv)
    from seppo_lib.config import load_config  # pydantic only; never torch

    cfg = load_config(args.config, args.overrides)
    print(compile_pipeline(cfg.to_json(), args.out or "pipeline.yaml", image=args.image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
