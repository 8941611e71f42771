"""Prompt-set parsers: good files of every kind, and one-line errors naming file and line/row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seppo_lib.errors import DataError
from seppo_lib.evaluation.prompts import PromptFileError, load_prompts


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def _raises(source: str, pattern: str) -> PromptFileError:
    with pytest.raises(PromptFileError, match=pattern) as info:
        load_prompts(source)
    assert "\n" not in str(info.value) and isinstance(info.value, DataError)
    return info.value


# ---- text ---------------------------------------------------------------------------------


def test_text_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    src = _write(tmp_path / "p.txt", "# header\n a red circle \n\n   \ntwo blue squares\n  # indented comment\nlast")
    assert load_prompts(src) == ["a red circle", "two blue squares", "last"]
    assert load_prompts(src, limit=2) == ["a red circle", "two blue squares"]
    assert load_prompts(f"file://{src}") == load_prompts(src)


def test_text_errors(tmp_path: Path) -> None:
    _raises(_write(tmp_path / "only.txt", "# nothing\n\n"), r"only\.txt: holds no prompts")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    _raises(str(tmp_path / "latin1.txt"), r"latin1\.txt: not UTF-8 text")
    _raises(str(tmp_path / "missing.txt"), r"missing\.txt: prompt file does not exist")
    _raises(_write(tmp_path / "p.csv", "a\n"), r"p\.csv: unsupported prompt file extension '\.csv'; use \.json, \.jsonl")
    with pytest.raises(ValueError, match="limit"):
        load_prompts(str(tmp_path / "p.csv"), limit=0)


# ---- jsonl / parquet (Pick-a-Pic) --------------------------------------------------------------


def test_jsonl_caption_or_prompt_column(tmp_path: Path) -> None:
    rows = [{"caption": "a cat", "best_image_uid": "x"}, {"caption": " a dog "}]
    src = _write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_prompts(src) == ["a cat", "a dog"]
    assert load_prompts(_write(tmp_path / "q.jsonl", '{"prompt": "a fox"}\n')) == ["a fox"]


def test_jsonl_errors(tmp_path: Path) -> None:
    _raises(_write(tmp_path / "a.jsonl", '{"caption": "ok"}\n{"caption": "broken"\n'), r"a\.jsonl: invalid JSON at line 2")
    _raises(_write(tmp_path / "b.jsonl", '{"caption": "ok"}\n\n{"caption": "  "}\n'), r"b\.jsonl: empty prompt at line 3")
    _raises(_write(tmp_path / "c.jsonl", '{"text": "x", "uid": 1}\n'),
            r"c\.jsonl: missing column 'caption' or 'prompt' at line 1 \(found: text, uid\)")
    _raises(_write(tmp_path / "d.jsonl", '["x"]\n'), r"d\.jsonl: line 1 is a JSON list, expected an object")
    _raises(_write(tmp_path / "e.jsonl", '{"caption": 3}\n'), r"e\.jsonl: prompt at line 1 is a int, not text")


def _parquet(path: Path, columns: dict[str, list]) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def test_pickapic_parquet_and_folder_of_shards(tmp_path: Path) -> None:
    src = _parquet(tmp_path / "validation_unique.parquet", {"caption": ["a cat", "a dog"], "label_0": [1.0, 0.0]})
    assert load_prompts(src) == ["a cat", "a dog"]
    shards = tmp_path / "shards"
    shards.mkdir()
    _parquet(shards / "part-1.parquet", {"caption": ["third"]})
    _parquet(shards / "part-0.parquet", {"caption": ["first", "second"]})
    assert load_prompts(str(shards)) == ["first", "second", "third"]
    assert load_prompts(str(shards), limit=1) == ["first"]


def test_parquet_errors(tmp_path: Path) -> None:
    _raises(_parquet(tmp_path / "a.parquet", {"text": ["x"], "uid": [1]}),
            r"a\.parquet: missing column 'caption' or 'prompt' \(found: text, uid\)")
    _raises(_parquet(tmp_path / "b.parquet", {"caption": ["ok", None, "x"]}), r"b\.parquet: empty prompt at row 1 \(0-based\)")
    _raises(_write(tmp_path / "c.parquet", "not parquet"), r"c\.parquet: not a readable parquet file")
    (tmp_path / "empty").mkdir()
    _raises(str(tmp_path / "empty"), r"empty: folder holds no \*\.parquet files")


# ---- PartiPrompts TSV ----------------------------------------------------------------------------


def test_partiprompts_tsv(tmp_path: Path) -> None:
    src = _write(tmp_path / "PartiPrompts.tsv",
                 'Prompt\tCategory\tChallenge\tNote\nbond\tAbstract\tBasic\t\nA "quoted" sign\tWorld Knowledge\tWriting\tx\n\n')
    assert load_prompts(src) == ["bond", 'A "quoted" sign']


def test_tsv_errors(tmp_path: Path) -> None:
    _raises(_write(tmp_path / "a.tsv", "prompt\tCategory\nx\ty\n"),
            r"a\.tsv: missing column 'Prompt' at line 1 \(header\) \(found: prompt, Category\)")
    _raises(_write(tmp_path / "b.tsv", "Category\tPrompt\nA\tok\nB\t \n"), r"b\.tsv: empty prompt at line 3")
    _raises(_write(tmp_path / "c.tsv", "Category\tPrompt\nA\n"), r"c\.tsv: empty prompt at line 2")
    _raises(_write(tmp_path / "d.tsv", ""), r"d\.tsv: empty TSV file")


# ---- HPSv2 JSON ----------------------------------------------------------------------------------


def test_hpsv2_json_shapes(tmp_path: Path) -> None:
    assert load_prompts(_write(tmp_path / "a.json", '["one", "two"]')) == ["one", "two"]
    assert load_prompts(_write(tmp_path / "b.json", '[{"prompt": "one"}, {"prompt": "two", "id": 2}]')) == ["one", "two"]
    styles = {"anime": ["a1", "a2"], "photo": [{"prompt": "p1"}]}
    assert load_prompts(_write(tmp_path / "c.json", json.dumps(styles))) == ["a1", "a2", "p1"]


def test_json_errors(tmp_path: Path) -> None:
    _raises(_write(tmp_path / "a.json", '[\n  "one",\n  "two",\n]'), r"a\.json: invalid JSON at line 4")
    _raises(_write(tmp_path / "b.json", '["one", ""]'), r"b\.json: empty prompt at item \[1\]")
    _raises(_write(tmp_path / "c.json", '{"anime": ["ok"], "photo": [{"text": "x"}]}'),
            r"c\.json: missing column 'prompt' or 'caption' at item \['photo'\]\[0\] \(found: text\)")
    _raises(_write(tmp_path / "d.json", '{"anime": "one"}'), r"d\.json: \['anime'\] is a JSON str; expected a list")
    _raises(_write(tmp_path / "e.json", '"one"'), r"e\.json: top level is a JSON str")


# ---- built-ins ------------------------------------------------------------------------------------


def test_builtin_world_splits() -> None:
    grammar = pytest.importorskip("seppo_lib.world.grammar")
    test = load_prompts("builtin:world-test")
    train = load_prompts("builtin:world-train", limit=5)
    assert test == [p.text for p in grammar.split_prompts("test")]
    assert len(train) == 5 and not set(train) & set(test)
    _raises("builtin:world-val", r"unknown built-in prompt set 'builtin:world-val'; use one of builtin:world-test")


def test_builtin_video_world_splits() -> None:
    from seppo_lib.world.video import motion_split

    test, train = load_prompts("builtin:world-video-test"), load_prompts("builtin:world-video-train")
    assert test == [p.text for p in motion_split("test")] and (len(test), len(train)) == (32, 88)
    assert not set(test) & set(train) and test[0] == "a red circle moving up"
    assert load_prompts("builtin:world-video-test", limit=4) == test[:4]


def test_remote_prompt_file_is_fetched_through_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import seppo_lib.storage as storage

    bucket = tmp_path / "bucket"
    (bucket / "sets").mkdir(parents=True)
    _write(bucket / "sets" / "p.txt", "a cat\na dog\n")
    monkeypatch.setattr(storage, "open_store", lambda uri: storage.LocalStore(bucket / uri.removeprefix("s3://b").lstrip("/")))
    assert load_prompts("s3://b/sets/p.txt") == ["a cat", "a dog"]
    _raises("s3://b/sets/none.txt", r"s3://b/sets/none\.txt: no such prompt file or folder")
