"""Reading config YAML (files and `a.b=value` overrides) without surprises.

The loader is PyYAML's safe loader with four limits: no anchors or aliases (a 386-byte
"billion laughs" file would otherwise expand to gigabytes), at most `MAX_DEPTH` levels of
nesting (deeper input used to end in RecursionError), at most `MAX_FILE_BYTES` per file,
and dates stay strings (`dvc_rev: 2024-01-01` is a tag name, not a datetime). Every
problem is a one-line `ConfigError` naming the file or override and the position.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import Node

from seppo_lib.errors import ConfigError

MAX_DEPTH = 16
MAX_FILE_BYTES = 256 * 1024
MAX_KEY_PARTS = 4
_KEY_PART = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


def one_line(text: str, limit: int = 300) -> str:
    """`text` with control characters escaped and cut to `limit` characters."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class _ConfigLoader(yaml.SafeLoader):
    """Safe loader that refuses anchors/aliases and nesting deeper than MAX_DEPTH."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed", event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as err:  # e.g. `0b_` or `._` match the int/float patterns
            raise ConstructorError(None, None, f"cannot read {node.value!r} ({err})", node.start_mark) from None


def _describe(err: yaml.YAMLError) -> str:
    """'line L, column C: problem' (1-based) for a PyYAML error."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "not valid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return one_line(where + problem)
    if isinstance(err, yaml.reader.ReaderError):
        return one_line(f"character {err.position + 1}: {err.reason} ({err.character!r})")
    return one_line(str(err).splitlines()[0] if str(err) else type(err).__name__)


def parse_yaml(text: str, origin: str) -> Any:
    """YAML text -> Python value, or a one-line ConfigError naming `origin`."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - _ConfigLoader is a SafeLoader
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: not valid YAML: {_describe(err)}") from None


def read_yaml_file(path: Path) -> dict[str, Any]:
    """A config file's top-level mapping ({} for an empty file)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; is this a config file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start + 1}); config files are UTF-8 YAML") from None
    loaded = parse_yaml(text, str(path)) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return loaded


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value parsed as YAML)."""
    shown = one_line(repr(text), 120)
    if "=" not in text:
        raise ConfigError(f"override {shown} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override {shown} has an empty key part")
    if len(parts) > MAX_KEY_PARTS or not all(_KEY_PART.match(p) for p in parts):
        raise ConfigError(f"override {shown}: keys are up to {MAX_KEY_PARTS} names of letters, digits, '_' or '-'")
    return parts, parse_yaml(raw, f"override {shown}") if raw != "" else ""
