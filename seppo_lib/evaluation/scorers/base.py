"""The scorer interface, its errors, weight-location resolution and batching helpers."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from seppo_lib.errors import ModelError, SeppoError
from seppo_lib.storage import open_store

if TYPE_CHECKING:
    from PIL import Image

    from seppo_lib.config import StorageConfig

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/seppo/scorers")


@runtime_checkable
class Scorer(Protocol):
    """Scores image i against prompt i; higher is better for every scorer."""

    name: str

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float]: ...


class ScorerError(ModelError):
    """A scorer's weights are missing, unreadable or of the wrong kind."""


class ScorerNotInstalledError(ImportError, SeppoError):
    """A scorer needs an optional package that is not importable."""


def config_key(name: str) -> str:
    return f"eval.scorer_paths.{name}"


def require_module(module: str, scorer: str, extra: str) -> ModuleType:
    """Import an optional dependency or raise a one-line ScorerNotInstalledError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ScorerNotInstalledError(
            f"the {scorer} scorer needs the `{module}` package, which cannot be imported ({err}); "
            f"pip install 'seppo[{extra}]' (it pulls torchvision: use a separate environment, see docs/metrics.md)"
        ) from None


def check_pairs(images: list[Image.Image], prompts: list[str]) -> None:
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; score needs one prompt per image")


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most `batch_size` covering range(n)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def resolve_location(
    scorer: str,
    location: str | None,
    *,
    cache_dir: str | Path | None = None,
    storage: StorageConfig | None = None,
) -> Path:
    """A local path for a weight location: a local path (checked) or an s3:// URI (downloaded once)."""
    if not location:
        raise ScorerError(
            f"the {scorer} scorer needs weights: set {config_key(scorer)} to a local path or s3:// URI "
            "(see docs/metrics.md for where to get them)"
        )
    if location.startswith("file://"):
        location = location[len("file://"):]
    if location.startswith("s3://"):
        return _download(scorer, location, Path(cache_dir or DEFAULT_CACHE_DIR).expanduser(), storage)
    path = Path(location).expanduser()
    if not path.exists():
        raise ScorerError(f"the {scorer} scorer's weights {path} do not exist; fix {config_key(scorer)}")
    return path


def _download(scorer: str, uri: str, cache_dir: Path, storage: StorageConfig | None) -> Path:
    """Copy an S3 file or folder into `cache_dir` (atomically, once per URI) and return the copy."""
    parent, _, leaf = uri.rstrip("/").rpartition("/")
    if not leaf or leaf in (".", "..") or parent in ("s3:", "s3:/"):
        raise ScorerError(f"{config_key(scorer)}={uri!r} names a bucket (or ends in '.' or '..'), not a file or folder inside one")
    dest = cache_dir / hashlib.sha256(uri.encode()).hexdigest()[:16] / leaf
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".download-"))
    try:
        store = open_store(parent, storage)
        if store.exists(leaf):
            store.get_file(leaf, tmp / leaf)
        elif not store.get_dir(leaf, tmp / leaf):
            raise ScorerError(f"the {scorer} scorer's weights {uri} do not exist (no file or folder); fix {config_key(scorer)}")
        log.info("downloaded %s weights %s to %s", scorer, uri, dest)
        try:
            os.replace(tmp / leaf, dest)
        except OSError:
            if not dest.exists():  # not a lost race with another process: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
