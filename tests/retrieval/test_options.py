"""`bpcr index` and `bpcr search`'s options, declared once (IndexOptions, SearchOptions): the --help, the config
check and the stage keys follow the declaration."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.options import defaults, fields_of
from bpcr.pipeline.config import validate_config
from bpcr.retrieval.options import IndexOptions, SearchOptions, check_index_options, check_search_options
from tests.helpers.cli_help import help_as_declared

BASE = {"prepare": {"demo": True}}
EXTRACT = [{"name": "e", "backbone": "b", "poolings": ["mac"]}]
# The options the command line spells itself, by their flag: weights as a comma-separated string, depth beside
# its old name --k.
OWN_FLAGS = {("search", "weights"): "--weights", ("search", "depth"): "--depth"}


def _config(command: str, table: dict) -> dict:
    if command == "index":
        return dict(BASE, index=table)
    return dict(BASE, extract=EXTRACT, search=[{"name": "s", "features": "e/mac", **table}])


def test_the_defaults_pass_their_own_checks():
    check_index_options(IndexOptions())
    assert check_search_options(SearchOptions()) is None
    assert check_search_options(SearchOptions(weights=[1, 2])) == [1.0, 2.0]


@pytest.mark.parametrize("command, cls", [("index", IndexOptions), ("search", SearchOptions)])
def test_help_shows_each_option_as_declared(cli, monkeypatch, command, cls):
    """Each option's --help line is its field's help with the range or choices the check enforces."""
    _, shown = help_as_declared(cli, monkeypatch, command, cls,
                                {n: flag for (c, n), flag in OWN_FLAGS.items() if c == command})
    if command == "index":
        assert "cosine, l2, l1 (paper 000 eq 6-8)" in shown and "a number in (0, 1]" in shown
        assert "an integer in [0, 2147483647]" in shown
    else:
        assert "sum, product" in shown and "paper 003 eq 16 sum, 001 eq 8 product" in shown
        assert "--k " not in shown  # the deprecated name of --depth works, unlisted


@pytest.mark.parametrize("command, cls", [("index", IndexOptions), ("search", SearchOptions)])
def test_config_accepts_exactly_the_declared_keys(tmp_path, command, cls):
    declared = {f.name for f in fields_of(cls)}
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", _config(command, {"bogus": 1}))
    assert set(str(info.value).split("accepted: ")[1].split(", ")) == declared
    every = {k: v for k, v in defaults(cls).items() if v is not None}
    assert set(every) == declared - {"pq", "nlist", "train_size", "chunk_rows", "weights", "shortlist"}
    validate_config(tmp_path / "c.toml", _config(command, every))  # every key, its default


@pytest.mark.parametrize("command, table, reason", [
    ("index", {"kind": "lsh"}, "[index] unknown index kind 'lsh'; choose one of flat, ivf, hnsw"),
    ("index", {"metric": "hamming"}, "[index] metric 'hamming' is not one of cosine, l2, l1"),
    ("index", {"hnsw_m": 1}, "[index] --hnsw-m must be an integer at least 2, got 1"),
    ("index", {"target_recall": 0.0}, "[index] --target-recall must be a number in (0, 1], got 0.0"),
    ("index", {"train_size": 0}, "[index] train_size must be an integer at least 1, got 0"),
    ("index", {"pq": 8}, "[index] --pq applies to --kind ivf or hnsw"),
    ("index", {"kind": "hnsw", "nlist": 8}, "[index] --nlist applies to --kind ivf, not hnsw"),
    ("search", {"depth": 0}, "[search s] --depth must be an integer at least 7, got 0"),
    ("search", {"depth": 6}, "[search s] --depth must be an integer at least 7, got 6"),  # the CSV holds 7
    ("search", {"fusion": "max"}, "[search s] unknown fusion 'max'; choose from sum, product"),
    ("search", {"shortlist": 0}, "[search s] --shortlist must be an integer at least 1, got 0"),
    ("search", {"weights": [0.0]}, "[search s] --weights must be finite numbers >= 0, not all 0; got [0.0]"),
    ("search", {"weights": ["a"]}, "[search s] weights must be an array of numbers, got ['a'] (an array)"),
])
def test_config_refuses_out_of_range_options_before_any_stage(tmp_path, command, table, reason):
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", _config(command, table))
    assert reason in str(info.value)


def test_the_stage_keys_are_those_made_before_the_options_were_declared():
    """The keys hold the declared defaults that are not None (and search's out), so index folders and runs a
    pipeline made before stay up to date, and `bpcr predict` reuses them."""
    from bpcr.pipeline.stages import code_defaults, stage_key

    assert code_defaults("index") == {k: v for k, v in defaults(IndexOptions).items() if v is not None}
    assert code_defaults("search") == {**{k: v for k, v in defaults(SearchOptions).items() if v is not None},
                                       "out": "submissions"}
    assert stage_key("index", {}, code_defaults("index")) == "98b94bdf2fe9eaa0"
    assert stage_key("search", {}, code_defaults("search")) == "34fea0d0edb3564f"
