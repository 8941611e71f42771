"""The storage interface: every location in seppo is a URI behind one `Store`.

A store is rooted at a URI (`/abs/path`, `file:///abs/path`, `s3://bucket/prefix`);
keys are '/'-separated paths relative to that root. Only the storage package knows
which backend is in use.
"""

from __future__ import annotations

import abc
import errno
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seppo_lib.errors import SeppoError


class StorageError(SeppoError):
    """A storage operation failed; the message names the URI and what to do."""


class LocalIOError(StorageError):
    """A local file could not be written or read: disk full, no permission, read-only filesystem."""


_LOCAL_CAUSES = {
    errno.ENOSPC: "no space left on device; free space there or point the output elsewhere",
    errno.EDQUOT: "disk quota exceeded; free space there or point the output elsewhere",
    errno.EACCES: "permission denied; fix the permissions or point the output elsewhere",
    errno.EPERM: "operation not permitted; fix the permissions or point the output elsewhere",
    errno.EROFS: "read-only file system; point the output at a writable location",
}


def describe_os_error(err: OSError, path: str | Path | None = None, action: str = "write") -> str | None:
    """One line naming the path and cause of `err`; None when it is neither a disk/permission error nor names a path."""
    where = err.filename or path
    cause = _LOCAL_CAUSES.get(err.errno or 0)
    if where is None and cause is None:
        return None
    name = errno.errorcode.get(err.errno or 0, "no errno")
    return f"cannot {action} {where or '(path not reported)'}: {cause or err.strerror or err} ({name})"


@contextmanager
def local_io(path: str | Path, action: str = "write") -> Iterator[None]:
    """Disk-full and permission errors inside the block become one `LocalIOError` line naming `path`."""
    try:
        yield
    except OSError as err:
        if err.errno not in _LOCAL_CAUSES:
            raise
        raise LocalIOError(describe_os_error(err, path, action)) from err


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
