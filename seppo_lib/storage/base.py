"""The storage interface: every location in seppo is a URI behind one `Store`.

A store is rooted at a URI (`/abs/path`, `file:///abs/path`, `s3://bucket/prefix`);
keys are '/'-separated paths relative to that root. Only the storage package knows
which backend is in use.
"""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and what to do."""


class ConflictError(StorageError):
    """A conditional write lost: someone else changed the object since it was read."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Store(abc.ABC):
    """Files and directories under one root URI."""

    uri: str

    @abc.abstractmethod
    def put_file(self, local: str | Path, key: str) -> None:
        """Upload one local file to `key` (overwrites)."""

    @abc.abstractmethod
    def get_file(self, key: str, local: str | Path) -> None:
        """Download `key` to a local file (parents created). Raises FileNotFoundError if missing."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raises FileNotFoundError if `key` does not exist."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys (files) under `prefix`, sorted, relative to the store root."""

    @abc.abstractmethod
    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Size in bytes of every key `list(prefix)` returns (one listing, no downloads)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete one key; missing keys are ignored."""

    @abc.abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """(content, version token) of `key`, or (None, None) when absent."""

    @abc.abstractmethod
    def write_if(self, key: str, data: bytes, expected: str | None) -> str:
        """Write `key` only if its version token is still `expected` (None: must not exist).

        Returns the new token; raises ConflictError when another writer got there first.
        """

    # ---- directory helpers (shared by every backend) -----------------------------
    def put_dir(self, local_dir: str | Path, prefix: str) -> list[str]:
        local_dir = Path(local_dir)
        keys = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            key = join(prefix, path.relative_to(local_dir).as_posix())
            self.put_file(path, key)
            keys.append(key)
        return keys

    def get_dir(self, prefix: str, local_dir: str | Path) -> list[Path]:
        local_dir = Path(local_dir)
        out = []
        prefix = _dir_prefix(prefix)
        for key in self.list(prefix):
            dest = local_dir / key[len(prefix):]
            self.get_file(key, dest)
            out.append(dest)
        return out

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(_dir_prefix(prefix))
        for key in keys:
            self.delete(key)
        return len(keys)

    def describe(self, key: str) -> str:
        return join(self.uri, key)


def _dir_prefix(prefix: str) -> str:
    """'a/b' -> 'a/b/'; '' stays '' (the whole store)."""
    return prefix.rstrip("/") + "/" if prefix.strip("/") else ""


def join(*parts: str) -> str:
    """Join URI/key parts with single '/' separators."""
    out = ""
    for part in parts:
        if not part:
            continue
        out = part if not out else out.rstrip("/") + "/" + part.lstrip("/")
    return out
