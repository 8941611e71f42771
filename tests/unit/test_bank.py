"""Checkpoint bank: commit protocol, verification, caching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seppo_lib.bank import CheckpointBank
from seppo_lib.errors import CheckpointError
from seppo_lib.storage import LocalStore


def _ckpt(tmp: Path, name: str, payload: bytes) -> Path:
    d = tmp / name
    (d / "unet").mkdir(parents=True)
    (d / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(payload)
    (d / "unet" / "config.json").write_text("{}")
    return d


def test_commit_lists_in_order_and_fetch_verifies(tmp_path: Path) -> None:
    bank = CheckpointBank(LocalStore(tmp_path / "bank"), "run1", tmp_path / "cache")
    bank.commit(_ckpt(tmp_path, "a", b"zero"), "initial", round_idx=0, step=0, parent=None)
    bank.commit(_ckpt(tmp_path, "b", b"one"), "ckpt-000004", round_idx=1, step=4, parent="initial")
    assert bank.ids() == ["initial", "ckpt-000004"]
    assert bank.entry_for_round(1).parent == "initial"  # type: ignore[union-attr]
    local = bank.fetch("ckpt-000004")
    assert (local / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == b"one"
    bank.fetch("ckpt-000004")
    assert bank.downloads == 1  # cached: downloaded once


def test_committed_entries_are_never_overwritten(tmp_path: Path) -> None:
    bank = CheckpointBank(LocalStore(tmp_path / "bank"), "run1", tmp_path / "cache")
    bank.commit(_ckpt(tmp_path, "a", b"zero"), "initial", round_idx=0, step=0, parent=None)
    with pytest.raises(CheckpointError, match="already committed"):
        bank.commit(_ckpt(tmp_path, "b", b"other"), "initial", round_idx=0, step=0, parent=None)


def test_half_written_checkpoint_is_never_listed(tmp_path: Path) -> None:
    """Files uploaded without a manifest rewrite (a crash before commit) are invisible."""
    store = LocalStore(tmp_path / "bank")
    bank = CheckpointBank(store, "run1", tmp_path / "cache")
    bank.commit(_ckpt(tmp_path, "a", b"zero"), "initial", round_idx=0, step=0, parent=None)
    store.put_bytes("run1/ckpt-000004/unet/diffusion_pytorch_model.safetensors", b"partial")
    assert bank.ids() == ["initial"]
    with pytest.raises(CheckpointError, match="not committed"):
        bank.fetch("ckpt-000004")


def test_truncated_file_is_refused_with_its_name(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bank")
    bank = CheckpointBank(store, "run1", tmp_path / "cache")
    entry = bank.commit(_ckpt(tmp_path, "a", b"0123456789"), "initial", round_idx=0, step=0, parent=None)
    key = entry.key("run1", "unet/diffusion_pytorch_model.safetensors")
    store.put_bytes(key, b"01234")  # truncated after commit
    with pytest.raises(CheckpointError) as err:
        bank.fetch("initial")
    assert "diffusion_pytorch_model.safetensors is corrupt: sha256" in str(err.value)
    assert "\n" not in str(err.value)


def test_corrupt_manifest_is_reported(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bank")
    store.put_bytes("run1/manifest.json", b"{not json")
    with pytest.raises(CheckpointError, match="not a valid bank manifest"):
        CheckpointBank(store, "run1", tmp_path / "cache").ids()


def test_manifest_records_sha256(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bank")
    bank = CheckpointBank(store, "run1", tmp_path / "cache")
    bank.commit(_ckpt(tmp_path, "a", b"zero"), "initial", round_idx=0, step=0, parent=None)
    doc = json.loads(store.get_bytes("run1/manifest.json"))
    files = doc["entries"][0]["files"]
    assert set(files) == {"unet/config.json", "unet/diffusion_pytorch_model.safetensors"}
    assert all(len(v) == 64 for v in files.values())
