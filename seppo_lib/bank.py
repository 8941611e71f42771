"""The checkpoint bank: θ_0..θ_k of one run, stored behind a `Store`.

Layout under `<bank_uri>/<run_id>/`:

    manifest.json          {"run_id", "entries": [{"id", "round", "step", "parent", "files": {rel: sha256}}]}
    initial/ ...           θ_0 (the base UNet)
    ckpt-<step>/ ...       θ_k: unet/ (safetensors + config.json), state/ (training state), checkpoint.json

Commit protocol: upload every file, verify each uploaded object's sha256, and only then
rewrite the manifest with a conditional write. A crash before the manifest write leaves
files that no reader lists: a half checkpoint is never selectable. Only safetensors and
JSON are ever read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seppo_lib.errors import CheckpointError
from seppo_lib.storage import ConflictError, Store, join, open_store, sha256_file

logger = logging.getLogger(__name__)

INITIAL = "initial"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BankEntry:
    id: str
    round: int
    step: int
    parent: str | None
    files: dict[str, str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BankEntry:
        return cls(data["id"], int(data["round"]), int(data["step"]), data.get("parent"), dict(data["files"]))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "round": self.round, "step": self.step, "parent": self.parent, "files": self.files}


def _verified(local: Path, files: dict[str, str]) -> bool:
    """True when `local` is a complete verified copy of a checkpoint with these files."""
    try:
        return json.loads((local / ".verified").read_text()) == files
    except (OSError, ValueError):
        return False


def checkpoint_id(step: int) -> str:
    return f"ckpt-{step:06d}"


class CheckpointBank:
    """One run's bank: commit, list and fetch verified checkpoints."""

    def __init__(self, store: Store, run_id: str, cache_dir: str | Path) -> None:
        self.store = store
        self.run_id = run_id
        # keyed by the bank's URI too: two banks with the same run id never share a cache
        self.cache_dir = Path(cache_dir) / hashlib.sha256(store.uri.encode()).hexdigest()[:12] / run_id
        self.downloads = 0  # checkpoint downloads (cache misses), for tests and logs

    @classmethod
    def open(cls, bank_uri: str, run_id: str, cache_dir: str | Path, settings: Any = None) -> CheckpointBank:
        return cls(open_store(bank_uri, settings), run_id, cache_dir)

    @property
    def uri(self) -> str:
        return join(self.store.uri, self.run_id)

    def _key(self, *parts: str) -> str:
        return join(self.run_id, *parts)

    # ---- reading ------------------------------------------------------------------
    def _read_manifest(self) -> tuple[list[BankEntry], str | None]:
        data, token = self.store.read_versioned(self._key(MANIFEST))
        if data is None:
            return [], None
        try:
            doc = json.loads(data)
            return [BankEntry.from_json(e) for e in doc["entries"]], token
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.store.describe(self._key(MANIFEST))} is not a valid bank manifest: {err}") from None

    def entries(self) -> list[BankEntry]:
        """Committed checkpoints in commit order (θ_0 first)."""
        return self._read_manifest()[0]

    def ids(self) -> list[str]:
        return [e.id for e in self.entries()]

    def entry(self, ckpt_id: str) -> BankEntry:
        for e in self.entries():
            if e.id == ckpt_id:
                return e
        raise CheckpointError(f"checkpoint {ckpt_id!r} is not committed in bank {self.uri} (have: {self.ids()})")

    def entry_for_round(self, round_idx: int) -> BankEntry | None:
        """The checkpoint made by round `round_idx` (0 = θ_0), if committed."""
        return next((e for e in self.entries() if e.round == round_idx), None)

    def fetch(self, ckpt_id: str) -> Path:
        """A verified local copy of a committed checkpoint (cached; downloaded once)."""
        entry = self.entry(ckpt_id)
        local = self.cache_dir / ckpt_id
        if _verified(local, entry.files):
            return local
        # a private download dir per process: several workers may share one cache
        tmp = self.cache_dir / f".{ckpt_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
        try:
            for rel, sha in entry.files.items():
                dest = tmp / rel
                self.store.get_file(self._key(ckpt_id, rel), dest)
                got = sha256_file(dest)
                if got != sha:
                    raise CheckpointError(
                        f"{self.store.describe(self._key(ckpt_id, rel))} is corrupt: sha256 {got[:12]}… != manifest {sha[:12]}…"
                    )
            (tmp / ".verified").write_text(json.dumps(entry.files))
            if _verified(local, entry.files):
                return local  # another process finished the same download first
            shutil.rmtree(local, ignore_errors=True)
            try:
                tmp.rename(local)
            except OSError:
                if not _verified(local, entry.files):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.downloads += 1
        return local

    # ---- writing ------------------------------------------------------------------
    def commit(self, local_dir: str | Path, ckpt_id: str, *, round_idx: int, step: int, parent: str | None) -> BankEntry:
        """Upload `local_dir` as checkpoint `ckpt_id`, verify it, then list it in the manifest."""
        local_dir = Path(local_dir)
        entries, _ = self._read_manifest()
        if any(e.id == ckpt_id for e in entries):
            raise CheckpointError(f"checkpoint {ckpt_id} already committed in {self.uri}; committed entries are never overwritten")
        files = {p.relative_to(local_dir).as_posix(): sha256_file(p) for p in sorted(local_dir.rglob("*")) if p.is_file()}
        if not files:
            raise CheckpointError(f"refusing to commit empty checkpoint directory {local_dir}")
        for rel in files:
            self.store.put_file(local_dir / rel, self._key(ckpt_id, rel))
        self._verify_uploaded(ckpt_id, files)
        entry = BankEntry(ckpt_id, round_idx, step, parent, files)
        for _ in range(5):
            entries, token = self._read_manifest()
            if any(e.id == ckpt_id for e in entries):
                raise CheckpointError(f"checkpoint {ckpt_id} was committed concurrently by another writer")
            doc = {"run_id": self.run_id, "entries": [e.to_json() for e in [*entries, entry]]}
            try:
                self.store.write_if(self._key(MANIFEST), json.dumps(doc, indent=1).encode(), token)
                break
            except ConflictError:
                logger.warning("manifest of %s changed while committing %s; retrying", self.uri, ckpt_id)
        else:
            raise CheckpointError(f"could not commit {ckpt_id}: the manifest of {self.uri} kept changing (concurrent writers?)")
        logger.info("committed %s (round %d, step %d) to %s", ckpt_id, round_idx, step, self.uri)
        return entry

    def _verify_uploaded(self, ckpt_id: str, files: dict[str, str]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for rel, sha in files.items():
                dest = Path(tmp) / "f"
                self.store.get_file(self._key(ckpt_id, rel), dest)
                if sha256_file(dest) != sha:
                    raise CheckpointError(f"upload of {self.store.describe(self._key(ckpt_id, rel))} did not verify (sha256 mismatch)")

    def ensure_initial(self, model_dir: str | Path) -> BankEntry:
        """Commit θ_0 (the base model's unet/ and scheduler/) once; later calls return it."""
        existing = self.entry_for_round(0)
        if existing is not None:
            return existing
        with tempfile.TemporaryDirectory() as tmp:
            for part in ("unet", "scheduler"):
                shutil.copytree(Path(model_dir) / part, Path(tmp) / part)
            return self.commit(tmp, INITIAL, round_idx=0, step=0, parent=None)

    def manifest_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "uri": self.uri, "entries": [e.to_json() for e in self.entries()]}
