"""`bpcr text-index`'s options, declared once (TextIndexOptions): the --help, the config check, the stage key and
the defaults bpcr.text.tfidf uses follow the declaration."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.options import defaults, fields_of
from bpcr.pipeline.config import validate_config
from bpcr.text.options import TextIndexOptions
from tests.helpers.cli_help import help_as_declared

BASE = {"prepare": {"demo": True}}


def test_tfidf_reads_its_defaults_from_the_declaration():
    from bpcr.text import tfidf

    assert (tfidf.DEFAULT_TAU, tfidf.DEFAULT_MAX_NON_LATIN, tfidf.DEFAULT_CHUNK_ROWS, tfidf.DEFAULT_MAX_CANDIDATES) == (
        0.6, 0.2, 8192, 4_000_000) == tuple(defaults(TextIndexOptions)[k] for k in (
            "tau", "max_non_latin", "chunk_rows", "max_candidates"))


def test_help_shows_each_option_as_declared(cli, monkeypatch):
    """Each option's --help line is its field's help with the range the check enforces."""
    _, shown = help_as_declared(cli, monkeypatch, "text-index", TextIndexOptions)
    assert "a number in [0, 1); paper 001 §2.2 eq 7" in shown and "a number in [0, 1]" in shown


def test_config_accepts_exactly_the_declared_keys(tmp_path):
    declared = {f.name for f in fields_of(TextIndexOptions)}
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", dict(BASE, text_index={"force": True}))  # the pipeline's to say
    assert set(str(info.value).split("accepted: ")[1].split(", ")) == declared
    validate_config(tmp_path / "c.toml", dict(BASE, text_index=defaults(TextIndexOptions)))  # every key, its default


@pytest.mark.parametrize("table, reason", [
    ({"tau": 1.0}, "[text_index] --tau must be a number in [0, 1), got 1.0"),
    ({"max_non_latin": 1.5}, "[text_index] --max-non-latin must be a number in [0, 1], got 1.5"),
    ({"chunk_rows": 0}, "[text_index] chunk_rows must be an integer at least 1, got 0"),
    ({"tau": "high"}, "[text_index] tau must be a number, got 'high' (a string)"),
])
def test_config_refuses_out_of_range_options_before_any_stage(tmp_path, table, reason):
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", dict(BASE, text_index=table))
    assert reason in str(info.value)


def test_the_stage_key_is_the_one_made_before_the_options_were_declared():
    """The key holds every declared default (and force), so a text index a pipeline made before stays up to date."""
    from bpcr.pipeline.stages import code_defaults, stage_key

    assert code_defaults("text-index") == {**defaults(TextIndexOptions), "force": False}
    assert stage_key("text-index", {}, code_defaults("text-index")) == "49a3d90bae0b6978"
