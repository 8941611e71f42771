"""The retraining lifecycle, in-process: a local git + DVC data repo, a sqlite MLflow registry, tiny models.

Run 1 trains on data revision A (branch `main`) from the base model -> version 1. Run 2, the same
inputs again, is a no-op with the same run id. Revision B is committed to `main`: run 3 starts from
version 1 (`models:/<name>@champion`, or `@challenger` when the gate kept no champion), trains on B, is
evaluated against that model and registered as version 2, whose lineage names B's SHA and version 1.
Then CI reproducibility: run 3's config, data SHA and base version on a fresh workdir give the same
run id and bit-identical weights.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from seppo_lib.cli import main
from seppo_lib.config import SeppoConfig, load_config
from seppo_lib.identity import resolve
from seppo_lib.orchestrate import run_rounds
from seppo_lib.registry import RegistryError
from seppo_lib.steps import evaluate, register
from seppo_lib.steps.common import open_bank
from tests.helpers import make_image_folder

MODEL = "lifecycle"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
FAST = ["train.method=sft", "train.n_rounds=1", "train.updates_per_round=2", "train.warmup_steps=0",
        "eval.max_prompts=2", "eval.bootstrap=100", "sampling.num_inference_steps=2"]  # fmt: skip


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env={**os.environ, **GIT_ENV}, check=True)
    return out.stdout.strip()


def commit_images(repo: Path, n: int, message: str) -> str:
    """(Re)write data/images with n images, `dvc add` it, commit on main; returns the commit SHA."""
    from dvc.repo import Repo

    make_image_folder(repo / "data" / "images", n=n)
    with Repo(str(repo)) as dvc:
        dvc.add(str(repo / "data" / "images"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def overrides(ctx: dict[str, Any], work: Path, *extra: str) -> list[str]:
    """What a user (or the scheduler) runs: data on branch main of the DVC repo, tracking into one sqlite MLflow."""
    return [
        f"workdir={work}", f"bank.uri={work / 'bank'}", f"bank.cache_dir={work / 'cache'}", f"data.dvc_repo={ctx['repo']}",
        "data.source=data/images", "data.dvc_rev=main", *FAST, "tracking.enabled=true", f"tracking.mlflow_uri={ctx['db']}",
        f"registry.model_name={MODEL}", *extra,
    ]  # fmt: skip


def config(ctx: dict[str, Any], work: Path, *extra: str) -> SeppoConfig:
    return load_config("tiny", overrides(ctx, work, *extra))


def train_evaluate_register(cfg: SeppoConfig, work: Path, champion: str | None = None) -> dict[str, Any]:
    summary = run_rounds(cfg)
    candidate = f"bank:{summary.final_checkpoint}"
    evaluate.run(cfg, candidate, work / "eval" / summary.run_id, champion=champion)
    return {"summary": summary, "registration": register.run(cfg, candidate, work / "eval" / summary.run_id)}


def weights(cfg: SeppoConfig, ckpt: str) -> dict[str, torch.Tensor]:
    return load_file(str(open_bank(cfg).fetch(ckpt) / WEIGHTS))


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lifecycle")
    repo = root / "data-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "seppo-test")
    git(repo, "config", "user.email", "seppo-test@example.invalid")
    from dvc.repo import Repo

    Repo.init(str(repo)).close()
    ctx: dict[str, Any] = {"root": root, "repo": repo, "db": f"sqlite:///{root / 'mlflow.db'}", "work": root / "work"}
    ctx["sha_a"] = commit_images(repo, 8, "data A")
    # run 1: revision A, from the base model
    ctx["cfg1"] = resolve(config(ctx, ctx["work"], "model.pretrained=builtin:tiny-random"))
    ctx["run1"] = train_evaluate_register(ctx["cfg1"], ctx["work"])
    # run 2: the same inputs again
    ctx["run2"] = run_rounds(config(ctx, ctx["work"], "model.pretrained=builtin:tiny-random"))
    # revision B on main; run 3 from the registry's version 1 (the champion when the gate promoted it)
    ctx["sha_b"] = commit_images(repo, 12, "data B")
    aliases = MlflowClient(ctx["db"]).get_registered_model(MODEL).aliases
    ctx["champion_before"] = str(aliases["champion"]) if "champion" in aliases else None
    ctx["base3"] = f"models:/{MODEL}@{'champion' if 'champion' in aliases else 'challenger'}"  # both name v1
    ctx["cfg3"] = resolve(config(ctx, ctx["work"], f"model.pretrained={ctx['base3']}"))
    ctx["run3"] = train_evaluate_register(ctx["cfg3"], ctx["work"], champion=ctx["base3"])
    return ctx


def test_scheduled_runs_train_on_new_data_from_the_champion(lifecycle: dict[str, Any]) -> None:
    ctx = lifecycle
    cfg1, cfg3 = ctx["cfg1"], ctx["cfg3"]
    # run 1: the branch was pinned to A's SHA and registered as version 1
    assert (cfg1.data.dvc_rev, cfg1.resolved.data_rev, cfg1.resolved.data_rev_requested) == (ctx["sha_a"], ctx["sha_a"], "main")
    assert ctx["run1"]["registration"]["version"] == "1"
    # run 2: same identity -> nothing trained, one clear line
    run2 = ctx["run2"]
    assert run2.run_id == cfg1.run_id and [r["checkpoint"] for r in run2.rounds] == [ctx["run1"]["summary"].final_checkpoint]
    assert run2.already_trained == f"already trained: {cfg1.run_id} (data {ctx['sha_a'][:12]}, base builtin:tiny-random (" + \
        cfg1.resolved.base_model.rsplit("@", 1)[1][:12] + "))"  # fmt: skip
    assert open_bank(cfg1).ids() == ["initial", ctx["run1"]["summary"].final_checkpoint]
    # run 3: new data and the registered base -> a new run, trained on B from version 1
    assert cfg3.run_id != cfg1.run_id and cfg3.resolved.data_rev == ctx["sha_b"]
    assert cfg3.model.pretrained == cfg3.resolved.base_model == f"models:/{MODEL}/1"
    assert cfg3.resolved.base_model_requested == ctx["base3"]
    v1_unet = weights(cfg1, ctx["run1"]["summary"].final_checkpoint)
    theta0 = weights(cfg3, "initial")
    assert theta0.keys() == v1_unet.keys() and all(torch.equal(theta0[k], v1_unet[k]) for k in v1_unet)
    reg = ctx["run3"]["registration"]
    assert reg["version"] == "2" and reg["decision"] in ("promoted", "rejected")
    client = MlflowClient(ctx["db"])
    aliases = {alias: str(v) for alias, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases["challenger"] == "2" and aliases.get("champion") == ("2" if reg["decision"] == "promoted" else ctx["champion_before"])
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["seppo.data_rev"] == ctx["sha_b"] and tags["seppo.base_model"] == f"models:/{MODEL}/1"
    assert tags["seppo.run_id"] == cfg3.run_id and tags["seppo.data_version"] == cfg3.resolved.data_version
    # the prepare_data MLflow run of run 3 carries the same identity
    runs = client.search_runs([client.get_experiment_by_name("seppo").experiment_id],
                              f"tags.`seppo.step` = 'prepare_data' and tags.`seppo.run_id` = '{cfg3.run_id}'")  # fmt: skip
    assert [r.data.tags["seppo.data_rev"] for r in runs] == [ctx["sha_b"]]


def test_an_empty_registry_needs_an_explicit_fallback(lifecycle: dict[str, Any]) -> None:
    ctx = lifecycle
    missing = f"model.pretrained=models:/{MODEL}-new@champion"
    with pytest.raises(RegistryError, match=rf"no registered model '{MODEL}-new'"):
        resolve(config(ctx, ctx["work"], missing))
    with pytest.raises(RegistryError, match=rf"model '{MODEL}' has no alias 'nope' .*versions: v1"):
        resolve(config(ctx, ctx["work"], f"model.pretrained=models:/{MODEL}@nope"))
    with pytest.raises(RegistryError, match=rf"model '{MODEL}' has no version 9"):  # a version never falls back
        resolve(config(ctx, ctx["work"], f"model.pretrained=models:/{MODEL}/9", "model.fallback=builtin:tiny-random"))
    fell = resolve(config(ctx, ctx["work"], missing, "model.fallback=builtin:tiny-random"))
    assert fell.model.pretrained == "builtin:tiny-random" and fell.resolved.fallback is True
    assert fell.resolved.base_model == ctx["cfg1"].resolved.base_model and fell.run_id != ctx["cfg1"].run_id


def test_same_config_data_sha_and_base_version_give_bit_identical_weights(lifecycle: dict[str, Any]) -> None:
    """CI: the pinned config of run 3 on a fresh workdir, bank and cache (the base downloaded again)."""
    ctx = lifecycle
    pins = [f"data.dvc_rev={ctx['sha_b']}", f"model.pretrained={ctx['cfg3'].resolved.base_model}"]
    fresh = resolve(config(ctx, ctx["root"] / "ci", *pins))
    assert fresh.run_id == ctx["cfg3"].run_id  # locations are not part of the identity
    summary = run_rounds(fresh)
    assert summary.already_trained is None and open_bank(fresh).uri != open_bank(ctx["cfg3"]).uri
    ckpt = summary.final_checkpoint
    assert ckpt == ctx["run3"]["summary"].final_checkpoint
    ours, theirs = open_bank(fresh).fetch(ckpt) / WEIGHTS, open_bank(ctx["cfg3"]).fetch(ckpt) / WEIGHTS
    assert ours.read_bytes() == theirs.read_bytes()


def test_evaluate_takes_registry_uris(lifecycle: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`seppo evaluate --model/--against models:/...`: versions from the cache, a missing one is one line."""
    where = overrides(lifecycle, lifecycle["work"])
    argv = ["evaluate", "--config", "tiny", "--against", f"models:/{MODEL}/1", "--out", str(tmp_path / "eval"), *where]
    assert main([*argv, "--model", f"models:/{MODEL}@challenger"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (metrics["candidate"], metrics["champion"]) == (f"models:/{MODEL}@challenger", f"models:/{MODEL}/1")
    capsys.readouterr()
    assert main([*argv, "--model", f"models:/{MODEL}/7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"model '{MODEL}' has no version 7" in err[0] and "versions: v1" in err[0]
