"""bpcr.pipeline.config: a config value against a stage function's annotation, and the words used for it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pytest

from bpcr.pipeline.config import accepts, check_options, describe, load_config
from bpcr.errors import BadInput


@pytest.mark.parametrize("annotation,good,bad", [
    (int, [3, -1], [True, 3.0, "3"]),
    (float, [3, 0.5], [False, "0.5", [1.0]]),
    (bool, [True, False], [1, "true"]),
    (str | Path, ["a/b"], [5, ["a"]]),
    (Optional[int], [1], ["1", 1.5]),
    (Sequence[float], [[], [1, 2.5]], ["gem", [1, "2"], 1.0]),
    (list[str] | str, ["gem", ["gem", "mac"]], [5, ["gem", 5]]),
    (tuple[int, int], [[1, 4]], [[1], [1, 2, 3], [1, "4"]]),
    (Mapping[str, Mapping[str, Any]], [{"gem": {"p": 3}}], [{"gem": 3}, ["gem"]]),
    (Any, [1, "x", [1]], []),
])
def test_accepts(annotation, good, bad):
    assert all(accepts(annotation, v) for v in good)
    assert not any(accepts(annotation, v) for v in bad)


def test_describe_uses_the_config_words():
    assert describe(int) == "an integer"
    assert describe(float | None) == "a number"
    assert describe(str | Path | None) == "a string"
    assert describe(Sequence[float] | None) == "an array of numbers"
    assert describe(str | Sequence[str | Path]) == "a string or an array of strings"
    assert describe(tuple[int, int] | None) == "an array of 2 integers"


def test_check_options_names_the_table_the_key_and_the_type(tmp_path):
    def stage(store: str, size: int = 224, scales: Sequence[float] = (1.0,), name: str | None = None,
              *, required: int) -> None:
        """A stage function's signature."""

    config = tmp_path / "c.toml"
    check_options(config, "extract a", stage, {"size": 96, "scales": [1, 0.5], "required": 1}, {"store"})
    cases = [({"size": "96", "required": 1}, "[extract a] size must be an integer, got '96' (a string)"),
             ({"scales": 1.0, "required": 1}, "[extract a] scales must be an array of numbers, got 1.0 (a number)"),
             ({"store": "x", "required": 1}, "[extract a] unknown option 'store'; accepted: name, required, scales, size"),
             ({}, "[extract a] needs 'required'")]
    for options, message in cases:
        with pytest.raises(BadInput) as info:
            check_options(config, "extract a", stage, options, {"store"})
        assert str(info.value) == f"{config}: {message}"


def test_invalid_toml_names_its_line_and_column(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("work = 'w'\n\n[prepare]\ndb = \n")
    with pytest.raises(BadInput) as info:
        load_config(path)
    assert info.value.line == 4 and "invalid TOML" in info.value.reason and "(column 6)" in info.value.reason


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(BadInput, match="too large for a config"):
        load_config(path)


def test_an_annotation_that_cannot_be_resolved_accepts_anything(tmp_path):
    namespace: dict = {}
    exec("from __future__ import annotations\ndef stage(a: int, b: OnlyForTypeCheckers = None): pass", namespace)
    check_options(tmp_path / "c.toml", "t", namespace["stage"], {"a": 1, "b": [1]}, set())
    with pytest.raises(BadInput, match=r"\[t\] a must be an integer"):
        check_options(tmp_path / "c.toml", "t", namespace["stage"], {"a": "1"}, set())
