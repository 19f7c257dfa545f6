"""The YAML config loader: nested dataclasses, one-line errors naming file, line and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from streamfuse.config import from_mapping, load_yaml, merge, parse_overrides, to_dict
from streamfuse.errors import StreamFuseError


@dataclass
class Inner:
    size: int = 4
    rate: float = 0.5
    mode: Literal["fast", "slow"] = "fast"
    tags: list[str] = field(default_factory=list)
    pair: tuple[int, int] = (1, 2)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"'size' must be at least 1, got {self.size}")


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None
    flag: bool = False


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def error_of(call) -> str:
    with pytest.raises(StreamFuseError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_nested_values_defaults_and_coercion(tmp_path):
    path = write(tmp_path, "name: run\ninner:\n  size: 8\n  rate: 2\n  tags: [a, b]\n  pair: [3, 4]\noptional: {mode: slow}\n")
    config = load_yaml(Outer, path)
    assert config.inner == Inner(size=8, rate=2.0, tags=["a", "b"], pair=(3, 4))
    assert isinstance(config.inner.rate, float)
    assert config.optional == Inner(mode="slow")
    assert config.flag is False
    assert to_dict(config)["inner"]["size"] == 8


def test_overrides_win_and_are_validated(tmp_path):
    path = write(tmp_path, "name: run\ninner:\n  size: 8\n")
    config = load_yaml(Outer, path, ["inner.size=16", "flag=true", "optional.rate=0.25"])
    assert (config.inner.size, config.flag, config.optional.rate) == (16, True, 0.25)
    message = error_of(lambda: load_yaml(Outer, path, ["inner.size=big"]))
    assert message == "--set inner.size: key 'inner.size' must be an integer, got 'big'"


def test_a_bad_override_is_blamed_on_the_option_not_the_file(tmp_path):
    path = write(tmp_path, "name: run\ninner:\n  size: 8\n")
    assert error_of(lambda: load_yaml(Outer, path, ["inner.size=0"])) == \
        "--set inner.size: key 'inner.size' must be at least 1, got 0"
    assert error_of(lambda: load_yaml(Outer, path, ["inner.sise=3"])).startswith("--set inner.sise: unknown key")
    # The file's own mistakes still name its line.
    bad = write(tmp_path, "name: run\ninner:\n  size: 0\n")
    assert error_of(lambda: load_yaml(Outer, bad, ["flag=true"])).startswith(f"{bad}:3: key 'inner.size'")
    assert "e.g. --set inference.batch_size=4" in error_of(lambda: load_yaml(Outer, path, ["novalue"]))


@pytest.mark.parametrize("override, expected", [
    ("sinks.video.path=", "--set sinks.video.path: key 'sinks.video.path' is empty; name the video file"),
    ("sinks.video.fps=0", "key 'sinks.video.fps' must be positive"),
    ("sinks.folder.path=", "key 'sinks.folder.path' is empty; name the folder"),
])
def test_pipeline_sinks_refuse_empty_paths(override, expected):
    from conftest import REPO_ROOT
    from streamfuse.pipeline.config import load_pipeline_config
    assert expected in error_of(lambda: load_pipeline_config(REPO_ROOT / "configs" / "demo.yaml", [override]))


def test_unknown_key_names_line_and_valid_keys(tmp_path):
    path = write(tmp_path, "name: run\ninner:\n  size: 8\n  sise: 9\n")
    message = error_of(lambda: load_yaml(Outer, path))
    assert message.startswith(f"{path}:4: unknown key 'inner.sise'")
    assert "rate" in message and "size" in message


@pytest.mark.parametrize("text, line, expected", [
    ("name: run\ninner:\n  size: 2.5\n", 3, "key 'inner.size' must be an integer"),
    ("name: run\ninner:\n  mode: medium\n", 3, "key 'inner.mode' must be one of ['fast', 'slow']"),
    ("name: run\nflag: 1\n", 2, "key 'flag' must be true or false"),
    ("name: run\ninner:\n  pair: [1, 2, 3]\n", 3, "key 'inner.pair' must have 2 items"),
    ("name: run\ninner:\n  tags: [a, [b]]\n", 3, "key 'inner.tags[1]' must be a string"),
    ("name: run\ninner: 7\n", 2, "key 'inner' must be a mapping"),
    ("name: run\ninner:\n  rate: 1\n  size: 0\n", 4, "key 'inner.size' must be at least 1, got 0"),
])
def test_wrong_values_name_file_line_and_key(tmp_path, text, line, expected):
    path = write(tmp_path, text)
    message = error_of(lambda: load_yaml(Outer, path))
    assert message.startswith(f"{path}:{line}: ")
    assert expected in message


def test_missing_required_key_and_missing_file(tmp_path):
    message = error_of(lambda: load_yaml(Outer, write(tmp_path, "inner: {size: 2}\n")))
    assert "missing required key 'name'" in message
    message = error_of(lambda: load_yaml(Outer, tmp_path / "nope.yaml"))
    assert "nope.yaml: config file not found" in message


def test_malformed_yaml_and_non_mapping(tmp_path):
    message = error_of(lambda: load_yaml(Outer, write(tmp_path, "name: run\ninner: [1, 2\nflag: true\n")))
    assert message.startswith(f"{tmp_path / 'c.yaml'}:") and "malformed YAML" in message
    message = error_of(lambda: load_yaml(Outer, write(tmp_path, "- a\n- b\n")))
    assert "must be a mapping of keys" in message


def test_parse_overrides_and_merge():
    assert parse_overrides(["a.b=3", "a.c=x", "d=[1, 2]", "e="]) == {"a": {"b": 3, "c": "x"}, "d": [1, 2], "e": ""}
    assert "expected KEY=VALUE" in error_of(lambda: parse_overrides(["novalue"]))
    assert "'a' is not a section" in error_of(lambda: parse_overrides(["a=1", "a.b=2"]))
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 1}


def test_from_mapping_names_its_source():
    message = error_of(lambda: from_mapping(Outer, {"name": "x", "bogus": 1}, "--set"))
    assert message.startswith("--set: unknown key 'bogus'")
