"""Evaluation prompt sets: text, Pick-a-Pic parquet/jsonl, PartiPrompts TSV, HPSv2 JSON, built-ins.

`load_prompts(source)` picks the parser from the extension (a folder means a folder of parquet
shards); every problem is a one-line `PromptFileError` naming the file and the line or row.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from seppo_lib import plugins
from seppo_lib.errors import DataError

#: Column holding the prompt, by preference: Pick-a-Pic's `caption`, else `prompt`.
CAPTION_COLUMNS = ("caption", "prompt")
PARTI_COLUMN = "Prompt"


class PromptFileError(DataError):
    """A prompt file is missing, unreadable or malformed."""


def load_prompts(source: str, limit: int | None = None) -> list[str]:
    """The prompts of `source` in file order, the first `limit` of them when given.

    source: a path or URI (file://, s3://) of a .txt, .jsonl, .parquet (or a folder of them),
    .tsv or .json file, or a registered prompt set (`seppo_lib.plugins.prompt_sets`: `builtin:world-test` /
    `builtin:world-train` (image world), `builtin:world-video-test` / `builtin:world-video-train` (video world)).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if source.startswith("builtin:"):
        prompts = _builtin(source)
    elif "://" in source and not source.startswith("file://"):
        with tempfile.TemporaryDirectory(prefix="seppo-prompts-") as tmp:
            prompts = _load_file(_download(source, Path(tmp)), source)
    else:
        prompts = _load_file(Path(source.removeprefix("file://")).expanduser(), source)
    if not prompts:
        raise PromptFileError(f"{source}: holds no prompts")
    return prompts[:limit] if limit is not None else prompts


def _builtin(source: str) -> list[str]:
    if source not in plugins.prompt_sets:
        raise PromptFileError(f"unknown built-in prompt set {source!r}; use one of {', '.join(plugins.prompt_sets.names())}")
    return list(plugins.prompt_sets.get(source).prompts())


def _download(uri: str, tmp: Path) -> Path:
    from seppo_lib.storage import open_store

    parent, _, name = uri.rstrip("/").rpartition("/")
    store = open_store(parent)
    dest = tmp / name
    if store.exists(name):
        store.get_file(name, dest)
    elif not store.get_dir(name, dest):
        raise PromptFileError(f"{uri}: no such prompt file or folder")
    return dest


def _load_file(path: Path, shown: str) -> list[str]:
    if path.is_dir():
        shards = sorted(path.glob("*.parquet"))
        if not shards:
            raise PromptFileError(f"{shown}: folder holds no *.parquet files")
        return [p for shard in shards for p in _parquet(shard, f"{shown}/{shard.name}")]
    if not path.is_file():
        raise PromptFileError(f"{shown}: prompt file does not exist")
    parser = _PARSERS.get(path.suffix.lower())
    if parser is None:
        raise PromptFileError(
            f"{shown}: unsupported prompt file extension {path.suffix!r}; use {', '.join(sorted(_PARSERS))} or a folder of .parquet"
        )
    return parser(path, shown)


def _text(value: Any, shown: str, where: str) -> str:
    """A stripped, non-empty prompt, or a PromptFileError naming where it was found."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PromptFileError(f"{shown}: empty prompt at {where}")
    if not isinstance(value, str):
        raise PromptFileError(f"{shown}: prompt at {where} is a {type(value).__name__}, not text")
    return value.strip()


def _column(columns: Iterable[str], wanted: tuple[str, ...], shown: str, where: str = "") -> str:
    columns = list(columns)
    for name in wanted:
        if name in columns:
            return name
    at = f" at {where}" if where else ""
    raise PromptFileError(
        f"{shown}: missing column {' or '.join(map(repr, wanted))}{at} (found: {', '.join(map(str, columns)) or 'none'})"
    )


def _read_text(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PromptFileError(f"{shown}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _txt(path: Path, shown: str) -> list[str]:
    lines = (line.strip() for line in _read_text(path, shown).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _jsonl(path: Path, shown: str) -> list[str]:
    prompts = []
    for number, line in enumerate(_read_text(path, shown).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{shown}: invalid JSON at line {number} ({err.msg})") from None
        if not isinstance(row, dict):
            raise PromptFileError(f"{shown}: line {number} is a JSON {type(row).__name__}, expected an object")
        column = _column(row, CAPTION_COLUMNS, shown, f"line {number}")
        prompts.append(_text(row[column], shown, f"line {number}"))
    return prompts


def _parquet(path: Path, shown: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        column = _column(schema.names, CAPTION_COLUMNS, shown)
        values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    except PromptFileError:
        raise
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PromptFileError(f"{shown}: not a readable parquet file ({first})") from None
    return [_text(value, shown, f"row {index} (0-based)") for index, value in enumerate(values)]


def _tsv(path: Path, shown: str) -> list[str]:
    rows = csv.reader(_read_text(path, shown).splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, None)
    if header is None:
        raise PromptFileError(f"{shown}: empty TSV file (expected a header with a {PARTI_COLUMN!r} column)")
    index = header.index(_column(header, (PARTI_COLUMN,), shown, "line 1 (header)"))
    prompts = []
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        prompts.append(_text(row[index] if index < len(row) else "", shown, f"line {number}"))
    return prompts


def _json(path: Path, shown: str) -> list[str]:
    try:
        data = json.loads(_read_text(path, shown))
    except json.JSONDecodeError as err:
        raise PromptFileError(f"{shown}: invalid JSON at line {err.lineno} ({err.msg})") from None
    if isinstance(data, dict):  # HPSv2 benchmark: style -> list of prompts
        return [p for style, items in data.items() for p in _json_list(items, shown, f"[{style!r}]")]
    return _json_list(data, shown, "")


def _json_list(items: Any, shown: str, prefix: str) -> list[str]:
    if not isinstance(items, list):
        kind = type(items).__name__
        raise PromptFileError(f"{shown}: {prefix or 'top level'} is a JSON {kind}; expected a list of prompts")
    prompts = []
    for index, item in enumerate(items):
        where = f"item {prefix}[{index}]"
        if isinstance(item, dict):
            item = item[_column(item, ("prompt", "caption"), shown, where)]
        prompts.append(_text(item, shown, where))
    return prompts


_PARSERS: dict[str, Callable[[Path, str], list[str]]] = {
    ".txt": _txt,
    ".jsonl": _jsonl,
    ".parquet": _parquet,
    ".tsv": _tsv,
    ".json": _json,
}
