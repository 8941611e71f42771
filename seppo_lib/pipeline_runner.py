"""Compile, submit, schedule and locally run the seppo KFP pipeline (`seppo pipeline`, `seppo run`).

seppo_lib never imports kfp at module level: every kfp import is inside a function here,
so the library and its CLI load without it. The pipeline definition itself lives in
`pipelines/seppo_pipeline.py` (wiring only) and the components in `components/`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from seppo_lib import __version__
from seppo_lib.config import ConfigError, SeppoConfig
from seppo_lib.errors import SeppoError
from seppo_lib.pipeline_versions import PipelineVersion, git_sha, set_caching, upload_version

logger = logging.getLogger(__name__)

SOURCE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVICE_ACCOUNT = "seppo-pipeline-runner"  # k8s/base/rbac.yaml
KFP_HEALTHZ = "/apis/v2beta1/healthz"
CRON_HELP = (
    "KFP cron has SIX fields, seconds first: 'SECONDS MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK'; "
    "'0 0 3 * * 1' = every Monday at 03:00:00 (the scheduler's time zone, usually UTC)"
)
_PROGRESS = re.compile(r"Executing task|finished with status|Skipping|Running pipeline|ERROR")
_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


class PipelineError(SeppoError):
    """Compiling, submitting or running the pipeline failed; the message says where and why."""


def pipeline_module() -> ModuleType:
    """`pipelines.seppo_pipeline`, importable from the installed package or this source tree."""
    try:
        import pipelines.seppo_pipeline as module
    except ModuleNotFoundError:
        if not (SOURCE_ROOT / "pipelines" / "seppo_pipeline.py").is_file():
            raise PipelineError("the pipelines/ package is not installed; reinstall seppo (pip install .)") from None
        sys.path.insert(0, str(SOURCE_ROOT))
        import pipelines.seppo_pipeline as module
    return module


def package_name(cfg: SeppoConfig) -> str:
    """Default IR YAML name: seppo-<version>-<config hash[:10]>.yaml."""
    return f"seppo-{__version__}-{cfg.config_hash()[:10]}.yaml"


def compile_package(cfg: SeppoConfig, out: str | Path | None = None, image: str | None = None) -> Path:
    """Compile the cluster pipeline for `cfg` to `out` (default ./seppo-<version>-<hash[:10]>.yaml)."""
    module = pipeline_module()
    return module.compile_pipeline(cfg.to_json(), Path(out) if out else Path(package_name(cfg)), image=image or module.IMAGE)


def check_for_cluster(cfg: SeppoConfig, *, shared_storage: bool = True) -> None:
    """validate_config's checks, run here before anything is compiled or sent; a bad config fails with the
    step's one-line ConfigError. shared_storage: the cluster's rules (a remote bank and MLflow server)."""
    from seppo_lib.steps import validate_config

    validate_config.run(cfg.to_json(), shared_storage=shared_storage)


def _package_for_upload(cfg: SeppoConfig, keep: str | Path | None, image: str | None, enable_caching: bool | None = None) -> Path:
    """The compiled YAML at `keep`, or in a fresh temporary directory; `enable_caching` overrides every task's."""
    path = compile_package(cfg, keep or Path(tempfile.mkdtemp(prefix="seppo-kfp-")) / package_name(cfg), image)
    if enable_caching is not None:
        set_caching(path, enable_caching)
    return path


def run_name(cfg: SeppoConfig) -> str:
    """seppo-<config name>-<git sha or 'nogit'>-<config hash[:10]>."""
    return f"seppo-{cfg.name}-{git_sha() or 'nogit'}-{cfg.config_hash()[:10]}"


def validate_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 6:
        hint = " (a five-field crontab line? put the seconds first, e.g. '0 ' + it)" if len(fields) == 5 else ""
        raise ConfigError(f"cron {expression!r} has {len(fields)} fields{hint}; {CRON_HELP}")
    return " ".join(fields)


# ---- talking to KFP -----------------------------------------------------------------


def kfp_host(host: str | None) -> str:
    host = host or os.environ.get("KFP_HOST") or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise ConfigError("no KFP API host: pass --host or set KFP_HOST (e.g. http://ml-pipeline.kubeflow.svc:8888)")
    return host.rstrip("/")


def probe_kfp(host: str, timeout: float = 5.0) -> None:
    """Raise a one-line PipelineError unless something answers HTTP at `host` (any status counts)."""
    try:
        with urllib.request.urlopen(host + KFP_HEALTHZ, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered (auth proxies say 401/403): the real request reports its own error
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise PipelineError(f"KFP at {host} unreachable ({reason}); check --host / KFP_HOST and the port-forward or VPN") from None


def kfp_client(host: str | None, namespace: str | None = None) -> Any:
    import kfp

    url = kfp_host(host)
    probe_kfp(url)
    with kfp_errors(url):
        return kfp.Client(host=url, namespace=namespace or "kubeflow")


@contextmanager
def kfp_errors(host: str) -> Iterator[None]:
    """KFP API refusals (auth, bad request) and healthz time-outs as one-line PipelineErrors."""
    from kfp_server_api.exceptions import ApiException

    try:
        yield
    except ApiException as err:
        raise PipelineError(f"KFP at {host} refused the request: {err.status} {err.reason} (check credentials / namespace)") from None
    except TimeoutError as err:
        raise PipelineError(f"KFP at {host} did not answer its health check ({err}); is it the KFP API endpoint?") from None


@dataclass
class Submitted:
    run_id: str
    run_name: str
    package: Path
    version: PipelineVersion


@dataclass
class Scheduled:
    recurring_run_id: str
    name: str
    package: Path
    version: PipelineVersion


def run_parameters(cfg: SeppoConfig, data_rev: str = "", base_model: str = "") -> dict[str, str]:
    """The pipeline's run parameters: the config, and the data revision / base model resolved inside the run."""
    from seppo_lib.identity import check_parameters

    check_parameters(cfg, data_rev)
    return {"config_json": cfg.to_json(), "data_rev": data_rev, "base_model": base_model}


def submit(cfg: SeppoConfig, *, host: str | None = None, experiment: str = "seppo", namespace: str | None = None,
           service_account: str | None = DEFAULT_SERVICE_ACCOUNT, image: str | None = None,
           enable_caching: bool | None = None, package: str | Path | None = None,
           data_rev: str = "", base_model: str = "") -> Submitted:  # fmt: skip
    """Validate with the cluster's rules, upload (or reuse) the config's pipeline version and start one run of
    it on the KFP cluster at `host` (or env KFP_HOST). `data_rev` / `base_model`: the run's pipeline
    parameters ("" = the config's data.dvc_rev / model.pretrained), resolved inside the run."""
    check_for_cluster(cfg)
    client = kfp_client(host, namespace)
    path = _package_for_upload(cfg, package, image, enable_caching)
    name = run_name(cfg)
    with kfp_errors(kfp_host(host)):
        version = upload_version(client, cfg, path, namespace, enable_caching)
        exp = client.create_experiment(name=experiment, namespace=namespace)
        result = client.run_pipeline(
            experiment_id=exp.experiment_id, job_name=name, params=run_parameters(cfg, data_rev, base_model),
            pipeline_id=version.pipeline_id, version_id=version.version_id, service_account=service_account or None,
        )  # fmt: skip
    return Submitted(result.run_id, name, path, version)


def schedule(cfg: SeppoConfig, cron: str, *, host: str | None = None, experiment: str = "seppo", job_name: str | None = None,
             namespace: str | None = None, service_account: str | None = DEFAULT_SERVICE_ACCOUNT, image: str | None = None,
             start_time: str | None = None, package: str | Path | None = None,
             data_rev: str = "", base_model: str = "") -> Scheduled:  # fmt: skip
    """Validate with the cluster's rules, upload (or reuse) the config's pipeline version and create a KFP
    recurring run of it: one run at a time, no backfill of missed runs. KFP freezes a recurring run's
    parameters, so pass `data_rev` as a branch and `base_model` as `models:/NAME@champion`: each run
    resolves them anew (the latest data, the current champion)."""
    cron = validate_cron(cron)
    check_for_cluster(cfg)
    client = kfp_client(host, namespace)
    path = _package_for_upload(cfg, package, image)
    name = job_name or f"seppo-{cfg.name}-{cfg.config_hash()[:10]}"
    with kfp_errors(kfp_host(host)):
        version = upload_version(client, cfg, path, namespace)
        exp = client.create_experiment(name=experiment, namespace=namespace)
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=name, description=f"seppo {__version__} config {cfg.name} ({run_name(cfg)})",
            start_time=start_time, cron_expression=cron, max_concurrency=1, no_catchup=True,
            params=run_parameters(cfg, data_rev, base_model), pipeline_id=version.pipeline_id, version_id=version.version_id,
            service_account=service_account or None,
        )  # fmt: skip
    return Scheduled(job.recurring_run_id, name, path, version)


# ---- kfp.local ----------------------------------------------------------------------


class _Progress(io.TextIOBase):
    """stdout during a kfp.local run: everything to the log file, task status lines also to the terminal."""

    def __init__(self, log: io.TextIOBase, echo: Any, verbose: bool) -> None:
        self.log, self.echo, self.verbose, self.pending = log, echo, verbose, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.echo.write(text)
            return len(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if _PROGRESS.search(line) and not line.startswith(" "):
                self.echo.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.echo.flush()


@dataclass
class LocalRun:
    """Where a finished `seppo run` left its results."""

    run_id: str
    bank_uri: str
    checkpoint: str
    model_pointer: Path
    report_dir: Path
    report_md: Path  # the run report, <workdir>/<run id>/report.md (with the registration)
    report_html: Path
    gate_passes: bool
    registration: dict[str, Any] | None
    exported_model: Path | None
    log_file: Path


def _failure(log_file: Path, err: Exception) -> PipelineError:
    """One line: the failed task and the last exception line its log shows."""
    match = re.search(r"Inner task failed: \W*'?([\w-]+)", re.sub(r"\x1b\[[0-9;]*m", "", str(err)))
    task = match.group(1) if match else "?"
    errors = [m for line in log_file.read_text(errors="replace").splitlines() if (m := _ERROR_LINE.match(line))]
    why = f"{errors[-1].group(1)}: {errors[-1].group(2)}" if errors else str(err).splitlines()[0]
    return PipelineError(f"pipeline failed in task {task}: {why} (full log: {log_file})")


def run_local(cfg: SeppoConfig, *, verbose: bool = False, shard_parallelism: int = 1) -> LocalRun:
    """Run the whole pipeline on this machine with kfp.local.SubprocessRunner (components run in this Python).

    Shards run one at a time by default: on one machine they share the checkpoint cache. The config is
    resolved here (`seppo_lib.identity`), so the run id printed before is the one the pipeline uses.
    """
    from kfp import local

    from seppo_lib.identity import resolve

    workdir = Path(cfg.workdir)
    try:
        cfg = resolve(cfg)
        log_file = (workdir / cfg.run_id / "kfp-local.log").resolve()
    except SeppoError:  # e.g. a data source that does not exist: the pipeline's validate_config says so
        log_file = (workdir / "kfp-local.log").resolve()
    module = pipeline_module()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str((workdir / "kfp-root").resolve()))
    pipeline = module.build_pipeline(cfg.to_json(), local=True, shard_parallelism=shard_parallelism)
    with log_file.open("w") as log, redirect_stdout(_Progress(log, sys.stdout, verbose)), warnings.catch_warnings():
        # Resources, GPUs and the image matter on a cluster only; kfp.local says so for every task.
        warnings.filterwarnings("ignore", message=r".*(no effect in the current local runner|non-Python base image).*")
        try:
            task = pipeline(config_json=cfg.to_json())
        except RuntimeError as err:
            failure = _failure(log_file, err)
            raise failure from None
    return _collect(cfg, task.outputs, log_file)


def _collect(cfg: SeppoConfig, outputs: dict[str, Any], log_file: Path) -> LocalRun:
    """What the tasks left, and the run report rewritten into <workdir>/<run id>/ with the registration."""
    from seppo_lib.evaluation.run_report import write_run_report
    from seppo_lib.steps.common import run_dir

    model_dir, report_dir = Path(outputs["model"].path), Path(outputs["report"].path)
    pointer = json.loads((model_dir / "checkpoint.json").read_text())
    metrics = json.loads((report_dir / "metrics.json").read_text())
    registrations = sorted(report_dir.parent.parent.glob("**/register/registration"))
    registration = json.loads(registrations[-1].read_text()) if registrations else None
    report_md, report_html = write_run_report(cfg, report_dir, run_dir(cfg).resolve(), registration=registration)
    exported = (Path(cfg.workdir) / cfg.run_id / "exports" / pointer["checkpoint"]).resolve()
    return LocalRun(
        run_id=cfg.run_id,
        bank_uri=pointer["bank_uri"],
        checkpoint=pointer["checkpoint"],
        model_pointer=model_dir / "checkpoint.json",
        report_dir=report_dir,
        report_md=report_md,
        report_html=report_html,
        gate_passes=bool(metrics["gate"]["passes"]),
        registration=registration,
        exported_model=exported if exported.is_dir() else None,
        log_file=log_file,
    )
