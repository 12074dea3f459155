"""The refine methods' registry: one table of names, options and defaults, reached alike from the config."""
from __future__ import annotations

import pytest

from bpcr.pipeline.config import validate_config
from bpcr.errors import BadInput
from bpcr.options import fields_of, flag_of, help_text, spec_of
from bpcr.postretrieval.options import METHOD_OPTIONS, DbaOptions, RefineOptions
from bpcr.postretrieval.refine import METHODS, method_options

BASE = {"prepare": {"demo": True}, "extract": [{"name": "e", "backbone": "b", "poolings": ["gem"]}],
        "search": [{"name": "s", "features": "e/gem"}]}


def test_every_option_has_a_default_that_passes_its_own_check():
    accepted = {f.name for f in fields_of(RefineOptions)}
    for method in METHODS.values():
        resolved, defaulted = method_options(method, {})
        assert set(defaulted) == set(method.options) and set(resolved) == set(method.options)
        assert set(method.options) <= accepted, method.name  # every option is a field of RefineOptions
    assert METHODS["qe-2020"].options == {} and METHODS["aqe"].preset == {"qe_alpha": 0.0}


@pytest.mark.parametrize("entry,message", [
    ({"method": "aqe", "qe_n": 2}, None),
    ({"method": "kreciprocal", "k1": 10, "k2": 3, "kr_lambda": 0.5, "shortlist": 50}, None),
    ({"method": "diffusion", "kq": 7, "kd": 50, "gamma": 80.0}, None),
    ({"method": "dupgroup", "dup_by": "image", "dup_cosine": 0.95}, None),
    ({"method": "alpha-qe", "k1": 3}, "--k1 is an option of --method kreciprocal"),
    ({"method": "diffusion", "diffusion_alpha": 1.0}, "--diffusion-alpha must be"),
    ({"method": "dupgroup", "dup_by": "colour"}, "unknown --dup-by"),
    ({"method": "rerank"}, "method 'rerank' is not one of"),
    ({"method": "aqe", "qe_n": "2"}, "qe_n must be an integer"),
])
def test_config_refine_entries_are_checked_before_any_stage(tmp_path, entry, message):
    config = dict(BASE, refine=[{"name": "r", "input": "s", **entry}])
    if message is None:
        validate_config(tmp_path / "c.toml", config)
        return
    with pytest.raises(BadInput, match=message) as info:
        validate_config(tmp_path / "c.toml", config)
    assert "[refine r]" in str(info.value)


@pytest.mark.parametrize("dba,message", [
    ({"n": 2, "alpha": 3.0}, None),
    ({"n": 0}, "--n must be"),
    ({"k": 3}, "unknown option 'k'"),
    ({"n": "2"}, "n must be an integer"),
])
def test_config_search_dba_is_checked_before_any_stage(tmp_path, dba, message):
    config = dict(BASE, search=[{"name": "s", "features": "e/gem", "dba": dba}])
    if message is None:
        validate_config(tmp_path / "c.toml", config)
        return
    with pytest.raises(BadInput, match=message):
        validate_config(tmp_path / "c.toml", config)


def test_the_command_line_states_the_registry_defaults():
    import inspect

    from bpcr.cli.stages import dba_command, refine_command
    from bpcr.postretrieval.dba import DBA_ALPHA, DBA_N

    helps = {name: param.default.help for name, param in inspect.signature(refine_command).parameters.items()}
    for method in METHODS.values():
        for name, option in method.options.items():
            if option.default is None:
                continue
            shown = f"{option.default:g}" if isinstance(option.default, float) else str(option.default)
            assert f"default {shown}" in helps[name], (method.name, name, helps[name])
    dba_defaults = {n: p.default.default for n, p in inspect.signature(dba_command).parameters.items()}
    assert dba_defaults["n"] == DBA_N and dba_defaults["alpha"] == DBA_ALPHA


@pytest.mark.parametrize("command,cls", [("refine", RefineOptions), ("dba", DbaOptions)])
def test_help_shows_each_option_as_declared(cli, monkeypatch, command, cls):
    """--help states each option's range or choices, and its methods and default, from the one declaration."""
    monkeypatch.setenv("COLUMNS", "2000")  # one help line per option
    shown = " ".join(cli(command, "--help").out.split())
    for f in fields_of(cls):
        spec = spec_of(f)
        if not spec.cli:
            continue
        assert flag_of(f) in shown
        assert " ".join(help_text(f).split()) in shown, f.name
        if spec.names():
            assert ", ".join(spec.names()) in shown, f.name
    for method, options in METHOD_OPTIONS.items():
        for f in fields_of(options):  # every method's options reach the one command, naming the method
            assert method in help_text(next(g for g in fields_of(RefineOptions) if g.name == f.name))


def test_config_accepts_exactly_the_declared_keys(tmp_path):
    """A [[refine]] takes RefineOptions' fields (and the pipeline's input/features), a dba table DbaOptions'."""
    refine_keys = {f.name for f in fields_of(RefineOptions)}
    for key in ("bogus", "graph_dir", "out", "log"):
        config = dict(BASE, refine=[{"name": "r", "input": "s", key: 1}])
        with pytest.raises(BadInput) as info:
            validate_config(tmp_path / "c.toml", config)
        accepted = str(info.value).split("accepted: ")[1]
        assert set(accepted.split(", ")) == refine_keys
    config = dict(BASE, search=[{"name": "s", "features": "e/gem", "dba": {"graph_dir": "x"}}])
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", config)
    assert set(str(info.value).split("accepted: ")[1].split(", ")) == {f.name for f in fields_of(DbaOptions)}
