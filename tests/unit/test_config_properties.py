"""Property tests: any config file or override is a SeppoConfig or a one-line ConfigError, nothing else."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seppo_lib.config import PRESET_DIR, ConfigError, SeppoConfig, load_config

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = [f"{s}.{k}" for s, f in SeppoConfig.model_fields.items() if hasattr(f.default, "model_fields")
          for k in type(f.default).model_fields] + ["name", "workdir"]  # fmt: skip
PRESET_LINES = [line for p in PRESET_DIR.glob("*.yaml") for line in p.read_text().splitlines()]

yaml_tokens = st.sampled_from(
    ["&a ", "*a", "&b [*a, *a]", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "'", '"', "!!python/object:os.system",
     "!!binary", "!!set", "? ", "<<: ", "1e400", ".nan", "-.inf", "99999999999999999999", "0x_", "0b_", "2001-13-45",
     "../../x", "/abs", "\t", "\x00", "\x85", "\ufeff", "%YAML 1.1\n", "---\n", "...\n", "#", "|\n", ">-\n"]
)
values = st.one_of(yaml_tokens, st.sampled_from(["2001-12-14", "1e308", "-1", "0", "[1, 2]", "{a: 1}", "~", "yes"]),
                   st.text(max_size=12), st.integers().map(str), st.floats().map(str))


def _section_yaml(items: list[tuple[str, str]]) -> str:
    """'train.beta' = v -> 'train:\n  beta: v' (top-level keys stay top-level)."""
    lines = []
    for field, value in items:
        section, _, key = field.rpartition(".")
        lines += [f"{section}:", f"  {key}: {value}"] if section else [f"{key}: {value}"]
    return "\n".join(lines) + "\n"


yaml_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.tuples(st.sampled_from(FIELDS), values), max_size=6).map(_section_yaml),
    st.lists(st.one_of(yaml_tokens, st.sampled_from(PRESET_LINES), st.sampled_from(FIELDS), st.text(max_size=8)),
             max_size=40).map("".join),
    st.integers(1, 3000).map(lambda n: "train: " + "[" * n + "]" * n),
    st.integers(1, 60).map(lambda n: "".join(" " * i + "a:\n" for i in range(n))),
)  # fmt: skip


def _one_line_or_config(make: object) -> None:
    try:
        cfg = make()  # type: ignore[operator]
    except ConfigError as err:
        assert "\n" not in str(err) and "\r" not in str(err) and str(err)
        return
    assert isinstance(cfg, SeppoConfig)
    floats = [v for section in cfg.model_dump().values() if isinstance(section, dict) for v in section.values()]
    assert all(math.isfinite(v) for v in floats if isinstance(v, float))
    assert SeppoConfig.from_json(cfg.to_json()) == cfg
    # the derived run id is '<name>-<hex>' and needs the inputs resolved (seppo_lib.identity): name and bank.run_id decide
    for name in (cfg.bank.run_id, cfg.name, cfg.registry.model_name or "ok"):
        assert "/" not in name and name not in (".", "..")


def _load_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.yaml"
        path.write_bytes(raw)
        _one_line_or_config(lambda: load_config(str(path)))


@PROPS
@given(yaml_text)
def test_any_yaml_text_file(text: str) -> None:
    _load_bytes(text.encode("utf-8", "surrogatepass"))


@PROPS
@given(st.binary(max_size=300), st.sampled_from([b"", b"train:\n  beta: ", b"\xef\xbb\xbf", b"\xff\xfe"]))
def test_any_bytes_file(raw: bytes, prefix: bytes) -> None:
    _load_bytes(prefix + raw)


@PROPS
@given(st.one_of(st.sampled_from(FIELDS), st.text(max_size=30)), st.one_of(yaml_text, st.text(max_size=40)))
def test_any_override(key: str, value: str) -> None:
    _one_line_or_config(lambda: load_config("tiny", [f"{key}={value}"]))


@PROPS
@given(st.text(max_size=80))
def test_any_override_string(text: str) -> None:
    _one_line_or_config(lambda: load_config(None, [text]))
