"""Storage behind one interface: `open_store(uri)` returns a local or S3 `Store`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seppo_lib.storage.base import ConflictError, StorageError, Store, join, sha256_file
from seppo_lib.storage.local import LocalStore

if TYPE_CHECKING:
    from seppo_lib.config import StorageConfig

__all__ = ["ConflictError", "LocalStore", "StorageError", "Store", "join", "open_store", "sha256_file", "is_remote"]


def is_remote(uri: str) -> bool:
    return uri.startswith("s3://")


def open_store(uri: str, settings: StorageConfig | None = None) -> Store:
    """A Store rooted at `uri`: `s3://bucket/prefix`, `file:///path` or a plain path."""
    if uri.startswith("s3://"):
        from seppo_lib.storage.s3 import S3Store  # boto3 only when needed

        return S3Store.from_uri(uri, settings)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        raise StorageError(f"unsupported storage URI {uri!r}: use a local path, file:// or s3://bucket/prefix")
    return LocalStore(uri)
