"""Model registry: gate, champion/challenger aliases, rollback, download, CLI."""

from __future__ import annotations

import argparse
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from seppo_lib.cli.registry import add_commands
from seppo_lib.registry import (
    RegistrationResult,
    RegistryError,
    download,
    gate,
    list_versions,
    parse_model_uri,
    promote,
    register_checkpoint,
    rollback,
)
from seppo_lib.tracking.mlflow_logger import MlflowLogger, TrackingError
from tests.mlflow_server import MlflowServer, free_port, mlflow_server  # noqa: F401 - fixture

servers = pytest.mark.servers


def _checkpoint(root: Path, tag: str) -> Path:
    folder = root / f"ckpt-{tag}"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights.safetensors").write_bytes(f"weights of {tag}".encode() * 8)
    (folder / "meta.json").write_text(f'{{"tag": "{tag}"}}')
    return folder


def _run(uri: str, name: str) -> str:
    logger = MlflowLogger.open(uri, "registry-tests", name)
    logger.close()
    return str(logger.run_id)


def _register(uri: str, model: str, folder: Path, score: float, **kw: Any) -> RegistrationResult:
    return register_checkpoint(
        folder, tracking_uri=uri, model_name=model, run_id=_run(uri, folder.name),
        metrics={"world": score, "clip": 0.3}, gate_metric="world", tags={"seppo.config_hash": "h"}, **kw,
    )  # fmt: skip


def _weights(folder: Path) -> bytes:
    return (folder / "unet" / "weights.safetensors").read_bytes()


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="seppo")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_gate_rule() -> None:
    """higher: 0.62 - 0.60 = 0.02 > 0 and >= 0.01 -> promote; 0.02 < 0.05 -> reject.
    lower: 0.30 - 0.25 = 0.05 meets a 0.05 margin exactly (float rounding gives 0.04999...); 0.30 - 0.35 < 0."""
    assert gate(0.62, 0.60, "higher", 0.01)[0] is True
    assert gate(0.62, 0.60, "higher", 0.05)[0] is False
    assert gate(0.60, 0.60, "higher", 0.0)[0] is False  # a tie never replaces the champion
    assert gate(0.25, 0.30, "lower", 0.05)[0] is True
    assert gate(0.35, 0.30, "lower", 0.0)[0] is False
    assert gate(0.1, None, "higher", 0.5) == (True, "no champion yet")
    assert gate(math.nan, 0.3, "higher", 0.0)[0] is False
    with pytest.raises(RegistryError, match="'higher' or 'lower'"):
        gate(1.0, 0.0, "up", 0.0)  # type: ignore[arg-type]


def test_parse_model_uri() -> None:
    assert parse_model_uri("models:/m@champion") == ("m", "champion", None)
    assert parse_model_uri("m@challenger") == ("m", "challenger", None)
    assert parse_model_uri("m/3") == ("m", None, "3")
    assert parse_model_uri("m") == ("m", "champion", None)
    with pytest.raises(RegistryError, match="bad model reference"):
        parse_model_uri("models:/m@")


@servers
def test_better_checkpoint_is_champion_worse_is_challenger(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    uri, model = mlflow_server.url, f"seppo-{uuid.uuid4().hex[:8]}"
    good, bad = _checkpoint(tmp_path, "good"), _checkpoint(tmp_path, "bad")
    first = _register(uri, model, good, 0.62)
    second = _register(uri, model, bad, 0.41)
    assert first.promoted and not second.promoted

    client = MlflowClient(uri)
    aliases = client.get_registered_model(model).aliases
    assert aliases == {"champion": first.version, "challenger": second.version}
    tags = client.get_model_version(model, second.version).tags
    assert tags["seppo.gate.decision"] == "rejected" and tags["seppo.gate.metric"] == "world"
    assert float(tags["seppo.gate.candidate_score"]) == 0.41 and float(tags["seppo.gate.champion_score"]) == 0.62
    assert tags["seppo.gate.champion_version"] == first.version and tags["seppo.config_hash"] == "h"
    assert float(tags["seppo.metric.clip"]) == 0.3

    dest = download(f"models:/{model}@champion", tmp_path / "dl", tracking_uri=uri)
    assert _weights(dest) == _weights(good) and (dest / "meta.json").read_text() == '{"tag": "good"}'
    rows = list_versions(model, tracking_uri=uri)
    assert [(r["version"], r["aliases"], r["decision"], r["score"]) for r in rows] == [
        (first.version, ["champion"], "promoted", 0.62),
        (second.version, ["challenger"], "rejected", 0.41),
    ]


@servers
def test_margin_blocks_small_gain_and_rollback_restores(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    uri, model = mlflow_server.url, f"seppo-{uuid.uuid4().hex[:8]}"
    base = _register(uri, model, _checkpoint(tmp_path, "base"), 0.50, min_margin=0.05)
    small = _register(uri, model, _checkpoint(tmp_path, "small"), 0.52, min_margin=0.05)
    big = _register(uri, model, _checkpoint(tmp_path, "big"), 0.60, min_margin=0.05)
    assert (base.decision, small.decision, big.decision) == ("promoted", "rejected", "promoted")
    assert big.previous_champion == base.version and big.champion == big.version
    client = MlflowClient(uri)
    assert client.get_model_version(model, big.version).tags["seppo.previous_champion"] == base.version

    assert rollback(model, tracking_uri=uri) == base.version
    assert client.get_registered_model(model).aliases["champion"] == base.version
    dest = download(model, tmp_path / "after-rollback", tracking_uri=uri)
    assert _weights(dest) == _weights(tmp_path / "ckpt-base")
    with pytest.raises(RegistryError, match="records no previous champion"):
        rollback(model, tracking_uri=uri)

    assert promote(model, big.version, tracking_uri=uri) == base.version
    assert client.get_registered_model(model).aliases["champion"] == big.version


@servers
def test_clear_errors(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    uri, model = mlflow_server.url, f"seppo-{uuid.uuid4().hex[:8]}"
    _register(uri, model, _checkpoint(tmp_path, "a"), 0.5)
    with pytest.raises(RegistryError, match=r"has no version 99 \(versions: 1\)"):
        promote(model, "99", tracking_uri=uri)
    with pytest.raises(RegistryError, match="no registered model 'nope-"):
        list_versions(f"nope-{uuid.uuid4().hex[:6]}", tracking_uri=uri)
    with pytest.raises(RegistryError, match="no alias 'staging'"):
        download(f"{model}@staging", tmp_path / "x", tracking_uri=uri)
    with pytest.raises(RegistryError, match="gate metric 'pickscore' is not among"):
        register_checkpoint(tmp_path / "ckpt-a", tracking_uri=uri, model_name=model, run_id=_run(uri, "x"),
                            metrics={"world": 1.0}, gate_metric="pickscore")  # fmt: skip
    with pytest.raises(RegistryError, match="does not exist; pass the run id"):
        register_checkpoint(tmp_path / "ckpt-a", tracking_uri=uri, model_name=model, run_id="0" * 32,
                            metrics={"world": 1.0}, gate_metric="world")  # fmt: skip
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match=rf"MLflow at {dead} unreachable"):
        list_versions(model, tracking_uri=dead)
    assert [r["version"] for r in list_versions(model, tracking_uri=uri)] == ["1"]  # nothing was lost


@servers
def test_cli_commands(mlflow_server: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, model = mlflow_server.url, f"seppo-{uuid.uuid4().hex[:8]}"
    one = _register(uri, model, _checkpoint(tmp_path, "one"), 0.5)
    two = _register(uri, model, _checkpoint(tmp_path, "two"), 0.7)
    capsys.readouterr()  # drop MLflow's own "View run" lines
    assert _cli("registry", "ls", model, "--tracking-uri", uri) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["VERSION", "ALIASES", "DECISION"]
    assert table[2].split()[:3] == [two.version, "challenger,champion", "promoted"]
    assert _cli("registry", "rollback", model, "--tracking-uri", uri) == 0
    assert f"rolled back to v{one.version}" in capsys.readouterr().out
    assert _cli("registry", "promote", model, two.version, "--tracking-uri", uri) == 0
    assert _cli("registry", "download", f"{model}@champion", str(tmp_path / "cli-dl"), "--tracking-uri", uri) == 0
    assert _weights(tmp_path / "cli-dl") == _weights(tmp_path / "ckpt-two")


def test_registry_on_local_sqlite(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _register(uri, "seppo-local", _checkpoint(tmp_path, "v1"), 0.3)
    second = _register(uri, "seppo-local", _checkpoint(tmp_path, "v2"), 0.4)
    assert first.promoted and second.promoted and second.previous_champion == first.version
    dest = download("models:/seppo-local@champion", tmp_path / "dl", tracking_uri=uri)
    assert _weights(dest) == _weights(tmp_path / "ckpt-v2")
    # registering again from the same run never overwrites the files of an earlier version
    run_id = MlflowClient(uri).get_model_version("seppo-local", second.version).run_id
    third = register_checkpoint(_checkpoint(tmp_path, "v3"), tracking_uri=uri, model_name="seppo-local",
                                run_id=run_id, metrics={"world": 0.1}, gate_metric="world")  # fmt: skip
    assert third.decision == "rejected"
    assert _weights(download(f"seppo-local/{second.version}", tmp_path / "v2", tracking_uri=uri)) == _weights(dest)
    assert _weights(download(f"seppo-local/{third.version}", tmp_path / "v3", tracking_uri=uri)) == b"weights of v3" * 8
    with pytest.raises(RegistryError, match="exists and is not an empty folder"):
        download("seppo-local", dest, tracking_uri=uri)


def test_first_candidate_must_beat_the_base_model(tmp_path: Path) -> None:
    """No champion yet: the base model's score from the same evaluation is the bar; once there is a
    champion, its score is (the base model's no longer matters)."""
    uri, model = f"sqlite:///{tmp_path / 'mlflow.db'}", "seppo-first"
    worse = _register(uri, model, _checkpoint(tmp_path, "worse"), 0.3, base_score=0.4)
    assert (worse.decision, worse.champion, worse.compared_with, worse.champion_score) == ("rejected", None, "base model", 0.4)
    assert worse.reason.startswith("no champion yet; improvement -0.1 over the base model")
    client = MlflowClient(uri)

    def aliases() -> dict[str, str]:
        return {alias: str(version) for alias, version in client.get_registered_model(model).aliases.items()}

    assert aliases() == {"challenger": worse.version}
    tags = client.get_model_version(model, worse.version).tags
    assert (tags["seppo.gate.compared_with"], tags["seppo.gate.base_score"], tags["seppo.gate.champion_score"]) == (
        "base model", "0.4", "none")  # fmt: skip

    better = _register(uri, model, _checkpoint(tmp_path, "better"), 0.5, base_score=0.4)
    assert better.promoted and better.previous_champion is None and better.reason.startswith("no champion yet; improves on the base model")
    assert aliases() == {"champion": better.version, "challenger": better.version}

    third = _register(uri, model, _checkpoint(tmp_path, "third"), 0.55, base_score=0.9)
    assert third.promoted and third.compared_with == f"champion v{better.version}" and third.champion_score == 0.5
