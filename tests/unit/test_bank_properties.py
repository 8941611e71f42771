"""Property tests (Hypothesis) for the bank manifest schema and the path helpers: random and
adversarial input either validates or raises the one-line error type, never another exception,
and nothing that validates ever resolves outside its root."""

from __future__ import annotations

import json
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seppo_lib.bank_manifest import CKPT_ID, parse_manifest, validate_manifest
from seppo_lib.errors import CheckpointError
from seppo_lib.paths import UnsafePathError, check_key, safe_path

ROOT = Path(tempfile.mkdtemp(prefix="seppo-paths-")).resolve()
(ROOT / "inside").mkdir()
(ROOT / "inside" / "out").symlink_to(ROOT.parent)  # a symlink that leaves the root
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ADVERSARIAL = st.sampled_from([
    "", ".", "..", "/", "//", "\\", "..\\..", "\x00", "a\x00b", "~", "~root", "/etc/passwd", "../../..",
    "a/../../b", "inside/out/x", "inside/out", "C:\\x", "\u202e", "\udc80", "\ud800", "é/ü", "a/./b", "a//b",
    "a/", " ", "\n", "%2e%2e", "ckpt-1/../..", str(ROOT.parent / "x"),
])  # fmt: skip
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # every code point, surrogates too
PARTS = st.lists(st.one_of(ADVERSARIAL, ANY_TEXT, st.sampled_from(["a", "unet", "w.safetensors"])), max_size=5)
KEYS = st.one_of(ADVERSARIAL, ANY_TEXT, PARTS.map("/".join))
IDS = st.one_of(ADVERSARIAL, ANY_TEXT, st.sampled_from(["initial", "ckpt-000001", "ckpt-2", "ckpt-", "ckpt-x"]),
                st.integers(0, 10**20).map(lambda n: f"ckpt-{n:06d}"))  # fmt: skip
INTS = st.one_of(st.integers(-3, 5), st.integers(), st.booleans(), st.floats(allow_nan=True), st.just("1"), st.none())
SHAS = st.one_of(st.just("a" * 64), st.just("A" * 64), ANY_TEXT, st.integers())


@SETTINGS
@given(PARTS)
def test_safe_path_stays_under_its_root_or_refuses(parts: list[str]) -> None:
    try:
        path = safe_path(ROOT, *parts)
    except UnsafePathError as err:
        assert "\n" not in str(err)
        return
    assert ROOT in path.parents and path == path.resolve()


@SETTINGS
@given(KEYS)
def test_check_key_accepts_only_normalized_relative_keys(key: str) -> None:
    try:
        assert check_key(key, "s3://bucket/prefix") == key
    except UnsafePathError as err:
        assert "\n" not in str(err) and "escapes the store root s3://bucket/prefix" in str(err)
        return
    assert posixpath.normpath(key) == key and not key.startswith("/") and "\\" not in key and "\x00" not in key
    assert ".." not in key.split("/")
    if not key.startswith("inside/out"):  # no symlinks on the way: a valid key is always under the root
        assert ROOT in safe_path(ROOT, key).parents


def _entry(draw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": draw(IDS), "round": draw(INTS), "step": draw(INTS), "parent": draw(st.one_of(st.none(), IDS)),
        "files": draw(st.dictionaries(KEYS, SHAS, max_size=3)),
    }  # fmt: skip
    if draw(st.booleans()):
        entry["attempt"] = draw(st.one_of(st.just("0" * 32), ANY_TEXT))
    if draw(st.booleans()):
        entry[draw(st.sampled_from(["removed", "extra"]))] = draw(st.one_of(st.booleans(), ANY_TEXT))
    return entry


@st.composite
def manifests(draw: Any) -> Any:
    """Mostly manifest-shaped documents with adversarial fields, sometimes arbitrary JSON."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.recursive(st.none() | st.booleans() | st.integers() | ANY_TEXT,
                                 lambda kids: st.lists(kids, max_size=3) | st.dictionaries(ANY_TEXT, kids, max_size=3),
                                 max_leaves=10))  # fmt: skip
    return {"run_id": draw(st.one_of(st.just("run1"), ANY_TEXT, st.integers())),
            "entries": [_entry(draw) for _ in range(draw(st.integers(0, 4)))]}  # fmt: skip


SAFE_PARTS = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=6).filter(
    lambda p: p not in (".", "..") and "/" not in p and "\\" not in p
)
SAFE_KEYS = st.lists(SAFE_PARTS, min_size=1, max_size=3).map("/".join)


@st.composite
def lineages(draw: Any) -> tuple[dict[str, Any], bool]:
    """A valid manifest (θ_0, then a chain and branches), optionally with one adversarial change."""
    entries = [{"id": "initial", "round": 0, "step": 0, "parent": None, "files": {"unet/w": "a" * 64}}]
    for n in range(draw(st.integers(0, 5))):
        parent = draw(st.sampled_from(entries))
        entries.append({"id": f"ckpt-{n + 1:06d}", "round": parent["round"] + 1, "step": parent["step"] + draw(st.integers(0, 9)),
                        "parent": parent["id"], "files": draw(st.dictionaries(SAFE_KEYS, st.just("b" * 64), min_size=1, max_size=3)),
                        "attempt": "0123456789abcdef" * 2})  # fmt: skip
    changed = draw(st.booleans())
    if changed:
        victim = draw(st.sampled_from(entries))
        field = draw(st.sampled_from(["id", "round", "step", "parent", "files", "attempt"]))
        victim[field] = draw({"id": IDS, "round": INTS, "step": INTS, "parent": st.one_of(st.none(), IDS),
                              "files": st.dictionaries(KEYS, SHAS, max_size=2), "attempt": ANY_TEXT}[field])  # fmt: skip
    return {"run_id": "run1", "entries": entries}, changed


@SETTINGS
@given(lineages())
def test_lineages_validate_unless_changed_and_then_one_line(case: tuple[dict[str, Any], bool]) -> None:
    doc, changed = case
    try:
        manifest = validate_manifest(doc, "/bank/run1/manifest.json")
    except CheckpointError as err:
        assert changed and "\n" not in str(err) and "entry #" in str(err), err
        return
    _check_valid(manifest)
    assert manifest.to_bytes() == validate_manifest(json.loads(manifest.to_bytes()), "again").to_bytes()


def _check_valid(manifest: Any) -> None:
    ids = [e.id for e in manifest.entries]
    assert len(ids) == len(set(ids)) and all(CKPT_ID.fullmatch(i) for i in ids)
    for e in manifest.entries:
        for key in e.keys("run1").values():
            assert ROOT in safe_path(ROOT, key).parents and key.startswith(f"run1/{e.id}/")


@SETTINGS
@given(manifests())
def test_manifest_validates_or_raises_one_checkpoint_error(doc: Any) -> None:
    try:
        manifest = validate_manifest(doc, "s3://bucket/bank/run1/manifest.json")
    except CheckpointError as err:
        assert "\n" not in str(err) and str(err).startswith("bank manifest s3://bucket/bank/run1/manifest.json ")
        return
    _check_valid(manifest)
    assert validate_manifest(json.loads(manifest.to_bytes()), "again") == manifest  # round trip


@SETTINGS
@given(st.one_of(st.binary(max_size=200), manifests().map(lambda d: json.dumps(d).encode())))
def test_manifest_bytes_parse_or_raise_one_checkpoint_error(data: bytes) -> None:
    try:
        manifest = parse_manifest(data, "/bank/run1/manifest.json")
    except CheckpointError as err:
        assert "\n" not in str(err) and "/bank/run1/manifest.json" in str(err)
        return
    _check_valid(manifest)


def test_deep_nesting_is_one_line() -> None:
    try:
        parse_manifest(b"[" * 100_000 + b"]" * 100_000, "m.json")
    except CheckpointError as err:
        assert "\n" not in str(err)
