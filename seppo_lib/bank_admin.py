"""Bank administration: list runs, show a run's checkpoints, garbage-collect a run.

Runs live under a bank root as `<bank_uri>/<run_id>/manifest.json` plus one folder per
checkpoint (see `seppo_lib.bank`). `gc` deletes

- **uncommitted leftovers**: files under the run's prefix that the manifest does not
  reference (uploads of a writer that crashed before its manifest write), and
- with `keep_last=N`, **old committed checkpoints** beyond the last N, except θ_0
  (`initial`) and every checkpoint a registered model version points to (version tag
  `seppo.checkpoint` of a version whose `seppo.bank_run_id` is this run, or unknown).

A committed checkpoint is first dropped from the manifest with a conditional write and only
then are its files deleted, so no reader ever lists a checkpoint whose files are going away.
gc must not run while a writer commits to the same run: an in-flight upload looks exactly
like a crashed one. After deleting leftovers gc re-reads the manifest and raises if a
concurrent writer committed one of the deleted files meanwhile.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from seppo_lib.bank import INITIAL, MANIFEST, BankEntry
from seppo_lib.errors import CheckpointError, SeppoError
from seppo_lib.storage import ConflictError, Store, join, open_store

logger = logging.getLogger(__name__)

CHECKPOINT_TAG = "seppo.checkpoint"
BANK_RUN_ID_TAG = "seppo.bank_run_id"
LEASE_SUFFIX = ".lease"  # the S3 store's manifest lease (single-writer fallback): never garbage
MANIFEST_RETRIES = 5


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    entries: int  # committed checkpoints (0: no manifest)
    latest: str | None  # id of the last committed checkpoint
    rounds: int  # highest committed round
    files: int  # every file under the run's prefix
    bytes: int
    has_manifest: bool


@dataclass(frozen=True)
class EntryInfo:
    id: str
    round: int
    step: int
    parent: str | None
    files: int
    bytes: int


@dataclass
class GcPlan:
    run_id: str
    uri: str
    leftovers: dict[str, int] = field(default_factory=dict)  # key -> bytes
    remove: list[EntryInfo] = field(default_factory=list)  # committed entries to drop
    keep: dict[str, str] = field(default_factory=dict)  # committed id -> why it stays

    @property
    def leftover_bytes(self) -> int:
        return sum(self.leftovers.values())

    @property
    def removed_bytes(self) -> int:
        return sum(e.bytes for e in self.remove)

    @property
    def bytes_freed(self) -> int:
        return self.leftover_bytes + self.removed_bytes


# ---- reading -----------------------------------------------------------------------


def _manifest(store: Store, run_id: str) -> tuple[dict[str, Any] | None, list[BankEntry], str | None]:
    """(document, entries, version token) of a run's manifest; (None, [], None) when absent."""
    key = join(run_id, MANIFEST)
    data, token = store.read_versioned(key)
    if data is None:
        return None, [], None
    try:
        doc = json.loads(data)
        return doc, [BankEntry.from_json(e) for e in doc["entries"]], token
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{store.describe(key)} is not a valid bank manifest ({err}); fix or restore it before gc"
        ) from None


def _entry_info(entry: BankEntry, sizes: dict[str, int], run_id: str) -> EntryInfo:
    total = sum(sizes.get(join(run_id, entry.id, rel), 0) for rel in entry.files)
    return EntryInfo(entry.id, entry.round, entry.step, entry.parent, len(entry.files), total)


def _referenced(run_id: str, entries: Iterable[BankEntry]) -> set[str]:
    return {join(run_id, e.id, rel) for e in entries for rel in e.files}


def _is_bookkeeping(run_id: str, key: str) -> bool:
    return key in (join(run_id, MANIFEST), join(run_id, MANIFEST + LEASE_SUFFIX))


def list_runs(bank_uri: str, settings: Any = None) -> list[RunInfo]:
    """Every run under the bank root (one listing), with committed entry counts and sizes."""
    store = open_store(bank_uri, settings)
    per_run: dict[str, dict[str, int]] = {}
    for key, size in store.sizes("").items():
        run_id, _, rest = key.partition("/")
        if rest:
            per_run.setdefault(run_id, {})[key] = size
    runs = []
    for run_id, sizes in sorted(per_run.items()):
        has_manifest = join(run_id, MANIFEST) in sizes
        entries = _manifest(store, run_id)[1] if has_manifest else []
        runs.append(RunInfo(
            run_id=run_id, entries=len(entries), latest=entries[-1].id if entries else None,
            rounds=max((e.round for e in entries), default=0), files=len(sizes), bytes=sum(sizes.values()),
            has_manifest=has_manifest,
        ))  # fmt: skip
    return runs


def _require_run(store: Store, run_id: str, sizes: dict[str, int]) -> None:
    if not sizes:
        known = sorted({k.partition("/")[0] for k in store.list("") if "/" in k})
        raise CheckpointError(
            f"no bank run {run_id!r} under {store.uri} (runs: {', '.join(known) or 'none'}); see `seppo bank ls {store.uri}`"
        )


def show_run(bank_uri: str, run_id: str, settings: Any = None) -> tuple[list[EntryInfo], dict[str, int]]:
    """(committed entries with file counts and bytes, uncommitted leftover files -> bytes)."""
    store = open_store(bank_uri, settings)
    sizes = store.sizes(run_id + "/")
    _require_run(store, run_id, sizes)
    _, entries, _ = _manifest(store, run_id)
    referenced = _referenced(run_id, entries)
    leftovers = {k: v for k, v in sizes.items() if k not in referenced and not _is_bookkeeping(run_id, k)}
    return [_entry_info(e, sizes, run_id) for e in entries], leftovers


# ---- protection ---------------------------------------------------------------------


def registered_checkpoints(run_id: str, model_names: Iterable[str], tracking_uri: str) -> dict[str, str]:
    """Checkpoint id -> 'NAME vVERSION' for every registered version pointing into `run_id`.

    A model with no versions yet protects nothing; a version without a bank run tag is
    assumed to point into this run (protecting too much is safe, too little is not).
    """
    from seppo_lib.registry import RegistryError, list_versions

    protected: dict[str, str] = {}
    for name in model_names:
        try:
            versions = list_versions(name, tracking_uri=tracking_uri)
        except RegistryError as err:
            if "no registered model" not in str(err):  # the registry's message for an unknown model
                raise
            logger.info("registered model %s does not exist at %s: it protects nothing", name, tracking_uri)
            continue
        for v in versions:
            ckpt, bank_run = v["tags"].get(CHECKPOINT_TAG), v["tags"].get(BANK_RUN_ID_TAG)
            if ckpt and bank_run in (None, "", run_id):
                protected.setdefault(ckpt, f"{name} v{v['version']}")
    return protected


# ---- gc -----------------------------------------------------------------------------


def plan_gc(
    store: Store, run_id: str, keep_last: int | None, registered: dict[str, str]
) -> tuple[GcPlan, dict[str, Any] | None, list[BankEntry], str | None]:
    """What gc would delete now; also the manifest (document, entries, token) it was planned on."""
    if keep_last is not None and keep_last < 0:
        raise SeppoError(f"--keep-last must be >= 0, got {keep_last}")
    sizes = store.sizes(run_id + "/")
    _require_run(store, run_id, sizes)
    doc, entries, token = _manifest(store, run_id)
    plan = GcPlan(run_id, join(store.uri, run_id))
    referenced = _referenced(run_id, entries)
    plan.leftovers = {k: v for k, v in sizes.items() if k not in referenced and not _is_bookkeeping(run_id, k)}
    trained = [e for e in entries if e.id != INITIAL and e.round != 0]
    recent = {e.id for e in trained[len(trained) - keep_last:]} if keep_last else set()
    for e in entries:
        if e.id == INITIAL or e.round == 0:
            plan.keep[e.id] = "θ_0, always kept"
        elif e.id in registered:
            plan.keep[e.id] = f"registered as {registered[e.id]}"
        elif keep_last is None:
            plan.keep[e.id] = "committed (no --keep-last)"
        elif e.id in recent:
            plan.keep[e.id] = f"among the last {keep_last}"
        else:
            plan.remove.append(_entry_info(e, sizes, run_id))
    return plan, doc, entries, token


def _drop_from_manifest(
    store: Store, run_id: str, doc: dict[str, Any], entries: list[BankEntry], token: str | None, drop: set[str]
) -> None:
    """Conditional rewrite of the manifest without `drop` (ConflictError if it changed since read)."""
    kept = [e.to_json() for e in entries if e.id not in drop]
    new_doc = {**doc, "run_id": doc.get("run_id", run_id), "entries": kept}
    store.write_if(join(run_id, MANIFEST), json.dumps(new_doc, indent=1).encode(), token)


def gc(
    bank_uri: str,
    run_id: str,
    *,
    keep_last: int | None = None,
    dry_run: bool = False,
    registered: dict[str, str] | None = None,
    settings: Any = None,
) -> GcPlan:
    """Delete a run's uncommitted leftovers and (keep_last) old unprotected checkpoints.

    `registered`: checkpoint id -> registered version (see `registered_checkpoints`); those
    are never removed, nor is θ_0. Returns the plan that was carried out (or would be).
    """
    store = open_store(bank_uri, settings)
    registered = registered or {}
    for _ in range(MANIFEST_RETRIES):
        plan, doc, entries, token = plan_gc(store, run_id, keep_last, registered)
        if dry_run or not plan.remove:
            break
        assert doc is not None  # entries to remove come from a manifest
        try:
            _drop_from_manifest(store, run_id, doc, entries, token, {e.id for e in plan.remove})
            break
        except ConflictError:
            logger.warning("manifest of %s changed while gc planned; planning again", plan.uri)
    else:
        raise CheckpointError(
            f"gc of {join(store.uri, run_id)}: the manifest kept changing (a writer is active?); retry when it is idle"
        )
    if dry_run:
        return plan
    for e in plan.remove:
        for key in store.list(join(run_id, e.id) + "/"):
            store.delete(key)
        logger.info("removed committed checkpoint %s of %s (%d bytes)", e.id, plan.uri, e.bytes)
    for key in plan.leftovers:
        store.delete(key)
    _check_no_commit_raced(store, run_id, plan)
    return plan


def _check_no_commit_raced(store: Store, run_id: str, plan: GcPlan) -> None:
    """Raise if a writer committed files that gc deleted as leftovers while it ran."""
    _, entries, _ = _manifest(store, run_id)
    lost = sorted(set(plan.leftovers) & _referenced(run_id, entries))
    if lost:
        ids = sorted({key.split("/")[1] for key in lost})
        raise CheckpointError(
            f"checkpoint(s) {', '.join(ids)} of {plan.uri} were committed while gc deleted their files "
            f"({lost[0]}, ...): a writer was active; re-run their rounds and never run gc during training"
        )


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (bytes below 1 KiB stay exact)."""
    if n < 1024:
        return f"{n} B"
    value, unit = float(n), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"
