"""`bpcr ensemble`, `bpcr score` and `bpcr report`'s options, declared once (EnsembleOptions, ScoreOptions,
ReportOptions): the --help, the config check and the stage key follow the declaration."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.evaluation.options import (EnsembleOptions, ReportOptions, ScoreOptions, check_ensemble_options,
                                     check_score_options)
from bpcr.options import defaults, fields_of
from bpcr.pipeline.config import validate_config
from tests.helpers.cli_help import help_as_declared

BASE = {"prepare": {"demo": True}, "extract": [{"name": "e", "backbone": "b", "poolings": ["mac"]}],
        "search": [{"name": "s1", "features": "e/mac"}, {"name": "s2", "features": "e/mac"}]}
# The options the command line spells itself, by their flag: weights as a comma-separated string.
OWN_FLAGS = {("ensemble", "weights"): "--weights"}
# What a config sets beside a table's options: the pipeline's own keys (and a value for each), and the options
# it passes itself (the report's halves are [score]'s).
OWN_KEYS = {"ensemble": {"name": "f", "inputs": ["s1", "s2"], "tune": False},
            "score": {"gt": "gt.csv", "baseline": "subs/s1.csv"},
            "report": {"runs": ["s1"], "best": 2, "out": "report"}}
PASSED = {"report": {"split_seed", "public_share"}}
COMMANDS = [("ensemble", EnsembleOptions), ("score", ScoreOptions), ("report", ReportOptions)]


def _config(command: str, table: dict) -> dict:
    if command == "ensemble":
        return dict(BASE, ensemble=[{"name": "f", "inputs": ["s1", "s2"], **table}])
    return dict(BASE, **{command: table})


def test_the_defaults_pass_their_own_checks():
    check_ensemble_options(EnsembleOptions(method="rrf"))
    check_ensemble_options(EnsembleOptions(method="combsum", weights=[1, 2], rrf_k=None))
    check_score_options(ScoreOptions())
    assert EnsembleOptions(method="rrf") == EnsembleOptions("rrf")
    with pytest.raises(TypeError):
        EnsembleOptions()  # the fusion method has no default


@pytest.mark.parametrize("command, cls", COMMANDS)
def test_help_shows_each_option_as_declared(cli, monkeypatch, command, cls):
    """Each option's --help line is its field's help with the range or choices the check enforces."""
    table, shown = help_as_declared(cli, monkeypatch, command, cls,
                                    {n: flag for (c, n), flag in OWN_FLAGS.items() if c == command})
    if command == "ensemble":
        assert "rrf, borda, combsum, combmnz" in shown and "Cormack et al. 2009" in shown and "Fox & Shaw" in shown
        assert "an integer in [1, 100]" in shown and "an integer at least 7" in shown
        assert "--k " not in shown  # the deprecated name of --rrf-k works, unlisted
        assert next(line for line in table if "--method" in line).lstrip("│ ").startswith("*")  # required
    elif command == "score":
        assert "challenge, nrel, cutoff-mean" in shown and "paper 002 eq A1-A2" in shown
        assert "--resamples" in shown and "an integer in [1, 1000000]" in shown
    else:
        assert "--diff" in shown and "A B" in next(line for line in table if "--diff" in line)
        assert "an integer in [16, 1024]" in shown and "a number in (0, 1)" in shown


@pytest.mark.parametrize("command, cls", COMMANDS)
def test_config_accepts_exactly_the_declared_keys(tmp_path, command, cls):
    declared = {f.name for f in fields_of(cls)} - PASSED.get(command, set())
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", _config(command, {"bogus": 1}))
    assert set(str(info.value).split("accepted: ")[1].split(", ")) == declared
    every = {k: v for k, v in defaults(cls).items() if v is not None and k in declared}
    if command == "ensemble":
        every["method"] = "rrf"
    assert set(every) == declared - {"weights", "rrf_k", "diff", "limit"}
    validate_config(tmp_path / "c.toml", _config(command, {**every, **OWN_KEYS[command]}))  # every key
    for key in PASSED.get(command, ()):
        with pytest.raises(BadInput, match=f"unknown option '{key}'"):
            validate_config(tmp_path / "c.toml", _config(command, {key: defaults(cls)[key]}))


@pytest.mark.parametrize("command, table, reason", [
    ("ensemble", {}, "[ensemble f] needs 'method'"),
    ("ensemble", {"method": "combmax"}, "[ensemble f] unknown fusion method 'combmax'; choose from rrf, borda"),
    ("ensemble", {"method": "rrf", "folds": 1}, "[ensemble f] --folds must be an integer at least 2, got 1"),
    ("ensemble", {"method": "rrf", "steps": 101}, "[ensemble f] --steps must be an integer in [1, 100], got 101"),
    ("ensemble", {"method": "rrf", "depth": 6}, "[ensemble f] --depth must be an integer at least 7, got 6"),
    ("ensemble", {"method": "rrf", "rrf_k": -1}, "[ensemble f] --rrf-k must be a number at least 0, got -1"),
    ("ensemble", {"method": "rrf", "norm": "sum"}, "[ensemble f] unknown --norm 'sum'; choose from minmax, zscore"),
    ("ensemble", {"method": "rrf", "tune_half": "x"}, "[ensemble f] unknown tune-half 'x'; choose from public"),
    ("ensemble", {"method": "rrf", "weights": [0, 0]}, "[ensemble f] --weights must be finite numbers >= 0"),
    ("ensemble", {"method": "rrf", "public_share": 1.0}, "[ensemble f] --public-share must be a number in (0, 1)"),
    ("score", {"variant": "x"}, "[score] variant: --variant 'x' is not a metric variant"),
    ("score", {"public_share": 0}, "[score] public_share: --public-share must be a number in (0, 1), got 0"),
    ("score", {"seed": -1}, "[score] seed: --seed must be an integer in [0, 2147483647], got -1"),
    ("score", {"baseline": 3}, "[score] baseline must be a string or a table, got 3 (an integer)"),
    ("report", {"limit": 0}, "[report] limit must be an integer in [1, 10000000], got 0"),
    ("report", {"thumb": 4}, "[report] thumb must be an integer in [16, 1024], got 4"),
])
def test_config_refuses_out_of_range_options_before_any_stage(tmp_path, command, table, reason):
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", _config(command, table))
    assert reason in str(info.value)


def test_the_ensemble_key_is_the_one_made_before_the_options_were_declared():
    """The key holds the declared defaults that are not None (and out), so fused runs a pipeline made before stay
    up to date, and `bpcr predict` reuses them."""
    from bpcr.pipeline.stages import code_defaults, stage_key

    assert code_defaults("ensemble") == {**{k: v for k, v in defaults(EnsembleOptions).items() if v is not None},
                                         "out": "submissions"}
    assert stage_key("ensemble", {}, code_defaults("ensemble")) == "a8dbbf5623f3501f"
