"""KFP pipeline versions: one pipeline per config name, one version per package, config and code.

`seppo pipeline submit|schedule` upload the compiled package as version
`<package version>-<config hash[:10]>-<git sha[:7]>` of the KFP pipeline `seppo-<config name>`
and start runs of that version. A version of that name that already exists is reused when it
holds the same package (its sha256 is recorded in the version's description); one holding
another package (uncommitted changes, another image) is refused, never silently run.
Caching cannot be overridden for a run of a version, so `--no-cache` is compiled into the
package and names its own version (`...-nocache`). No kfp import: `client` is a `kfp.Client`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seppo_lib import __version__
from seppo_lib.config import SeppoConfig
from seppo_lib.errors import SeppoError

SOURCE_ROOT = Path(__file__).resolve().parent.parent


class PipelineVersionError(SeppoError):
    """A KFP pipeline or version of the expected name is ambiguous or holds another package."""


def git_sha() -> str | None:
    """Short SHA of the code: env SEPPO_GIT_SHA (set in the image), else `git rev-parse --short HEAD`."""
    if os.environ.get("SEPPO_GIT_SHA"):
        return os.environ["SEPPO_GIT_SHA"][:7]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SOURCE_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def pipeline_name(cfg: SeppoConfig) -> str:
    """The KFP pipeline a config's versions are uploaded to: seppo-<config name>."""
    return f"seppo-{cfg.name}"


def version_name(cfg: SeppoConfig, enable_caching: bool | None = None) -> str:
    """<package version>-<config hash[:10]>-<git sha[:7] or 'nogit'>, '-cache' / '-nocache' when caching is overridden."""
    suffix = {None: "", True: "-cache", False: "-nocache"}[enable_caching]
    return f"{__version__}-{cfg.config_hash()[:10]}-{(git_sha() or 'nogit')[:7]}{suffix}"


def set_caching(path: Path, enabled: bool) -> None:
    """Every task of the compiled YAML (ParallelFor bodies included) caches or not: a run of a pipeline
    version cannot override caching at submission, so the choice is compiled into its package."""
    import yaml

    spec, *platform = yaml.safe_load_all(path.read_text())
    for dag in [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]:
        for task in dag["tasks"].values():
            task.setdefault("cachingOptions", {})["enableCache"] = enabled
    path.write_text(yaml.safe_dump_all([spec, *platform], sort_keys=False))


@dataclass
class PipelineVersion:
    """The KFP pipeline version a run references."""

    pipeline_id: str
    version_id: str
    pipeline_name: str
    version_name: str
    uploaded: bool  # False: an existing version of that name (and package) was reused


_PACKAGE_DIGEST = re.compile(r"package sha256:([0-9a-f]{64})")


def _named(name: str) -> str:
    """KFP list filter: display_name EQUALS name (operation 1, as kfp.Client.get_pipeline_id)."""
    return json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})


def _pipeline_id(client: Any, cfg: SeppoConfig, package: Path, namespace: str | None) -> str:
    """The id of the KFP pipeline `pipeline_name(cfg)`, uploaded from `package` when missing (KFP then also
    files the package as that pipeline's first version, named like the pipeline)."""
    name = pipeline_name(cfg)
    found = client.list_pipelines(filter=_named(name), namespace=namespace).pipelines or []
    if len(found) > 1:
        raise PipelineVersionError(f"KFP has {len(found)} pipelines named {name!r}; delete the extra ones in the KFP UI")
    if found:
        return str(found[0].pipeline_id)
    description = f"seppo SePPO pipeline of config {cfg.name!r}; versions <package>-<config hash>-<git sha>"
    return str(client.upload_pipeline(str(package), pipeline_name=name, description=description, namespace=namespace).pipeline_id)


def upload_version(client: Any, cfg: SeppoConfig, package: Path, namespace: str | None = None,
                   enable_caching: bool | None = None) -> PipelineVersion:  # fmt: skip
    """The pipeline version `version_name(cfg)` of pipeline `pipeline_name(cfg)`, uploaded from `package`
    unless a version of that name exists; an existing one is reused only if it holds the same package
    (sha256 recorded in its description), else a one-line PipelineVersionError says why it differs."""
    digest = hashlib.sha256(package.read_bytes()).hexdigest()
    pipeline_id = _pipeline_id(client, cfg, package, namespace)
    name = version_name(cfg, enable_caching)
    found = client.list_pipeline_versions(pipeline_id, filter=_named(name)).pipeline_versions or []
    if found:
        recorded = _PACKAGE_DIGEST.search(found[0].description or "")
        if recorded is None or recorded.group(1) != digest:
            raise PipelineVersionError(
                f"KFP pipeline {pipeline_name(cfg)!r} already has a version {name!r} with another package (sha256 "
                f"{recorded.group(1)[:12] if recorded else 'unrecorded'}, this one {digest[:12]}): uncommitted changes or "
                "another --image? commit them (the name carries the git SHA) or delete that version in the KFP UI"
            )
        return PipelineVersion(pipeline_id, str(found[0].pipeline_version_id), pipeline_name(cfg), name, uploaded=False)
    description = (f"seppo {__version__}, config {cfg.name} {cfg.config_hash()[:10]}, git {git_sha() or 'nogit'}; "
                   f"package sha256:{digest}")  # fmt: skip
    made = client.upload_pipeline_version(str(package), name, pipeline_id=pipeline_id, description=description)
    return PipelineVersion(pipeline_id, str(made.pipeline_version_id), pipeline_name(cfg), name, uploaded=True)
