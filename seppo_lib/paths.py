"""Path safety: the one place that decides whether a local path or a store key stays inside its root.

- `safe_path(root, *parts)` resolves `root/parts` (symlinks followed) and returns it only when it
  lies strictly under the resolved root. Every local write, delete, rename and rmtree of the bank
  (`LocalStore`) and of the checkpoint cache (`CheckpointBank.fetch`) goes through it.
- `check_key(key)` accepts only a normalized relative '/'-separated key (no absolute, `..`, `.`,
  empty part, backslash or control character): keys built from untrusted input (a manifest) go
  through it before any store, local or S3, sees them.

Both raise `UnsafePathError`, a one-line user error (also a ValueError, as the stores raised before).
"""

from __future__ import annotations

import re
from pathlib import Path

from seppo_lib.errors import SeppoError

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_MAX_SHOWN = 80


class UnsafePathError(SeppoError, ValueError):
    """A path or key would leave its root (or cannot be a path at all)."""


def shown(value: object) -> str:
    """`value` as a short one-line repr, safe to put in an error message."""
    text = ascii(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def key_problem(key: object) -> str | None:
    """Why `key` is not a normalized relative POSIX key, or None when it is one."""
    if not isinstance(key, str):
        return f"must be a string, not {type(key).__name__}"
    if not key:
        return "is empty"
    if _BAD_CHARS.search(key):
        return "contains a backslash or a control character"
    if key.startswith("/"):
        return "is absolute"
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' part"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode"
    return None


def check_key(key: str, root: str = "") -> str:
    """`key` itself when it is a normalized relative key (stays under the store root `root`); else UnsafePathError."""
    problem = key_problem(key)
    if problem is not None:
        where = f" {root}" if root else ""
        raise UnsafePathError(f"key {shown(key)} escapes the store root{where}: it {problem}; refused")
    return key


def safe_path(root: str | Path, *parts: str) -> Path:
    """`root/parts` resolved, refused (UnsafePathError) unless strictly under the resolved `root`."""
    try:
        base = Path(root).expanduser().resolve()
        target = base.joinpath(*parts).resolve()
    except (ValueError, OSError, RuntimeError) as err:  # NUL byte, unencodable text, symlink loop
        raise UnsafePathError(f"path {shown('/'.join(parts))} under {shown(str(root))} cannot be used: {err}") from None
    if base not in target.parents:
        raise UnsafePathError(f"path {shown('/'.join(parts))} escapes the root {base}; refused")
    return target
