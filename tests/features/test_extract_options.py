"""`bpcr extract`'s options, declared once (ExtractOptions): the --help, the config check, the stage key and the
lists of names the heavy modules use all follow the declaration."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.features.options import (DTYPES, EXTRACT_FIELDS, POOLING_NAMES, RESIZE_MODES, SALIENCY, ExtractOptions,
                                   check_extract_options)
from bpcr.options import defaults, fields_of
from bpcr.pipeline.config import validate_config
from tests.helpers.cli_help import help_as_declared

# The options the command line spells its own way, by their flag.
OWN_FLAGS = {"poolings": "--pooling", "pooling_params": "--param", "scales": "--multiscale", "shard": "--shard"}
# Config keys of an [[extract]] that are the pipeline's, not the extraction's options.
PIPELINE_KEYS = {"name", "database_parts", "restart"}


def test_every_default_passes_its_own_check_and_the_names_are_the_registries():
    check_extract_options(ExtractOptions(poolings=("gem",)))
    from bpcr.features.pooling import POOLINGS
    from bpcr.features.saliency import SALIENCY_METHODS
    from bpcr.io.store import FEATURE_DTYPES

    assert POOLING_NAMES == tuple(POOLINGS)
    assert SALIENCY == tuple(SALIENCY_METHODS)
    assert set(DTYPES) <= set(FEATURE_DTYPES) and RESIZE_MODES == ("square", "aspect")


def test_help_shows_each_option_as_declared(cli, monkeypatch):
    """Each option's --help line is its field's help with the range or choices the check enforces."""
    _, shown = help_as_declared(cli, monkeypatch, "extract", ExtractOptions, OWN_FLAGS)
    assert "an integer in [16, 4096]" in shown and "one of square, aspect" in shown and "spectral, fine" in shown


def test_config_accepts_exactly_the_declared_keys(tmp_path):
    base = {"prepare": {"demo": True}}
    declared = {f.name for f in fields_of(ExtractOptions)}
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", dict(base, extract=[{"name": "e", "backbone": "b", "poolings": ["gem"],
                                                                   "bogus": 1}]))
    assert set(str(info.value).split("accepted: ")[1].split(", ")) == declared
    every = {**defaults(ExtractOptions), "poolings": ["gem"], "database_parts": [], "restart": False}
    every = {k: v for k, v in every.items() if v is not None} | {"scales": [1.0]}
    assert set(every) == declared - {"pooling_params", "weights", "layer", "saliency", "workers", "threads", "shard",
                                     "pca_from"} | PIPELINE_KEYS - {"name"}
    validate_config(tmp_path / "c.toml", dict(base, extract=[{"name": "e", **every}]))  # every key, its default


@pytest.mark.parametrize("entry, reason", [
    ({"size": 8}, "[extract e] --size must be between 16 and 4096, got 8"),
    ({"batch_size": 0}, "[extract e] --batch-size must be an integer at least 1, got 0"),
    ({"resize": "crop"}, "[extract e] unknown resize 'crop'; choose from square, aspect"),
    ({"scales": [1.0, 1.0]}, "[extract e] scales must be distinct numbers in (0, 4], got [1.0, 1.0]"),
    ({"pca_whiten": True, "pca_from": "db"}, "[extract e] --pca-whiten learns a whitening, --pca-from applies one"),
    ({"restart": "yes"}, "[extract e] restart must be true or false"),
])
def test_config_refuses_out_of_range_options_before_any_stage(tmp_path, entry, reason):
    config = {"prepare": {"demo": True}, "extract": [{"name": "e", "backbone": "b", "poolings": ["gem"], **entry}]}
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", config)
    assert reason in str(info.value)


def test_the_stage_key_holds_every_declared_default():
    from bpcr.features.loader import LAYOUT
    from bpcr.pipeline.stages import code_defaults

    assert code_defaults("extract") == {**defaults(ExtractOptions), "layout": LAYOUT}
    assert set(EXTRACT_FIELDS) == set(defaults(ExtractOptions))
