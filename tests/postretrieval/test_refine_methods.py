"""The refine methods' registry: one table of names, options and defaults, reached alike from the config."""
from __future__ import annotations

import pytest

from bpcr.pipeline.config import validate_config
from bpcr.errors import BadInput
from bpcr.postretrieval.refine import METHODS, method_options, refine

BASE = {"prepare": {"demo": True}, "extract": [{"name": "e", "backbone": "b", "poolings": ["gem"]}],
        "search": [{"name": "s", "features": "e/gem"}]}


def test_every_option_has_a_default_that_passes_its_own_check():
    import inspect

    accepted = set(inspect.signature(refine).parameters)
    for method in METHODS.values():
        resolved, defaulted = method_options(method, {})
        assert set(defaulted) == set(method.options) and set(resolved) == set(method.options)
        assert set(method.options) <= accepted, method.name  # every option is a keyword of refine()
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
