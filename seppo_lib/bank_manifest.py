"""The bank manifest as a typed schema: untrusted input, validated on every read.

`<bank_uri>/<run_id>/manifest.json` is `{"run_id": str, "entries": [entry, ...]}`, each entry

    {"id": "initial" | "ckpt-<digits>", "round": int, "step": int, "parent": id | null,
     "files": {rel: sha256}, "attempt": <32 hex> (absent in manifests written before attempts),
     "removed": true (only on entries gc removed: kept so their children's lineage still checks)}

Rules (each violation is one `CheckpointError` line naming the manifest, the entry and the rule):
ids match the bank's pattern and are unique; file keys are normalized relative POSIX paths
inside the checkpoint (`seppo_lib.paths.key_problem`); `initial` is the only entry with round 0
and no parent; every other entry's parent is listed earlier, its round is the parent's + 1 and
its step is not below the parent's. A committed entry's files live under
`<run_id>/<id>/attempt-<attempt>/` (or `<run_id>/<id>/` for entries without an attempt).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seppo_lib.errors import CheckpointError
from seppo_lib.paths import check_key, key_problem, shown
from seppo_lib.storage import Store, join

INITIAL = "initial"
MANIFEST = "manifest.json"
CKPT_ID = re.compile(r"initial|ckpt-[0-9]{1,18}")
ATTEMPT = re.compile(r"[0-9a-f]{32}")
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_COUNT = 2**62  # rounds and steps: far above any run, far below int64 overflow
_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


def id_problem(ckpt_id: object) -> str | None:
    """Why `ckpt_id` is not a bank checkpoint id, or None when it is one."""
    if isinstance(ckpt_id, str) and CKPT_ID.fullmatch(ckpt_id):
        return None
    return f"id {shown(ckpt_id)} is not 'initial' or 'ckpt-<digits>'"


def _check_id(value: str, what: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {problem.removeprefix('id ')}")
    return value


class BankEntry(BaseModel):
    """One committed checkpoint of a run."""

    model_config = _STRICT

    id: str
    round: int = Field(ge=0, le=MAX_COUNT)
    step: int = Field(ge=0, le=MAX_COUNT)
    parent: str | None
    files: dict[str, str] = Field(min_length=1)
    attempt: str | None = None
    removed: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _check_id(value, "id")

    @field_validator("parent")
    @classmethod
    def _parent(cls, value: str | None) -> str | None:
        return value if value is None else _check_id(value, "parent")

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str]) -> dict[str, str]:
        for rel, sha in value.items():
            problem = key_problem(rel)
            if problem is not None:
                raise ValueError(f"file key {shown(rel)} {problem} (must be a relative path inside the checkpoint)")
            if not SHA256.fullmatch(sha):
                raise ValueError(f"file {shown(rel)} has sha256 {shown(sha)}, not 64 lowercase hex digits")
        return value

    @field_validator("attempt")
    @classmethod
    def _attempt(cls, value: str | None) -> str | None:
        if value is not None and not ATTEMPT.fullmatch(value):
            raise ValueError(f"attempt {shown(value)} is not 32 lowercase hex digits")
        return value

    def prefix(self, run_id: str) -> str:
        """The key prefix (no trailing '/') that holds this entry's files."""
        attempt = [f"attempt-{self.attempt}"] if self.attempt else []
        return check_key("/".join([run_id, self.id, *attempt]))

    def key(self, run_id: str, rel: str) -> str:
        """The exact store key of file `rel` of this entry (checked to stay under the run)."""
        return check_key(f"{self.prefix(run_id)}/{rel}")

    def keys(self, run_id: str) -> dict[str, str]:
        """rel -> exact store key, for every file of this entry."""
        return {rel: self.key(run_id, rel) for rel in self.files}

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump()
        if self.attempt is None:  # an entry from before attempts keeps its original form
            del data["attempt"]
        if not self.removed:
            del data["removed"]
        return data


class Manifest(BaseModel):
    """A run's committed checkpoints in commit order."""

    model_config = _STRICT

    run_id: str
    entries: list[BankEntry]

    @model_validator(mode="after")
    def _lineage(self) -> Manifest:
        seen: dict[str, BankEntry] = {}
        for i, e in enumerate(self.entries):
            where = f"entry #{i} ({e.id})"
            if e.id in seen:
                raise ValueError(f"{where}: duplicate id (each checkpoint is listed once)")
            root = (e.id == INITIAL, e.parent is None, e.round == 0)
            if any(root) and not all(root):
                raise ValueError(f"{where}: only '{INITIAL}' may have round 0 or no parent, and it has both")
            parent = seen.get(e.parent) if e.parent is not None else None
            if e.parent is not None and parent is None:
                raise ValueError(f"{where}: parent {e.parent} is not listed before it")
            if parent is not None and e.round != parent.round + 1:
                raise ValueError(f"{where}: round {e.round} is not its parent's round {parent.round} + 1")
            if parent is not None and e.step < parent.step:
                raise ValueError(f"{where}: step {e.step} is below its parent's step {parent.step}")
            seen[e.id] = e
        return self

    @property
    def live(self) -> list[BankEntry]:
        """The committed checkpoints readers may select (entries gc removed are not)."""
        return [e for e in self.entries if not e.removed]

    def without(self, ids: set[str]) -> Manifest:
        """This manifest with the entries `ids` marked removed (their lineage stays for their children)."""
        entries = [e.model_copy(update={"removed": True}) if e.id in ids else e for e in self.entries]
        return Manifest(run_id=self.run_id, entries=entries)

    def to_bytes(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "entries": [e.to_json() for e in self.entries]}, indent=1).encode()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {shown(key)} appears twice in one object")
        out[key] = value
    return out


def _describe(err: ValidationError, doc: object) -> str:
    """The first problem of `err` as 'entry #i (id): rule' (one line)."""
    first = err.errors(include_url=False)[0]
    loc, msg = first["loc"], first["msg"].removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "entries" and isinstance(loc[1], int):
        raw = doc.get("entries") if isinstance(doc, dict) else None
        item = raw[loc[1]] if isinstance(raw, list) and loc[1] < len(raw) else None
        raw_id = item.get("id") if isinstance(item, dict) else None
        field = f" field {shown(loc[2])}" if len(loc) > 2 else ""
        return f"entry #{loc[1]} (id {shown(raw_id)}){field}: {msg}"
    return f"{'.'.join(shown(p) for p in loc)}: {msg}" if loc else msg


def validate_manifest(doc: object, where: str, problem: str = "is invalid", hint: str = "fix or restore it") -> Manifest:
    """`doc` (parsed JSON) as a Manifest, or one CheckpointError line naming `where`, the entry and the rule."""
    try:
        return Manifest.model_validate(doc)
    except ValidationError as err:
        rule = _describe(err, doc)
    raise CheckpointError(f"bank manifest {where} {problem}: {rule}; {hint}".replace("\n", " "))


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Bytes of a manifest.json -> Manifest (JSON, then the schema); one CheckpointError line otherwise."""
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{where} is not a valid bank manifest (bad JSON: {shown(str(err))}); "
                              "fix or restore it") from None
    return validate_manifest(doc, where)


def read_manifest(store: Store, run_id: str) -> tuple[Manifest | None, str | None]:
    """(validated manifest, version token) of a run; (None, None) when it has none."""
    key = check_key(join(run_id, MANIFEST), store.uri)
    data, token = store.read_versioned(key)
    if data is None:
        return None, None
    return parse_manifest(data, store.describe(key)), token
