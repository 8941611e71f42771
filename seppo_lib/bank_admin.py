"""Bank administration: list runs, show a run's checkpoints, garbage-collect a run.

Runs live under a bank root as `<bank_uri>/<run_id>/manifest.json` plus one folder per
checkpoint (see `seppo_lib.bank`). The manifest is validated (`seppo_lib.bank_manifest`) on
every read: a bad one stops `ls`, `show` and `gc` with one line. `gc` deletes only exact keys:

- **uncommitted leftovers**: files under `<run_id>/<checkpoint id>/` (`initial`, `ckpt-<digits>`)
  that no valid manifest entry references (uploads of a writer that crashed or lost a race);
  other files under the run are reported and left alone, the manifest is never touched;
- with `keep_last=N`, the files of **old committed checkpoints** beyond the last N, except θ_0
  (`initial`) and every checkpoint a registered model version points to (version tag
  `seppo.checkpoint` of a version whose `seppo.bank_run_id` is this run, or unknown).

Without a manifest, or with an invalid one, gc refuses unless `force=True` (then no checkpoint
counts as committed). A committed checkpoint is first marked removed in the manifest with a
conditional write (its lineage stays for its children) and only then are its files deleted, so
no reader ever lists a checkpoint whose files are going away. gc must not run while a writer
commits to the same run: an in-flight upload looks exactly like a crashed one. After deleting
leftovers gc re-reads the manifest and raises if a concurrent writer committed one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from seppo_lib.bank_manifest import CKPT_ID, INITIAL, MANIFEST, BankEntry, Manifest, read_manifest
from seppo_lib.errors import CheckpointError, SeppoError
from seppo_lib.storage import ConflictError, LocalStore, Store, join, open_store

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
    leftovers: dict[str, int] = field(default_factory=dict)  # uncommitted key -> bytes
    remove: list[EntryInfo] = field(default_factory=list)  # committed entries to drop
    remove_keys: dict[str, int] = field(default_factory=dict)  # their exact existing keys -> bytes
    keep: dict[str, str] = field(default_factory=dict)  # committed id -> why it stays
    ignored: dict[str, int] = field(default_factory=dict)  # files gc never touches (not a checkpoint's)

    @property
    def leftover_bytes(self) -> int:
        return sum(self.leftovers.values())

    @property
    def removed_bytes(self) -> int:
        return sum(self.remove_keys.values())

    @property
    def bytes_freed(self) -> int:
        return self.leftover_bytes + self.removed_bytes

    @property
    def deletes(self) -> list[str]:
        """Every key gc deletes (or would), exactly."""
        return [*self.remove_keys, *self.leftovers]


# ---- reading -----------------------------------------------------------------------


def _live(manifest: Manifest | None) -> list[BankEntry]:
    return manifest.live if manifest else []


def _entry_info(entry: BankEntry, sizes: dict[str, int], run_id: str) -> EntryInfo:
    total = sum(sizes.get(key, 0) for key in entry.keys(run_id).values())
    return EntryInfo(entry.id, entry.round, entry.step, entry.parent, len(entry.files), total)


def _referenced(run_id: str, entries: Iterable[BankEntry]) -> set[str]:
    return {key for e in entries for key in e.keys(run_id).values()}


def _is_bookkeeping(run_id: str, key: str) -> bool:
    return key in (join(run_id, MANIFEST), join(run_id, MANIFEST + LEASE_SUFFIX))


def _split(run_id: str, sizes: dict[str, int], entries: list[BankEntry]) -> tuple[dict[str, int], dict[str, int]]:
    """(uncommitted checkpoint files, other unreferenced files) of a run: exact listed keys -> bytes."""
    referenced = _referenced(run_id, entries)
    leftovers: dict[str, int] = {}
    ignored: dict[str, int] = {}
    for key, size in sizes.items():
        if key in referenced or _is_bookkeeping(run_id, key):
            continue
        ckpt_id, _, rel = key.removeprefix(run_id + "/").partition("/")
        (leftovers if rel and CKPT_ID.fullmatch(ckpt_id) else ignored)[key] = size
    return leftovers, ignored


def list_runs(bank_uri: str, settings: Any = None) -> list[RunInfo]:
    """Every run under the bank root (one listing), with committed entry counts and sizes.

    A local root that does not exist is an error (likely a typo), an existing empty one has no runs."""
    store = open_store(bank_uri, settings)
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise CheckpointError(f"bank root {store.uri} does not exist or is not a folder")
    per_run: dict[str, dict[str, int]] = {}
    for key, size in store.sizes("").items():
        run_id, _, rest = key.partition("/")
        if rest:
            per_run.setdefault(run_id, {})[key] = size
    runs = []
    for run_id, sizes in sorted(per_run.items()):
        has_manifest = join(run_id, MANIFEST) in sizes
        entries = _live(read_manifest(store, run_id)[0]) if has_manifest else []
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
    entries = _live(read_manifest(store, run_id)[0])
    return [_entry_info(e, sizes, run_id) for e in entries], _split(run_id, sizes, entries)[0]


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


def _gc_manifest(store: Store, run_id: str, force: bool) -> tuple[Manifest | None, str | None]:
    """The run's validated manifest for gc; without one (or with a bad one) refuse unless `force`."""
    uri = join(store.uri, run_id)
    try:
        manifest, token = read_manifest(store, run_id)
    except CheckpointError as err:
        if not force:
            raise CheckpointError(f"gc refused: {err} (or pass --force: then no checkpoint counts as committed)") from None
        logger.warning("gc --force of %s: %s; treating no checkpoint as committed", uri, err)
        return None, None
    if manifest is None and not force:
        raise CheckpointError(
            f"gc refused: {uri} has no {MANIFEST}, so every checkpoint file would count as uncommitted; "
            "restore the manifest, or pass --force (after --dry-run) to delete them all"
        )
    return manifest, token


def plan_gc(
    store: Store, run_id: str, keep_last: int | None, registered: dict[str, str], force: bool = False
) -> tuple[GcPlan, Manifest | None, str | None]:
    """What gc would delete now (exact keys); also the manifest and version token it was planned on."""
    if keep_last is not None and keep_last < 0:
        raise SeppoError(f"--keep-last must be >= 0, got {keep_last}")
    sizes = store.sizes(run_id + "/")
    _require_run(store, run_id, sizes)
    manifest, token = _gc_manifest(store, run_id, force)
    entries = _live(manifest)
    plan = GcPlan(run_id, join(store.uri, run_id))
    plan.leftovers, plan.ignored = _split(run_id, sizes, entries)
    trained = [e for e in entries if e.id != INITIAL]
    recent = {e.id for e in trained[len(trained) - keep_last:]} if keep_last else set()
    for e in entries:
        if e.id == INITIAL:
            plan.keep[e.id] = "θ_0, always kept"
        elif e.id in registered:
            plan.keep[e.id] = f"registered as {registered[e.id]}"
        elif keep_last is None:
            plan.keep[e.id] = "committed (no --keep-last)"
        elif e.id in recent:
            plan.keep[e.id] = f"among the last {keep_last}"
        else:
            plan.remove.append(_entry_info(e, sizes, run_id))
            plan.remove_keys.update((k, sizes[k]) for k in e.keys(run_id).values() if k in sizes)
    return plan, manifest, token


def gc(
    bank_uri: str,
    run_id: str,
    *,
    keep_last: int | None = None,
    dry_run: bool = False,
    force: bool = False,
    registered: dict[str, str] | None = None,
    settings: Any = None,
) -> GcPlan:
    """Delete a run's uncommitted leftovers and (keep_last) old unprotected checkpoints, by exact key.

    `registered`: checkpoint id -> registered version (see `registered_checkpoints`); those
    are never removed, nor is θ_0. `force`: run without a (valid) manifest. Returns the plan
    that was carried out (or would be, with `dry_run`).
    """
    store = open_store(bank_uri, settings)
    for _ in range(MANIFEST_RETRIES):
        plan, manifest, token = plan_gc(store, run_id, keep_last, registered or {}, force)
        if dry_run or not plan.remove:
            break
        assert manifest is not None  # entries to remove come from a manifest
        try:
            dropped = manifest.without({e.id for e in plan.remove})
            store.write_if(join(run_id, MANIFEST), dropped.to_bytes(), token)
            break
        except ConflictError:
            logger.warning("manifest of %s changed while gc planned; planning again", plan.uri)
    else:
        raise CheckpointError(
            f"gc of {join(store.uri, run_id)}: the manifest kept changing (a writer is active?); retry when it is idle"
        )
    if dry_run:
        return plan
    for key in plan.deletes:
        store.delete(key)
    for e in plan.remove:
        logger.info("removed committed checkpoint %s of %s (%d bytes)", e.id, plan.uri, e.bytes)
    _check_no_commit_raced(store, run_id, plan)
    return plan


def _check_no_commit_raced(store: Store, run_id: str, plan: GcPlan) -> None:
    """Raise if a writer committed files that gc deleted as leftovers while it ran."""
    lost = sorted(set(plan.leftovers) & _referenced(run_id, _live(read_manifest(store, run_id)[0])))
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
