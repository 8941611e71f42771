"""LocalStore: round trips, conditional writes, keys that try to leave the root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from seppo_lib.storage import ConflictError, LocalStore, StorageError, open_store


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "root")


def test_open_store_picks_the_local_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(f"file://{tmp_path}/bank").uri == str(tmp_path / "bank")
    with pytest.raises(StorageError, match="unsupported storage URI 'gs://b/x'"):
        open_store("gs://b/x")


def test_bytes_and_file_round_trip(store: LocalStore, tmp_path: Path) -> None:
    store.put_bytes("a/b.json", b'{"x": 1}')
    assert store.get_bytes("a/b.json") == b'{"x": 1}'
    assert store.exists("a/b.json") and not store.exists("a/c.json")
    src = tmp_path / "w.bin"
    src.write_bytes(bytes(range(256)) * 10)
    store.put_file(src, "ckpt/w.bin")
    store.get_file("ckpt/w.bin", tmp_path / "out" / "w.bin")
    assert (tmp_path / "out" / "w.bin").read_bytes() == src.read_bytes()
    assert store.list() == ["a/b.json", "ckpt/w.bin"] and store.list("ckpt/") == ["ckpt/w.bin"]
    store.delete("ckpt/w.bin")
    store.delete("ckpt/w.bin")  # missing keys are ignored
    assert store.list() == ["a/b.json"]
    assert not list((tmp_path / "root").rglob("*.part"))  # atomic writes leave no temp files


def test_missing_keys_raise_file_not_found(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        store.get_bytes("nope.json")
    with pytest.raises(FileNotFoundError, match="nope.bin does not exist"):
        store.get_file("nope.bin", tmp_path / "x")
    assert store.read_versioned("nope.json") == (None, None)
    assert store.list() == []


def test_dir_round_trip(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in ("m.safetensors", "sub/state.json"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    assert store.put_dir(src, "run/ckpt-1") == ["run/ckpt-1/m.safetensors", "run/ckpt-1/sub/state.json"]
    got = store.get_dir("run/ckpt-1", tmp_path / "back")
    assert sorted(p.read_text() for p in got) == ["m.safetensors", "sub/state.json"]
    assert store.delete_prefix("run/ckpt-1") == 2 and store.list("run/") == []


def test_write_if_conflicts(store: LocalStore) -> None:
    token = store.write_if("manifest.json", b"v1", None)
    assert token == hashlib.sha256(b"v1").hexdigest()
    with pytest.raises(ConflictError, match="manifest.json changed since it was read"):
        store.write_if("manifest.json", b"again", None)
    assert store.read_versioned("manifest.json") == (b"v1", token)
    token2 = store.write_if("manifest.json", b"v2", token)
    with pytest.raises(ConflictError):
        store.write_if("manifest.json", b"stale", token)
    assert store.read_versioned("manifest.json") == (b"v2", token2)


def test_write_if_lock_files_are_not_listed(store: LocalStore) -> None:
    store.write_if("run/manifest.json", b"v1", None)
    assert store.list() == ["run/manifest.json"]


@pytest.mark.parametrize("key", ["../outside.txt", "a/../../outside.txt", "/etc/passwd"])
def test_keys_cannot_escape_the_root(store: LocalStore, key: str) -> None:
    with pytest.raises(ValueError, match="escapes the root"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError, match="escapes the root"):
        store.get_bytes(key)


def test_symlinks_cannot_escape_the_root(store: LocalStore, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(ValueError, match="escapes the root"):
        store.put_bytes("link/x.txt", b"x")
    assert not (tmp_path / "secret" / "x.txt").exists()


def test_empty_prefix_means_the_whole_store(store: LocalStore, tmp_path: Path) -> None:
    store.put_bytes("a/x.json", b"1")
    assert [p.name for p in store.get_dir("", tmp_path / "all")] == ["x.json"]
