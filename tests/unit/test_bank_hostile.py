"""Hostile and broken bank manifests (issue 16): nothing outside the bank and cache is written or
deleted, nothing committed is lost, every bad manifest is one CheckpointError line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from seppo_lib.bank import CheckpointBank
from seppo_lib.bank_admin import gc, show_run
from seppo_lib.errors import CheckpointError
from seppo_lib.storage import LocalStore

RUN = "run1"
SHA = hashlib.sha256(b"w").hexdigest()


def _entry(ckpt: str, round_idx: int, parent: str | None, files: dict[str, str] | None = None, step: int | None = None) -> dict[str, Any]:
    return {"id": ckpt, "round": round_idx, "step": round_idx if step is None else step, "parent": parent,
            "files": {"unet/w.safetensors": SHA} if files is None else files}  # fmt: skip


def _write_manifest(store: LocalStore, *entries: dict[str, Any]) -> None:
    store.put_bytes(f"{RUN}/manifest.json", json.dumps({"run_id": RUN, "entries": list(entries)}).encode())


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A workdir as `seppo train` lays it out: bank, cache and an MLflow database side by side."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mlflow.db").write_bytes(b"runs")
    return tmp_path / "work"


def _bank(work: Path) -> CheckpointBank:
    return CheckpointBank(LocalStore(work / "bank"), RUN, work / "cache")


def _one_line(err: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    text = str(err.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text


def test_absolute_id_never_deletes_outside_the_cache(work: Path, tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.txt").write_text("keep me")
    bank = _bank(work)
    bank.store.put_bytes(f"{RUN}{outside}/unet/w.safetensors", b"w")  # where join() maps the absolute id
    _write_manifest(bank.store, _entry(str(outside), 0, None))
    with pytest.raises(CheckpointError) as err:
        bank.fetch(str(outside))
    _one_line(err, f"{work / 'bank'}/{RUN}/manifest.json", "entry #0", "is not 'initial' or 'ckpt-<digits>'")
    assert (outside / "data.txt").read_text() == "keep me"


@pytest.mark.parametrize("climb", ["..", "../../.."])
def test_climbing_id_never_wipes_the_cache_or_workdir(work: Path, climb: str) -> None:
    bank = _bank(work)
    other = bank.cache_dir.parent / "other-run"  # another run's cached checkpoints, beside this run's
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("cached")
    rel = f"{RUN}/initial/unet/w.safetensors"  # `run1/../run1/initial/...` resolves inside the bank
    bank.store.put_bytes(rel, b"w")
    _write_manifest(bank.store, _entry("initial", 0, None), _entry(climb, 1, "initial", files={rel: SHA}))
    with pytest.raises(CheckpointError) as err:
        bank.fetch(climb)
    _one_line(err, "entry #1", f"{climb!r}")
    assert (work / "mlflow.db").read_bytes() == b"runs" and (work / "bank" / RUN / "manifest.json").is_file()
    assert (other / "keep.txt").read_text() == "cached"


def test_absolute_file_key_never_writes_outside_the_cache(work: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "evil.txt"
    bank = _bank(work)
    bank.store.put_bytes(f"{RUN}/initial/unet/w.safetensors", b"w")
    bank.store.put_bytes(f"{RUN}/initial{target}", b"w")  # where join() maps the absolute file key
    _write_manifest(bank.store, _entry("initial", 0, None, files={"unet/w.safetensors": SHA, str(target): SHA}))
    with pytest.raises(CheckpointError) as err:
        bank.fetch("initial")
    _one_line(err, "entry #0", "field 'files'", "is absolute")
    assert not target.exists()


@pytest.mark.parametrize("rel", ["../../../../x.txt", "unet/../../x", "a\\b", "a//b", "./a", "a/", "", "a\x00b"])
def test_file_keys_must_stay_inside_the_checkpoint(work: Path, rel: str) -> None:
    bank = _bank(work)
    _write_manifest(bank.store, _entry("initial", 0, None, files={rel: SHA}))
    with pytest.raises(CheckpointError) as err:
        bank.entries()
    _one_line(err, "entry #0", "field 'files'", "must be a relative path inside the checkpoint")


def test_duplicate_entry_is_refused(work: Path) -> None:
    bank = _bank(work)
    _write_manifest(bank.store, _entry("initial", 0, None), _entry("ckpt-000001", 1, "initial"), _entry("ckpt-000001", 1, "initial"))
    with pytest.raises(CheckpointError) as err:
        bank.entries()
    _one_line(err, "entry #2 (ckpt-000001): duplicate id")


@pytest.mark.parametrize(
    ("entries", "rule"),
    [
        ([_entry("ckpt-000001", 1, "initial")], "parent initial is not listed before it"),
        ([_entry("initial", 0, None), _entry("ckpt-000002", 2, "initial")], "round 2 is not its parent's round 0 + 1"),
        ([_entry("initial", 0, None, step=5), _entry("ckpt-000001", 1, "initial", step=1)], "step 1 is below"),
        ([_entry("initial", 1, None)], "only 'initial' may have round 0 or no parent"),
        ([_entry("ckpt-000001", 0, None)], "only 'initial' may have round 0 or no parent"),
        ([{**_entry("initial", 0, None), "round": "0"}], "valid integer"),
        ([{**_entry("initial", 0, None), "evil": 1}], "Extra inputs are not permitted"),
        ([_entry("initial", 0, None, files={"w": "not-a-sha"})], "not 64 lowercase hex digits"),
    ],
)
def test_lineage_and_types_are_checked(work: Path, entries: list[dict[str, Any]], rule: str) -> None:
    bank = _bank(work)
    _write_manifest(bank.store, *entries)
    with pytest.raises(CheckpointError) as err:
        bank.entries()
    _one_line(err, "bank manifest", rule)


def test_duplicate_json_keys_are_refused(work: Path) -> None:
    bank = _bank(work)
    bank.store.put_bytes(f"{RUN}/manifest.json", b'{"run_id": "run1", "entries": [], "entries": []}')
    with pytest.raises(CheckpointError) as err:
        bank.entries()
    _one_line(err, "appears twice")


def _committed(work: Path, rounds: int) -> CheckpointBank:
    bank = _bank(work)
    parent = None
    for k in range(rounds + 1):
        src = work.parent / f"src{k}"
        (src / "unet").mkdir(parents=True)
        (src / "unet" / "w.safetensors").write_bytes(bytes([k]) * (100 + k))
        ckpt = "initial" if k == 0 else f"ckpt-{k:06d}"
        bank.commit(src, ckpt, round_idx=k, step=k, parent=parent)
        parent = ckpt
    return bank


def test_gc_with_an_empty_id_deletes_nothing(work: Path) -> None:
    bank = _committed(work, 2)
    doc = json.loads(bank.store.get_bytes(f"{RUN}/manifest.json"))
    doc["entries"].insert(2, {**doc["entries"][1], "id": ""})
    bank.store.put_bytes(f"{RUN}/manifest.json", json.dumps(doc).encode())
    before = bank.store.list()
    with pytest.raises(CheckpointError) as err:
        gc(str(work / "bank"), RUN, keep_last=1)
    _one_line(err, "gc refused", "entry #2", "--force")
    assert bank.store.list() == before


def test_gc_without_a_manifest_refuses_unless_forced(work: Path) -> None:
    bank = _committed(work, 1)
    bank.store.delete(f"{RUN}/manifest.json")
    before = bank.store.list()
    with pytest.raises(CheckpointError) as err:
        gc(str(work / "bank"), RUN)
    _one_line(err, "gc refused", "has no manifest.json")
    assert bank.store.list() == before
    dry = gc(str(work / "bank"), RUN, force=True, dry_run=True)
    assert sorted(dry.deletes) == before and bank.store.list() == before
    assert gc(str(work / "bank"), RUN, force=True).deletes == dry.deletes and bank.store.list() == []


def test_gc_deletes_exact_keys_and_counts_real_bytes(work: Path) -> None:
    bank = _committed(work, 3)
    store = bank.store
    store.put_bytes(f"{RUN}/ckpt-000004/attempt-{'0' * 32}/unet/w.safetensors", b"x" * 7)  # a crashed attempt
    store.put_bytes(f"{RUN}/notes.txt", b"mine")  # not a checkpoint file: never gc's
    store.put_bytes("run10/ckpt-000001/w", b"other run")  # a run whose id extends this one's
    sizes = store.sizes("")
    dry = gc(str(work / "bank"), RUN, keep_last=1, dry_run=True)
    assert store.sizes("") == sizes
    removed = {k for k in sizes if k.startswith((f"{RUN}/ckpt-000001/", f"{RUN}/ckpt-000002/", f"{RUN}/ckpt-000004/"))}
    assert set(dry.deletes) == removed and dry.bytes_freed == sum(sizes[k] for k in removed)
    assert dry.ignored == {f"{RUN}/notes.txt": 4}
    plan = gc(str(work / "bank"), RUN, keep_last=1)
    assert plan.deletes == dry.deletes and set(store.sizes("")) == set(sizes) - removed
    assert _bank(work).ids() == ["initial", "ckpt-000003"] and show_run(str(work / "bank"), RUN)[1] == {}
    assert _bank(work).fetch("ckpt-000003").is_dir()


def test_a_manifest_from_before_attempts_stays_readable(work: Path) -> None:
    store = LocalStore(work / "bank")
    store.put_bytes(f"{RUN}/initial/unet/w.safetensors", b"w")
    _write_manifest(store, _entry("initial", 0, None))  # no "attempt": files directly under initial/
    bank = _bank(work)
    assert (bank.fetch("initial") / "unet" / "w.safetensors").read_bytes() == b"w"
    assert gc(str(work / "bank"), RUN).deletes == []


def test_commit_refuses_a_bad_id_before_any_upload(work: Path) -> None:
    bank = _committed(work, 0)
    before = bank.store.list()
    with pytest.raises(CheckpointError) as err:
        bank.commit(work.parent / "src0", "../../x", round_idx=1, step=1, parent="initial")
    _one_line(err, "cannot take checkpoint '../../x'", "nothing was uploaded")
    with pytest.raises(CheckpointError, match="parent ckpt-000009 is not listed before it"):
        bank.commit(work.parent / "src0", "ckpt-000001", round_idx=1, step=1, parent="ckpt-000009")
    assert bank.store.list() == before
