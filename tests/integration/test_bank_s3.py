"""The checkpoint bank on a real S3 server (moto over HTTP): commit protocol, crashes,
concurrent writers, download-once cache, corruption, and `seppo bank ls|show|gc`."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from seppo_lib.bank import CheckpointBank
from seppo_lib.bank_admin import gc, registered_checkpoints, show_run
from seppo_lib.cli import main as seppo
from seppo_lib.errors import CheckpointError
from seppo_lib.storage import StorageError, open_store, sha256_file
from seppo_lib.storage.s3 import S3Store, parse_s3_uri
from tests.integration.conftest import s3_client
from tests.mlflow_server import MlflowServer, mlflow_server  # noqa: F401 - fixture

pytestmark = pytest.mark.servers
RUN = "run-1"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ckpt(root: Path, tag: str, size: int = 2048) -> Path:
    """A checkpoint-shaped folder: unet weights + config and a training-state file."""
    folder = root / f"src-{tag}"
    (folder / "unet").mkdir(parents=True)
    (folder / "state").mkdir()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(size))
    (folder / "unet" / "config.json").write_text(json.dumps({"tag": tag}))
    (folder / "state" / "trainer.json").write_text(json.dumps({"global_step": 1}))
    return folder


def _bank(uri: str, tmp: Path, name: str = "cache") -> CheckpointBank:
    """A bank object with its own store and cache (as a separate process would have)."""
    return CheckpointBank(open_store(uri), RUN, tmp / name)


def _fill(uri: str, tmp: Path, rounds: int) -> CheckpointBank:
    bank = _bank(uri, tmp)
    bank.commit(_ckpt(tmp, "initial"), "initial", round_idx=0, step=0, parent=None)
    parent = "initial"
    for k in range(1, rounds + 1):
        bank.commit(_ckpt(tmp, f"r{k}"), f"ckpt-{k:06d}", round_idx=k, step=k, parent=parent)
        parent = f"ckpt-{k:06d}"
    return bank


def _spy(monkeypatch: pytest.MonkeyPatch, store: Any, log: list[tuple[str, str]], *names: str) -> None:
    for name in names:
        original = getattr(store, name)

        def spy(key_or_local: Any, *args: Any, _name: str = name, _original: Callable[..., Any] = original) -> Any:
            key = args[0] if _name == "put_file" else key_or_local
            log.append((_name, str(key)))
            return _original(key_or_local, *args)

        monkeypatch.setattr(store, name, spy)


def test_commit_uploads_and_verifies_every_file_before_the_manifest(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bank = _fill(s3_bucket, tmp_path, 0)
    log: list[tuple[str, str]] = []
    _spy(monkeypatch, bank.store, log, "put_file", "get_file", "write_if")
    src = _ckpt(tmp_path, "one")
    bank.commit(src, "ckpt-000001", round_idx=1, step=1, parent="initial")
    kinds = [k for k, _ in log]
    assert kinds == ["put_file"] * 3 + ["get_file"] * 3 + ["write_if"], log
    assert log[-1][1] == f"{RUN}/manifest.json"
    reader = _bank(s3_bucket, tmp_path, "reader-cache")
    assert reader.ids() == ["initial", "ckpt-000001"]
    local = reader.fetch("ckpt-000001")
    for rel, sha in reader.entry("ckpt-000001").files.items():
        assert sha256_file(local / rel) == sha == sha256_file(src / rel)


@pytest.mark.parametrize("crash_in", ["put_file", "write_if"])
def test_a_crashed_upload_is_never_selectable(crash_in: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer dies after uploading one file (put_file) or every verified file (write_if)."""
    bank = _fill(s3_bucket, tmp_path, 1)
    original, calls = getattr(bank.store, crash_in), []

    def crash(*args: Any) -> Any:
        calls.append(args)
        if crash_in == "write_if" or len(calls) == 2:
            raise KeyboardInterrupt("writer killed")
        return original(*args)

    monkeypatch.setattr(bank.store, crash_in, crash)
    with pytest.raises(KeyboardInterrupt):
        bank.commit(_ckpt(tmp_path, "two"), "ckpt-000002", round_idx=2, step=2, parent="ckpt-000001")
    reader = _bank(s3_bucket, tmp_path, "reader-cache")
    assert reader.ids() == ["initial", "ckpt-000001"] and reader.entry_for_round(2) is None
    with pytest.raises(CheckpointError, match="'ckpt-000002' is not committed"):
        reader.fetch("ckpt-000002")
    leftovers = show_run(s3_bucket, RUN)[1]
    assert leftovers and all(k.startswith(f"{RUN}/ckpt-000002/") for k in leftovers)
    print(f"crash in {crash_in}: {len(leftovers)} uncommitted file(s) left, manifest lists {reader.ids()}")
    plan = gc(s3_bucket, RUN)
    assert set(plan.leftovers) == set(leftovers) and show_run(s3_bucket, RUN)[1] == {}
    monkeypatch.undo()
    bank.commit(_ckpt(tmp_path, "two-again"), "ckpt-000002", round_idx=2, step=2, parent="ckpt-000001")
    assert reader.fetch("ckpt-000002").is_dir()


def _interleave(monkeypatch: pytest.MonkeyPatch, bank: CheckpointBank, other: Callable[[], Any]) -> None:
    """Run `other` just before `bank`'s first manifest write, i.e. after both read the same version."""
    original, done = bank.store.write_if, []

    def write_if(key: str, data: bytes, expected: str | None) -> str:
        if not done:
            done.append(other())
        return original(key, data, expected)

    monkeypatch.setattr(bank.store, "write_if", write_if)


def test_concurrent_writers_both_listed_or_a_clear_error(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _fill(s3_bucket, tmp_path, 0)
    a, b = _bank(s3_bucket, tmp_path, "a"), _bank(s3_bucket, tmp_path, "b")
    # different checkpoints: b commits between a's manifest read and a's write -> a re-reads, both listed
    _interleave(monkeypatch, a, lambda: b.commit(_ckpt(tmp_path, "b1"), "ckpt-000011", round_idx=1, step=1, parent="initial"))
    with caplog.at_level(logging.WARNING):
        a.commit(_ckpt(tmp_path, "a1"), "ckpt-000001", round_idx=1, step=1, parent="initial")
    assert "changed while committing ckpt-000001; retrying" in caplog.text
    assert sorted(_bank(s3_bucket, tmp_path, "r1").ids()) == ["ckpt-000001", "ckpt-000011", "initial"]
    # the same checkpoint id: the later writer gets a clear CheckpointError, the earlier one's entry stands
    monkeypatch.undo()
    winner = _ckpt(tmp_path, "b2")
    _interleave(monkeypatch, a, lambda: b.commit(winner, "ckpt-2", round_idx=2, step=2, parent="ckpt-000011"))
    with pytest.raises(CheckpointError, match="ckpt-2 was committed concurrently by another writer"):
        a.commit(_ckpt(tmp_path, "a2"), "ckpt-2", round_idx=2, step=2, parent="ckpt-000001")
    reader = _bank(s3_bucket, tmp_path, "r2")
    assert [e.id for e in reader.entries()].count("ckpt-2") == 1
    fetched = reader.fetch("ckpt-2")  # verifies every sha256 against the manifest
    assert (fetched / "unet/config.json").read_text() == (winner / "unet/config.json").read_text()


def test_a_reference_used_in_several_rounds_is_downloaded_once(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DPO's reference is θ_0 in every round: over 3 rounds every checkpoint file is fetched once."""
    from seppo_lib.orchestrate import run_rounds
    from seppo_lib.tracking import InMemoryLogger
    from tests.helpers import make_image_folder, tiny_config

    fetched: list[str] = []
    original = S3Store.get_file

    def get_file(self: S3Store, key: str, local: Any) -> None:
        if ".partial" in str(local):  # the bank's fetch (the commit's verification reads into a temp dir)
            fetched.append(key)
        original(self, key, local)

    monkeypatch.setattr(S3Store, "get_file", get_file)
    data = make_image_folder(tmp_path / "data", n=8, paired=True)
    cfg = tiny_config(tmp_path, data, "train.method=dpo", "train.updates_per_round=2", f"bank.uri={s3_bucket}/bank")
    run_logger = InMemoryLogger()
    run_rounds(cfg, run_logger)
    assert {m["ref_ckpt"] for _, m in run_logger.metrics} == {0.0}  # θ_0 was the reference in all 3 rounds
    initial = [k for k in fetched if "/initial/" in k]
    print(f"checkpoint files fetched over 3 rounds: {len(fetched)} ({len(initial)} of θ_0); duplicates: {len(fetched) - len(set(fetched))}")
    assert initial and len(fetched) == len(set(fetched))
    bank = CheckpointBank.open(cfg.bank.uri, cfg.run_id, cfg.bank.cache_dir)
    for _ in range(3):
        bank.fetch("initial")
    assert bank.downloads == 0 and len(fetched) == len(set(fetched))  # served from the verified cache


@pytest.mark.parametrize("metadata", ["dropped", "kept"])
def test_a_corrupted_checkpoint_file_is_refused_naming_the_file(metadata: str, s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    """Bytes flipped in S3: with the object's sha256 metadata gone the bank's manifest check catches
    it; with stale metadata kept, the store's integrity check does. Either way the file is named."""
    _fill(s3_bucket, tmp_path, 1)
    bucket, prefix = parse_s3_uri(s3_bucket)
    rel = _bank(s3_bucket, tmp_path, "probe").entry("ckpt-000001").key(RUN, "unet/diffusion_pytorch_model.safetensors")
    key = f"{prefix}/{rel}"
    client = s3_client(s3_server)
    obj = client.get_object(Bucket=bucket, Key=key)
    body = bytearray(obj["Body"].read())
    body[100] ^= 0xFF
    extra = {"Metadata": obj["Metadata"]} if metadata == "kept" else {}
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body), **extra)
    reader = _bank(s3_bucket, tmp_path, "fresh-cache")
    with pytest.raises((CheckpointError, StorageError)) as err:
        reader.fetch("ckpt-000001")
    print(f"corrupt file ({metadata} metadata): {type(err.value).__name__}: {err.value}")
    assert f"{s3_bucket}/{rel}" in str(err.value)
    assert "\n" not in str(err.value) and not (reader.cache_dir / "ckpt-000001").exists()
    assert reader.fetch("initial").is_dir()  # the other checkpoints are unaffected


# ---- seppo bank ls | show | gc -----------------------------------------------------------


def _register(tracking_uri: str, model: str, tmp: Path, ckpt: str, bank_run: str) -> None:
    from seppo_lib.registry import register_checkpoint
    from seppo_lib.tracking.mlflow_logger import MlflowLogger

    run = MlflowLogger.open(tracking_uri, f"bank-gc-{model}", f"register-{ckpt}")
    run.close()
    register_checkpoint(
        _ckpt(tmp, f"reg-{ckpt}-{bank_run}"), tracking_uri=tracking_uri, model_name=model, run_id=str(run.run_id),
        metrics={"world": 0.5}, gate_metric="world", tags={"seppo.checkpoint": ckpt, "seppo.bank_run_id": bank_run},
    )  # fmt: skip


def test_gc_keeps_initial_registered_and_last_n(s3_bucket: str, tmp_path: Path, mlflow_server: MlflowServer,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    bank = _fill(s3_bucket, tmp_path, 4)
    original = bank.store.write_if
    monkeypatch.setattr(bank.store, "write_if", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # a crashed upload leaves ckpt-000005 files
        bank.commit(_ckpt(tmp_path, "r5"), "ckpt-000005", round_idx=5, step=5, parent="ckpt-000004")
    monkeypatch.setattr(bank.store, "write_if", original)
    model = f"seppo-{uuid.uuid4().hex[:8]}"
    _register(mlflow_server.url, model, tmp_path, "ckpt-000002", RUN)
    _register(mlflow_server.url, model, tmp_path, "ckpt-000001", "another-run")  # protects nothing here
    assert registered_checkpoints(RUN, [model], mlflow_server.url) == {"ckpt-000002": f"{model} v1"}
    before = open_store(s3_bucket).sizes(RUN + "/")
    capsys.readouterr()

    assert seppo(["bank", "ls", s3_bucket]) == 0
    out = capsys.readouterr().out
    assert out.split("\n")[1].split()[:4] == [RUN, "5", "4", "ckpt-000004"], out
    assert seppo(["bank", "show", s3_bucket, RUN]) == 0
    out = capsys.readouterr().out
    assert out.split("\n")[2].split()[:5] == ["ckpt-000001", "1", "1", "initial", "3"], out
    assert "5 committed checkpoint(s)" in out and "3 uncommitted file(s)" in out

    args = ["bank", "gc", s3_bucket, RUN, "--keep-last", "1", "--tracking-uri", mlflow_server.url, "--model-name", model]
    assert seppo([*args, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert open_store(s3_bucket).sizes(RUN + "/") == before  # a dry run deletes nothing
    removed = [k for k in before if k.startswith((f"{RUN}/ckpt-000001/", f"{RUN}/ckpt-000003/", f"{RUN}/ckpt-000005/"))]
    freed = sum(before[k] for k in removed)
    assert "would free" in dry and f"({freed} bytes) -- dry run, nothing deleted" in dry

    log: list[tuple[str, str]] = []
    for name in ("write_if", "delete"):
        def spy(self: S3Store, key: str, *args: Any, _name: str = name, _original: Any = getattr(S3Store, name)) -> Any:
            log.append((_name, key))
            return _original(self, key, *args)

        monkeypatch.setattr(S3Store, name, spy)
    assert seppo(args) == 0
    out = capsys.readouterr().out
    print(out)
    assert "kept initial: θ_0, always kept" in out and f"kept ckpt-000002: registered as {model} v1" in out
    assert "kept ckpt-000004: among the last 1" in out and "freed" in out and f"({freed} bytes)" in out
    assert log[0] == ("write_if", f"{RUN}/manifest.json") and {k for op, k in log[1:]} == set(removed)
    reader = _bank(s3_bucket, tmp_path, "after-gc")
    assert reader.ids() == ["initial", "ckpt-000002", "ckpt-000004"]
    assert set(open_store(s3_bucket).sizes(RUN + "/")) == set(before) - set(removed)
    for ckpt in reader.ids():
        reader.fetch(ckpt)  # everything still listed is complete


@pytest.fixture(params=["s3", "local"])
def bank_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(request.getfixturevalue("s3_bucket")) if request.param == "s3" else str(tmp_path / "bank")


def test_gc_refuses_to_guess_and_names_unknown_runs(bank_root: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _fill(bank_root, tmp_path, 2)
    open_store(bank_root).put_bytes("orphan/initial/unet/config.json", b"{}")  # died before its first commit
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert seppo(["bank", "gc", bank_root, RUN, "--keep-last", "0"]) == 2
    assert "--keep-last removes committed checkpoints" in capsys.readouterr().err
    assert seppo(["bank", "show", bank_root, "nope"]) == 2
    assert f"no bank run 'nope' under {open_store(bank_root).uri} (runs: orphan, {RUN})" in capsys.readouterr().err
    assert seppo(["bank", "ls", bank_root]) == 0
    rows = [line.split()[:3] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [["orphan", "0", "(no"], [RUN, "3", "2"]]
    assert _bank(bank_root, tmp_path).ids() == ["initial", "ckpt-000001", "ckpt-000002"]
    plan = gc(bank_root, RUN, keep_last=0)  # library call: nothing registered, keep none -> only θ_0 stays
    assert [e.id for e in plan.remove] == ["ckpt-000001", "ckpt-000002"] and not plan.leftovers
    assert _bank(bank_root, tmp_path, "r").ids() == ["initial"] and _bank(bank_root, tmp_path, "r").fetch("initial").is_dir()
    with pytest.raises(CheckpointError, match="gc refused: .*orphan has no manifest.json"):
        gc(bank_root, "orphan")  # no manifest: every file would look uncommitted
    assert set(gc(bank_root, "orphan", force=True).leftovers) == {"orphan/initial/unet/config.json"}
    assert open_store(bank_root).list("orphan/") == []


def test_gc_replans_when_a_writer_commits_meanwhile(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(s3_bucket, tmp_path, 2)
    writer = _bank(s3_bucket, tmp_path, "writer")
    original, done = S3Store.write_if, []

    def write_if(self: S3Store, key: str, data: bytes, expected: str | None) -> str:
        if not done and self is not writer.store:
            done.append(writer.commit(_ckpt(tmp_path, "r3"), "ckpt-000003", round_idx=3, step=3, parent="ckpt-000002"))
        return original(self, key, data, expected)

    monkeypatch.setattr(S3Store, "write_if", write_if)
    plan = gc(s3_bucket, RUN, keep_last=1)
    assert [e.id for e in plan.remove] == ["ckpt-000001", "ckpt-000002"]  # planned again on the new manifest
    assert _bank(s3_bucket, tmp_path, "r").ids() == ["initial", "ckpt-000003"]


@pytest.mark.parametrize("hostile", ["absolute id", "climbing id", "absolute file key", "empty id"])
def test_a_hostile_manifest_is_one_line_everywhere(hostile: str, bank_root: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ls, show, gc, fetch and a resume's manifest read all stop with one line; nothing outside is touched."""
    bank = _fill(bank_root, tmp_path, 1)
    outside = tmp_path / "outside"
    (outside / "unet").mkdir(parents=True)
    (outside / "keep.txt").write_text("keep")
    doc = json.loads(bank.store.get_bytes(f"{RUN}/manifest.json"))
    bad = dict(doc["entries"][1])
    if hostile == "absolute file key":
        rel = next(iter(bad["files"]))
        bad["files"] = {str(outside / "unet" / "evil.bin"): bad["files"][rel]}
        bank.store.put_bytes(f"{RUN}/{bad['id']}{outside}/unet/evil.bin", b"x")  # where join() used to point
    else:
        bad["id"] = {"absolute id": str(outside), "climbing id": "../../..", "empty id": ""}[hostile]
    doc["entries"].append({**bad, "round": 2, "parent": doc["entries"][1]["id"]})
    bank.store.put_bytes(f"{RUN}/manifest.json", json.dumps(doc).encode())
    before = open_store(bank_root).list("")
    uri = open_store(bank_root).describe(f"{RUN}/manifest.json")
    for argv in (["ls", bank_root], ["show", bank_root, RUN], ["gc", bank_root, RUN], ["gc", bank_root, RUN, "--dry-run"]):
        assert seppo(["bank", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and uri in err and "entry #2" in err, err
    reader = _bank(bank_root, tmp_path, "reader")
    for read in (reader.entries, lambda: reader.fetch(bad["id"]), lambda: reader.entry_for_round(1)):
        with pytest.raises(CheckpointError, match="entry #2"):
            read()
    assert open_store(bank_root).list("") == before
    assert sorted(p.name for p in outside.rglob("*")) == ["keep.txt", "unet"]
