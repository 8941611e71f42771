"""The registries of seppo_lib.plugins: the core imports no world, and a user's plugin is used like the built-in one."""

from __future__ import annotations

import ast
import csv
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from seppo_lib import plugins
from seppo_lib.config import ConfigError
from seppo_lib.errors import DataError
from seppo_lib.evaluation.prompts import PromptFileError, load_prompts
from seppo_lib.evaluation.scorer_choices import check_eval_config
from seppo_lib.steps import evaluate, prepare_data
from tests.helpers import make_image_folder, tiny_config

PACKAGE = Path(__file__).resolve().parents[2] / "seppo_lib"
#: Where the world may be imported: the world itself, the benchmark (about the world) and the world's CLI.
WORLD_SIDE = ("world/", "bench/", "cli/world.py")


def _imports_world(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + ([f"seppo_lib.{a.name}" for a in node.names] if node.module == "seppo_lib" else [])
        else:
            continue
        if any(n == "seppo_lib.world" or n.startswith("seppo_lib.world.") for n in names):
            lines.append(node.lineno)
    return lines


def test_no_core_module_imports_the_world() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(WORLD_SIDE):
            continue
        offenders += [f"{rel}:{line}" for line in _imports_world(ast.parse(path.read_text(), rel))]
    assert offenders == [], f"core modules import seppo_lib.world (register it in seppo_lib/world/registration.py): {offenders}"


def test_the_import_check_sees_every_form() -> None:
    forms = ["import seppo_lib.world.video", "from seppo_lib.world.video import x", "from seppo_lib import world",
             "def f():\n    from seppo_lib.world import grammar"]  # fmt: skip
    assert [bool(_imports_world(ast.parse(code))) for code in forms] == [True] * 4
    assert not _imports_world(ast.parse("from seppo_lib.world_pipeline import WorldPipeline\nimport seppo_lib.worlds"))


@pytest.fixture
def user_plugin(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A user's source (four squares), prompt set and scorer (prompt length), registered through the public API."""
    calls: list[dict[str, object]] = []

    def materialize(params: dict[str, object], scratch: Path, cache_dir: Path) -> Path:
        calls.append({**params, "cache_dir": cache_dir})
        return make_image_folder(cache_dir / "squares", n=int(params["n"]))  # type: ignore[call-overload]

    class LengthScorer:
        name = "length"

        def score(self, images: list[object], prompts: list[str]) -> list[float]:
            return [float(len(p)) for p in prompts]

    plugins.data_sources.register("builtin:squares", plugins.DataSource(lambda o: {"n": 4}, materialize, Path(__file__).parent,
                                                                        ("test_plugins.py",)))  # fmt: skip
    plugins.prompt_sets.register("builtin:short", plugins.PromptSet(lambda: ["a cat", "a big dog"]))
    plugins.scorers.register("length", plugins.ScorerPlugin(lambda path, device, batch: LengthScorer()))
    yield {"calls": calls}
    for registry, name in ((plugins.data_sources, "builtin:squares"), (plugins.prompt_sets, "builtin:short"), (plugins.scorers, "length")):
        registry.unregister(name)  # type: ignore[attr-defined]


def test_prepare_data_uses_a_registered_source(tmp_path: Path, user_plugin: dict[str, object]) -> None:
    cfg = tiny_config(tmp_path, tmp_path, "data.source=builtin:squares")
    meta = prepare_data.run(cfg, tmp_path / "out")
    assert meta["rows"] == 4 and meta["source"] == "builtin:squares"
    assert user_plugin["calls"] == [{"n": 4, "cache_dir": tmp_path / "cache"}]
    assert cfg.run_id != tiny_config(tmp_path, make_image_folder(tmp_path / "other", n=4)).run_id


def test_evaluate_uses_a_registered_prompt_set_and_scorer(tmp_path: Path, user_plugin: dict[str, object]) -> None:
    assert load_prompts("builtin:short") == ["a cat", "a big dog"]
    cfg = tiny_config(tmp_path, make_image_folder(tmp_path / "d", n=2), "eval.prompts=builtin:short", "eval.scorers=[length]",
                      "eval.gate_metric=length", "eval.images_per_prompt=1", "sampling.num_inference_steps=2")  # fmt: skip
    check_eval_config(cfg, video=False)
    evaluate.run(cfg, "builtin:tiny-random", tmp_path / "r")
    with (tmp_path / "r" / "per_prompt.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["prompt"], float(r["length_candidate"])) for r in rows] == [("a cat", 5.0), ("a big dog", 9.0)]


def test_unknown_names_are_one_line_errors_listing_the_registered_ones(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, tmp_path, "data.source=builtin:nope")
    with pytest.raises(DataError, match=r"^unknown built-in data source 'builtin:nope'; use one of builtin:world, "
                                        r"builtin:world-video, builtin:world-pickapic$"):  # fmt: skip
        prepare_data.materialize_source(cfg, tmp_path / "scratch")
    with pytest.raises(PromptFileError, match=r"unknown built-in prompt set 'builtin:nope'; use one of builtin:world-test, "):
        load_prompts("builtin:nope")
    with pytest.raises(plugins.PluginError, match="'builtin:world' is already registered"):
        plugins.data_sources.register("builtin:world", plugins.data_sources.get("builtin:world"))


def _from_entry_point() -> None:
    plugins.prompt_sets.register("builtin:from-entry-point", plugins.PromptSet(lambda: ["a red circle"]))


def test_entry_points_of_seppo_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    points = [EntryPoint("mine", f"{__name__}:_from_entry_point", plugins.PLUGIN_GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: points if group == plugins.PLUGIN_GROUP else [])
    monkeypatch.setitem(plugins._state, "loaded", False)
    try:
        plugins.load_plugins(modules=())
        assert load_prompts("builtin:from-entry-point") == ["a red circle"]
    finally:
        plugins.prompt_sets.unregister("builtin:from-entry-point")
    monkeypatch.setitem(plugins._state, "loaded", False)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [EntryPoint("bad", "no_such_module_x:f", group)])
    with pytest.raises(plugins.PluginError, match=r"plugin bad \(no_such_module_x:f\) of seppo.plugins failed to load: ModuleNotFound"):
        plugins.load_plugins(modules=())


def test_a_video_source_makes_the_config_a_video_one(tmp_path: Path) -> None:
    from seppo_lib.evaluation.scorer_choices import config_is_video

    assert config_is_video(tiny_config(tmp_path, tmp_path, "data.source=builtin:world-video"))
    assert not config_is_video(tiny_config(tmp_path, tmp_path, "data.source=builtin:world-pickapic"))
    wrong = "are video-world prompts, but this is an image model; use builtin:world-test or builtin:world-train"
    with pytest.raises(ConfigError, match=wrong):
        check_eval_config(tiny_config(tmp_path, tmp_path, "eval.prompts=builtin:world-video-test"), video=False)
