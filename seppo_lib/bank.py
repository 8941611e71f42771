"""The checkpoint bank: θ_0..θ_k of one run, stored behind a `Store`.

Layout under `<bank_uri>/<run_id>/`:

    manifest.json                  the committed checkpoints (schema: `seppo_lib.bank_manifest`)
    initial/attempt-<uuid>/ ...    θ_0 (the base denoiser: the family's unet/ or transformer/, and scheduler/)
    ckpt-<step>/attempt-<uuid>/    θ_k: that denoiser folder (safetensors + config.json) or adapter/ (lora), state/

Commit protocol: every commit attempt uploads under its own `attempt-<uuid>/` prefix, verifies
each uploaded object's sha256, and only then adds its entry (naming the attempt) to the manifest
with a conditional write. A crash before the manifest write leaves files no reader lists; a
second live writer of the same id (a retried pod) uploads beside the first, finds the id taken at
its manifest write, deletes its own exact keys and fails with one line: committed keys are never
written or deleted by anyone but gc. Entries from before attempts (files directly under
`<id>/`) stay readable. The manifest is validated on every read; every cache path goes through
`seppo_lib.paths.safe_path`. Only safetensors and JSON are ever read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from seppo_lib.bank_manifest import INITIAL, MANIFEST, BankEntry, Manifest, read_manifest, validate_manifest
from seppo_lib.errors import CheckpointError, SeppoError
from seppo_lib.paths import check_key, safe_path, shown
from seppo_lib.storage import ConflictError, StorageError, Store, join, open_store, sha256_file

logger = logging.getLogger(__name__)

__all__ = ["INITIAL", "MANIFEST", "BankEntry", "CheckpointBank", "checkpoint_id"]
MANIFEST_RETRIES = 5


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
        self.run_id = check_key(run_id, store.uri)
        # keyed by the bank's URI too: two banks with the same run id never share a cache
        self.cache_dir = safe_path(cache_dir, hashlib.sha256(store.uri.encode()).hexdigest()[:12], run_id)
        self.downloads = 0  # checkpoint downloads (cache misses), for tests and logs

    @classmethod
    def open(cls, bank_uri: str, run_id: str, cache_dir: str | Path, settings: Any = None) -> CheckpointBank:
        return cls(open_store(bank_uri, settings), run_id, cache_dir)

    @property
    def uri(self) -> str:
        return join(self.store.uri, self.run_id)

    # ---- reading ------------------------------------------------------------------
    def _read_manifest(self) -> tuple[list[BankEntry], str | None]:
        """(every manifest entry, including those gc removed, version token); validated on every read."""
        manifest, token = read_manifest(self.store, self.run_id)
        return (list(manifest.entries) if manifest else []), token

    def entries(self) -> list[BankEntry]:
        """Committed checkpoints in commit order (θ_0 first)."""
        return [e for e in self._read_manifest()[0] if not e.removed]

    def ids(self) -> list[str]:
        return [e.id for e in self.entries()]

    def entry(self, ckpt_id: str) -> BankEntry:
        entries = self.entries()
        for e in entries:
            if e.id == ckpt_id:
                return e
        raise CheckpointError(
            f"checkpoint {shown(ckpt_id)} is not committed in bank {self.uri} (have: {[e.id for e in entries]})"
        )

    def entry_for_round(self, round_idx: int, include_removed: bool = False) -> BankEntry | None:
        """The checkpoint made by round `round_idx` (0 = θ_0), if committed.

        `include_removed`: also an entry whose files gc removed (the round is done, its weights
        are gone): a rerun must skip that round, not retrain it and collide with the entry.
        """
        entries = self._read_manifest()[0] if include_removed else self.entries()
        return next((e for e in entries if e.round == round_idx), None)

    def fetch(self, ckpt_id: str) -> Path:
        """A verified local copy of a committed checkpoint (cached; downloaded once)."""
        entry = self.entry(ckpt_id)
        local = safe_path(self.cache_dir, entry.id)
        if _verified(local, entry.files):
            return local
        # a private download dir per process: several workers may share one cache
        tmp = safe_path(self.cache_dir, f".{entry.id}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
        try:
            self._download(entry, tmp)
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

    def _download(self, entry: BankEntry, tmp: Path) -> None:
        """Every file of `entry` into `tmp` (each path checked to stay inside it), sha256-verified."""
        for rel, key in entry.keys(self.run_id).items():
            dest = safe_path(tmp, rel)
            self.store.get_file(key, dest)
            got, want = sha256_file(dest), entry.files[rel]
            if got != want:
                raise CheckpointError(f"{self.store.describe(key)} is corrupt: sha256 {got[:12]}… != manifest {want[:12]}…")
        safe_path(tmp, ".verified").write_text(json.dumps(entry.files))

    # ---- writing ------------------------------------------------------------------
    def commit(self, local_dir: str | Path, ckpt_id: str, *, round_idx: int, step: int, parent: str | None) -> BankEntry:
        """Upload `local_dir` as checkpoint `ckpt_id` (its own attempt prefix), verify it, then list it in the manifest."""
        local_dir = Path(local_dir)
        files = {p.relative_to(local_dir).as_posix(): sha256_file(p) for p in sorted(local_dir.rglob("*")) if p.is_file()}
        if not files:
            raise CheckpointError(f"refusing to commit empty checkpoint directory {local_dir}")
        entries, _ = self._read_manifest()
        if any(e.id == ckpt_id for e in entries):
            raise CheckpointError(f"checkpoint {ckpt_id} already committed in {self.uri}; committed entries are never overwritten")
        raw = {"id": ckpt_id, "round": round_idx, "step": step, "parent": parent, "files": files, "attempt": uuid.uuid4().hex}
        entry = self._appended(entries, raw, "cannot take").entries[-1]  # schema + lineage checked before any upload
        keys = entry.keys(self.run_id)
        for rel, key in keys.items():
            self.store.put_file(local_dir / rel, key)
        try:
            self._verify_uploaded(entry)
            self._write_entry(entry)
        except CheckpointError:
            self._discard(entry, keys)
            raise
        logger.info("committed %s (round %d, step %d, attempt %s) to %s", ckpt_id, round_idx, step, entry.attempt, self.uri)
        return entry

    def _appended(self, entries: list[BankEntry], raw: dict[str, Any], problem: str) -> Manifest:
        doc = {"run_id": self.run_id, "entries": [*(e.to_json() for e in entries), raw]}
        where = self.store.describe(join(self.run_id, MANIFEST))
        return validate_manifest(doc, where, f"{problem} checkpoint {shown(raw['id'])}", "nothing was uploaded or changed")

    def _write_entry(self, entry: BankEntry) -> None:
        """Add `entry` to the manifest (conditional write); CheckpointError if its id was taken meanwhile."""
        for _ in range(MANIFEST_RETRIES):
            entries, token = self._read_manifest()
            taken = next((e for e in entries if e.id == entry.id), None)
            if taken is not None and taken.attempt == entry.attempt:
                return  # our own write landed (its reply was lost): committed
            if taken is not None:
                raise CheckpointError(
                    f"checkpoint {entry.id} was committed concurrently by another writer (attempt {taken.attempt}) in "
                    f"{self.uri}; this attempt ({entry.attempt}) lost, removed its own uploads and changed nothing"
                )
            manifest = self._appended(entries, entry.to_json(), "cannot add")
            try:
                self.store.write_if(join(self.run_id, MANIFEST), manifest.to_bytes(), token)
                return
            except ConflictError:
                logger.warning("manifest of %s changed while committing %s; retrying", self.uri, entry.id)
        raise CheckpointError(f"could not commit {entry.id}: the manifest of {self.uri} kept changing (concurrent writers?)")

    def _discard(self, entry: BankEntry, keys: dict[str, str]) -> None:
        """Delete this attempt's exact uploaded keys, unless the manifest shows the attempt committed after all."""
        try:
            if any(e.id == entry.id and e.attempt == entry.attempt for e in self.entries()):
                return
            for key in keys.values():
                self.store.delete(key)
        except (SeppoError, StorageError, OSError) as err:
            logger.warning("could not remove the uploads of attempt %s of %s (%s); `seppo bank gc` will", entry.attempt, entry.id, err)

    def _verify_uploaded(self, entry: BankEntry) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for rel, key in entry.keys(self.run_id).items():
                dest = Path(tmp) / "f"
                self.store.get_file(key, dest)
                if sha256_file(dest) != entry.files[rel]:
                    raise CheckpointError(f"upload of {self.store.describe(key)} did not verify (sha256 mismatch)")

    def ensure_initial(self, model_dir: str | Path) -> BankEntry:
        """Commit θ_0 (the base model's denoiser folder, unet/ or transformer/, and scheduler/) once; later calls return it."""
        from seppo_lib.families import family_for

        existing = self.entry_for_round(0)
        if existing is not None:
            return existing
        with tempfile.TemporaryDirectory() as tmp:
            for part in (family_for(model_dir).denoiser_folder, "scheduler"):
                shutil.copytree(Path(model_dir) / part, Path(tmp) / part)
            return self.commit(tmp, INITIAL, round_idx=0, step=0, parent=None)

    def manifest_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "uri": self.uri, "entries": [e.to_json() for e in self.entries()]}
