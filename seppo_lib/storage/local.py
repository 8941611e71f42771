"""Local-filesystem `Store` (plain paths and file:// URIs).

Every key becomes a path through `seppo_lib.paths.safe_path`: nothing outside the root is
ever read, written or deleted (`..`, absolute keys and symlinks out of the root are refused).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from seppo_lib.paths import safe_path
from seppo_lib.storage.base import ConflictError, Store


class LocalStore(Store):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        """Every read, write and delete of this store resolves its key here (refused outside the root)."""
        return safe_path(self.root, key)

    def _atomic_write(self, path: Path, writer) -> None:  # type: ignore[no-untyped-def]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, local: str | Path, key: str) -> None:
        with open(local, "rb") as src:
            self._atomic_write(self._path(key), lambda dst: shutil.copyfileobj(src, dst, 1 << 20))

    def get_file(self, key: str, local: str | Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise FileNotFoundError(f"{self.describe(key)} does not exist")
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, local)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), lambda dst: dst.write(data))

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{self.describe(key)} does not exist")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        # dot-files are this store's own temporaries (.<name>.part) and locks (.<name>.lock)
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        return {key: self._path(key).stat().st_size for key in self.list(prefix)}

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        path = self._path(key)
        if not path.is_file():
            return None, None
        data = path.read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, key: str, data: bytes, expected: str | None) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _, current = self.read_versioned(key)
            if current != expected:
                raise ConflictError(
                    f"{self.describe(key)} changed since it was read (another writer?); re-read and retry"
                )
            self.put_bytes(key, data)
        return hashlib.sha256(data).hexdigest()
