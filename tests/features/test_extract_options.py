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
OWN_FLAGS = {"poolings": "--pooling", "pooling_params": "--param", "scales": "--multiscale", "shard": "--shard",
             "pad_colour": "--pad-colour"}
# Config keys of an [[extract]] that are the pipeline's, not the extraction's options.
PIPELINE_KEYS = {"name", "database_parts", "restart"}


def test_every_default_passes_its_own_check_and_the_names_are_the_registries():
    check_extract_options(ExtractOptions(poolings=("gem",)))
    from bpcr.features.pooling import POOLINGS
    from bpcr.features.saliency import SALIENCY_METHODS
    from bpcr.io.store import FEATURE_DTYPES

    assert POOLING_NAMES == tuple(POOLINGS)
    assert SALIENCY == tuple(SALIENCY_METHODS)
    assert set(DTYPES) <= set(FEATURE_DTYPES) and RESIZE_MODES == ("square", "aspect", "pad")


def test_help_shows_each_option_as_declared(cli, monkeypatch):
    """Each option's --help line is its field's help with the range or choices the check enforces."""
    _, shown = help_as_declared(cli, monkeypatch, "extract", ExtractOptions, OWN_FLAGS)
    assert "an integer in [16, 4096]" in shown and "one of square, aspect, pad" in shown and "spectral, fine" in shown
    assert "one of none, salient" in shown


def test_config_accepts_exactly_the_declared_keys(tmp_path):
    base = {"prepare": {"demo": True}}
    declared = {f.name for f in fields_of(ExtractOptions)}
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", dict(base, extract=[{"name": "e", "backbone": "b", "poolings": ["gem"],
                                                                   "bogus": 1}]))
    assert set(str(info.value).split("accepted: ")[1].split(", ")) == declared
    every = {**defaults(ExtractOptions), "poolings": ["gem"], "database_parts": [], "restart": False}
    every = {k: v for k, v in every.items() if v is not None} | {"scales": [1.0], "pad_colour": [255, 255, 255]}
    assert set(every) == declared - {"pooling_params", "weights", "layer", "saliency", "workers", "threads", "shard",
                                     "pca_from"} | PIPELINE_KEYS - {"name"}
    validate_config(tmp_path / "c.toml", dict(base, extract=[{"name": "e", **every}]))  # every key, its default


@pytest.mark.parametrize("entry, reason", [
    ({"size": 8}, "[extract e] --size must be between 16 and 4096, got 8"),
    ({"batch_size": 0}, "[extract e] --batch-size must be an integer at least 1, got 0"),
    ({"resize": "crop"}, "[extract e] unknown resize 'crop'; choose from square, aspect, pad"),
    ({"resize": "pad", "pad_colour": [0, 0]}, "[extract e] pad_colour must be an array of 3 integers"),
    ({"pad_colour": [0, 0, 0]}, "[extract e] --pad-colour is the fill of --resize pad"),
    ({"crop": "salient", "resize": "aspect"}, "[extract e] --crop salient needs --resize square or pad"),
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


# ---------------------------------------------------------------- an option on the command line is the library's


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory):
    """Six generated images (40-100 px on a side) and their manifest."""
    from bpcr.dataset.manifest import write_manifest
    from tests.helpers.extraction import write_images

    root = tmp_path_factory.mktemp("extract-options")
    (root / "images").mkdir()
    ids, paths, widths, heights = write_images(root / "images", 6, seed=4)
    write_manifest(root / "db.csv", ids, paths, widths, heights, [""] * len(ids))
    return root / "db.csv"


# The fast settings both sides use, as the command line spells them and as ExtractOptions fields.
FAST_ARGS = ("--pooling", "gem", "--size", "64", "--batch-size", "2", "--workers", "0", "--threads", "1",
             "--device", "cpu", "--dtype", "float32")
FAST_FIELDS = {"poolings": ("gem",), "size": 64, "batch_size": 2, "workers": 0, "threads": 1, "device": "cpu",
               "dtype": "float32"}

CLI_OPTIONS = {
    "vit": (("--backbone", "test_vit", "--weights", "none"), {"backbone": "test_vit", "weights": "none"}),
    "aspect": (("--resize", "aspect"), {"resize": "aspect"}),
    "pad": (("--resize", "pad", "--pad-colour", "0,0,255"), {"resize": "pad", "pad_colour": (0, 0, 255)}),
    "gem-p4": (("--param", "gem.p=4"), {"pooling_params": {"gem": {"p": 4.0}}}),
}


@pytest.fixture(scope="module")
def default_features(small_manifest):
    """The features the fast settings give with every other option at its default."""
    import numpy as np

    from bpcr.features.extract import extract

    out = small_manifest.parent / "default"
    stores = extract(small_manifest, out, ExtractOptions(**FAST_FIELDS))
    return np.load(stores["gem"] / "features.npy")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:backbone 'test_vit' has random weights")
@pytest.mark.parametrize("case", list(CLI_OPTIONS))
def test_cli_option_gives_the_library_features_and_not_the_defaults(cli, small_manifest, default_features, case):
    """`bpcr extract` with the option writes the very store extract() writes with it, and other features than
    the defaults give: the option reaches the extraction, not only the store's meta."""
    import numpy as np

    from bpcr.features.extract import extract
    from tests.helpers.extraction import store_bytes

    args, fields = CLI_OPTIONS[case]
    root = small_manifest.parent
    result = cli("extract", small_manifest, *FAST_ARGS, *args, "--out", root / f"cli-{case}")
    assert result.code == 0, result.err
    library = extract(small_manifest, root / f"lib-{case}", ExtractOptions(**FAST_FIELDS, **fields))["gem"]
    assert store_bytes(root / f"cli-{case}" / "gem") == store_bytes(library)
    features = np.load(library / "features.npy")
    assert features.shape[0] == default_features.shape[0] == 6
    assert not np.array_equal(features, default_features)
    if features.shape == default_features.shape:  # the same backbone: the values, not just the width, differ
        assert np.abs(features - default_features).max() > 1e-3
