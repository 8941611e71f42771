"""CLI friction: global flags in either position, one output option, read commands that never create a
registry, did-you-mean config keys, `workdir` as the root of bank and cache, doc commands that parse."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
from pydantic import BaseModel

from seppo_lib.cli import build_parser, main, parse
from seppo_lib.cli.common import OUTPUT_FLAGS
from seppo_lib.config import load_config
from seppo_lib.config_docs import field_paths

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REPO_RELATIVE = ("seppo_lib/", "pipelines/", "tests/", "components/")


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "train", "--config", "tiny"],
        ["train", "--config", "tiny", "-v"],
        ["train", "--verbose", "--config", "tiny"],
        ["bank", "ls", "/x", "-v"],
        ["bank", "-v", "ls", "/x"],
        ["pipeline", "compile", "--config", "tiny", "-v"],
        ["pipeline", "-v", "submit", "--config", "tiny"],
        ["config", "show", "--config", "tiny", "--verbose"],
        ["registry", "ls", "seppo-world", "-v"],
        ["world", "accuracy", "--model", "builtin:world-base", "-v"],
    ],
)
def test_verbose_before_or_after_the_subcommand(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).verbose is True


@pytest.mark.parametrize("argv", [["train", "--config", "tiny"], ["bank", "ls", "/x"], ["pipeline", "compile"]])
def test_verbose_defaults_off(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).verbose is False


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command parser of the tree with its words, leaves and inner nodes."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


def test_model_arguments_take_builtin_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seppo_lib.cli.world import _model_dir
    from seppo_lib.world.builtin import BUILTIN_WORLD_BASE

    monkeypatch.chdir(tmp_path)
    assert _model_dir("builtin:world-base") == BUILTIN_WORLD_BASE
    assert _model_dir(f"file://{BUILTIN_WORLD_BASE}") == BUILTIN_WORLD_BASE


def test_every_output_option_is_out_output_and_o() -> None:
    writers = []
    for words, parser in _commands(build_parser()):
        options = {flag: action for action in parser._actions for flag in action.option_strings}
        named = [options[f] for f in ("--out", "--output") if f in options]
        if named:
            writers.append(" ".join(words))
            assert {options.get(f) for f in OUTPUT_FLAGS} == {named[0]}, f"seppo {' '.join(words)}: {sorted(options)}"
            assert named[0].dest == "out"
            help_text = parser.format_help()
            assert "--out" in help_text and "--output" in help_text
    for command in ("prepare", "sample", "evaluate", "export", "pipeline compile", "pipeline submit",
                    "pipeline schedule", "registry download", "world pretrain", "world generate"):  # fmt: skip
        assert command in writers


def test_pipeline_script_takes_the_same_output_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.seppo_pipeline import main as compile_main

    with pytest.raises(SystemExit):
        compile_main(["--help"])
    assert "--out FILE, --output FILE, -o FILE" in capsys.readouterr().out


@pytest.mark.parametrize("flag", OUTPUT_FLAGS)
def test_output_flags_parse_alike(flag: str) -> None:
    parser = build_parser()
    assert parser.parse_args(["pipeline", "compile", flag, "p.yaml"]).out == "p.yaml"
    assert parser.parse_args(["prepare", "--config", "tiny", flag, "d"]).out == "d"


def test_export_destination_as_positional_or_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seppo_lib.cli.common import output_from

    def destination(*argv: str) -> tuple[str, list[str]]:
        args = parse(build_parser(), ["export", "builtin:world-base", *argv])
        return output_from(args, "OUT_DIR"), args.overrides

    for argv in (["D", "a.b=1", "c.d=2"], ["--out", "D", "a.b=1", "c.d=2"], ["a.b=1", "--output", "D", "c.d=2"],
                 ["D", "--config", "tiny", "a.b=1", "c.d=2"], ["-o", "D", "a.b=1", "--config", "tiny", "c.d=2"]):  # fmt: skip
        assert destination(*argv) == ("D", ["a.b=1", "c.d=2"]), argv
    assert main(["export", "builtin:world-base", str(tmp_path / "a"), "--output", str(tmp_path / "b")]) == 2
    assert main(["export", "builtin:world-base"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "given twice" in err[0] and "missing the destination OUT_DIR" in err[1]
    assert not any(tmp_path.iterdir())


def test_bank_ls_missing_local_root_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such"
    assert main(["bank", "ls", str(missing)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert errors == [errors[-1]] and errors[0].startswith("seppo: error:") and str(missing) in errors[0], captured
    assert captured.out == ""
    assert main(["bank", "ls", f"file://{missing}"]) == 2
    assert not missing.exists()  # ls never creates the root


def test_bank_ls_existing_empty_root_says_no_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bank", "ls", str(tmp_path)]) == 0
    assert f"no runs under {tmp_path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["registry", "ls", "seppo-world"],
        ["registry", "promote", "seppo-world", "1"],
        ["registry", "rollback", "seppo-world"],
        ["registry", "download", "seppo-world", "DEST"],
        ["bank", "gc", "BANK", "run-1", "--model-name", "seppo-world", "--dry-run"],
    ],
)
@pytest.mark.parametrize("relative", [False, True])
def test_read_commands_refuse_a_missing_sqlite_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], relative: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    db = Path("runs/mlflow.db") if relative else tmp_path / "runs" / "mlflow.db"
    (tmp_path / "runs").mkdir()
    argv = [str(tmp_path / a) if a in ("DEST", "BANK") else a for a in argv]
    assert main([*argv, "--tracking-uri", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"MLflow database {db} does not exist" in err[0] and "`seppo run`" in err[0], err
    assert list((tmp_path / "runs").iterdir()) == [] and not (tmp_path / "DEST").exists()


def test_an_existing_sqlite_db_and_other_uris_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seppo_lib.tracking.mlflow_env import require_existing_db, sqlite_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").write_bytes(b"")
    for uri in (f"sqlite:///{tmp_path / 'mlflow.db'}", "sqlite:///mlflow.db", "sqlite:///mlflow.db?timeout=5",
                "http://mlflow:5000", "sqlite:///:memory:"):  # fmt: skip
        require_existing_db(uri)
    assert sqlite_file(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db" and sqlite_file("sqlite:///r/x.db") == Path("r/x.db")


def test_unknown_key_suggests_the_field_and_points_at_the_listing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "show", "--config", "tiny", "train.betta=3"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.endswith("train.betta: unknown key; did you mean train.beta? (seppo config fields lists every field)"), line
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("name: mine\ntrain:\n  n_round: 2\n")
    assert main(["config", "show", "--config", str(yaml_file)]) == 2
    assert f"({yaml_file}): train.n_round: unknown key; did you mean train.n_rounds?" in capsys.readouterr().err
    for override, hint in (("trian.beta=3", "; did you mean train?"), ("betta=3", "; did you mean train.beta?"),
                           ("train.nope=1", " (seppo config"), ("sed=1", "; did you mean train.seed or eval.seed?")):  # fmt: skip
        assert main(["config", "show", override]) == 2
        assert f"unknown key{hint}" in capsys.readouterr().err


def test_config_fields_lists_every_field_with_type_default_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "fields"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split()[0] for line in lines[1:]]
    assert lines[0].split() == ["KEY", "TYPE", "DEFAULT", "DESCRIPTION"]
    assert keys == [k for k, f in field_paths().items() if not isinstance(f.default, BaseModel)]
    assert {"workdir", "train.beta", "bank.uri", "registry.min_margin"} <= set(keys)
    beta = next(line for line in lines if line.startswith("train.beta "))
    assert beta.split()[1:3] == ["float", "2000.0"] and "β: literal coefficient on the mean-MSE difference." in beta
    assert "e.g. builtin:world-video" in next(line for line in lines if line.startswith("data.num_frames "))
    assert main(["config", "fields", "bank"]) == 0
    bank = capsys.readouterr().out
    assert re.search(r"^bank\.uri +str +<workdir>/bank ", bank, re.M) and "train." not in bank
    assert main(["config", "fields", "bnak"]) == 2
    assert "bnak: unknown key; did you mean bank?" in capsys.readouterr().err


def test_workdir_is_the_root_of_bank_and_cache() -> None:
    moved = load_config("tiny", ["workdir=/x/runs"])
    assert (moved.bank.uri, moved.bank.cache_dir) == ("/x/runs/bank", "/x/runs/cache")
    default = load_config("world")
    assert (default.workdir, default.bank.uri, default.bank.cache_dir) == ("seppo-runs", "seppo-runs/bank", "seppo-runs/cache")
    explicit = load_config("tiny", ["workdir=/x", "bank.uri=s3://b/bank", "bank.cache_dir=/c"])
    assert (explicit.bank.uri, explicit.bank.cache_dir) == ("s3://b/bank", "/c")
    assert load_config("tiny", ["workdir=/x", "bank.uri=null"]).bank.uri == "/x/bank"
    cluster = load_config("sd15-pickapic")
    assert (cluster.bank.uri, cluster.bank.cache_dir) == ("s3://seppo/bank", "/mnt/seppo/cache")
    again = type(moved).from_json(moved.to_json())  # what a KFP component receives
    assert (again.bank.uri, again.bank.cache_dir) == ("/x/runs/bank", "/x/runs/cache")


def _doc_commands() -> list[tuple[str, str]]:
    """(file:line, command) for every `seppo ...` line inside a fenced code block of README.md and docs/*.md."""
    found = []
    for doc in DOCS:
        in_block, pending = False, ""
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block, pending = not in_block, ""
                continue
            text = pending + line.split(" # ")[0].split("  #")[0].strip()
            pending = text[:-1] + " " if in_block and text.endswith("\\") else ""
            match = re.search(r"(?:^|&& |\$ |/)seppo (.*)$", text)
            if in_block and not pending and match:
                command = re.split(r" (?:&&|\||&)(?: |$)", match.group(1) + " ")[0]
                found.append((f"{doc.name}:{number}", command.strip()))
    return found


@pytest.mark.parametrize(("where", "command"), _doc_commands())
def test_every_documented_command_parses_and_runs_from_any_directory(where: str, command: str) -> None:
    words = shlex.split(command)
    assert not [w for w in words if w.split("=")[-1].startswith(REPO_RELATIVE)], f"{where}: repo-relative path in {command}"
    try:
        build_parser().parse_args(words)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `seppo {command}` does not parse (exit {exit_.code})")


def test_inline_commands_use_no_repo_relative_paths() -> None:
    for doc in DOCS:
        for command in re.findall(r"`seppo ([^`]+)`", doc.read_text()):
            assert not [w for w in command.split() if w.startswith(REPO_RELATIVE)], f"{doc.name}: `seppo {command}`"


def test_one_dvc_remote_in_dvc_config_settings_and_bucket_job() -> None:
    import configparser

    import yaml

    dvc = configparser.ConfigParser()
    dvc.read(REPO / ".dvc" / "config")
    name = dvc["core"]["remote"]
    remote = dvc[f"'remote \"{name}\"'"]
    manifests = yaml.safe_load_all((REPO / "k8s/base/settings.yaml").read_text())
    settings = next(d for d in manifests if d["metadata"]["name"] == "seppo-settings")
    job = yaml.safe_load((REPO / "k8s/overlays/dev/create-buckets-job.yaml").read_text())
    buckets = next(e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "BUCKETS")
    assert [s for s in dvc.sections() if s.startswith("'remote")] == [f"'remote \"{name}\"'"]  # exactly one remote
    assert remote["url"] == settings["data"]["SEPPO_DVC_REMOTE"]
    assert remote["endpointurl"] == settings["data"]["AWS_ENDPOINT_URL"]
    assert remote["url"].removeprefix("s3://").split("/")[0] in buckets.split()
    for doc in DOCS:  # every documented `dvc remote modify` of a user's own endpoint stays out of git
        for line in re.findall(r"dvc remote modify [^\n`]*", doc.read_text()):
            assert "--local" in line, f"{doc.name}: {line}"
        assert "seppo-dvc" not in doc.read_text(), doc.name
