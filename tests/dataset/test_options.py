"""`bpcr prepare`'s options, declared once (PrepareOptions for a dataset, DemoOptions for --demo): the --help, the
config's [prepare] check and the library's range checks follow the declaration."""
from __future__ import annotations

import pytest

from bpcr.dataset.options import PRESIZE_FIELDS, DemoOptions, PrepareOptions, check_prepare_options
from bpcr.errors import BadInput
from bpcr.options import defaults, fields_of
from bpcr.pipeline.config import validate_config
from tests.helpers.cli_help import help_as_declared

INPUTS = {"db": "db", "queries": "queries", "descriptions": "descriptions.csv", "gt": "gt.csv"}


def test_the_defaults_pass_their_own_checks():
    check_prepare_options(PrepareOptions())
    check_prepare_options(DemoOptions())
    from bpcr.dataset.images import MAX_PIXELS

    assert PrepareOptions.max_pixels == MAX_PIXELS == 64_000_000


@pytest.mark.parametrize("cls", [DemoOptions, PrepareOptions])
def test_help_shows_each_option_as_declared(cli, monkeypatch, cls):
    """--seed, --n-products, --n-distractors, --n-queries and --workers with their ranges; max_pixels is a config's."""
    _, shown = help_as_declared(cli, monkeypatch, "prepare", cls)
    assert "an integer in [1, 1000000]" in shown and "--max-pixels" not in shown


@pytest.mark.parametrize("demo, cls", [(True, DemoOptions), (False, PrepareOptions)])
def test_config_accepts_exactly_the_declared_keys(tmp_path, demo, cls):
    inputs = {} if demo else {"db": "db", "queries": "queries"}
    # a dataset's [prepare] also takes the pre-sized image cache's keys (tests/dataset/test_presize.py)
    declared = {f.name for f in fields_of(cls)} | (set() if demo else set(INPUTS) | set(PRESIZE_FIELDS))
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", {"prepare": {"demo": demo, **inputs, "bogus": 1}})
    assert set(str(info.value).split("accepted: ")[1].split(", ")) == declared
    every = {k: v for k, v in defaults(cls).items() if v is not None}
    validate_config(tmp_path / "c.toml", {"prepare": {"demo": demo, **(inputs if demo else INPUTS), **every,
                                                      "workers": 2}})


@pytest.mark.parametrize("table, named", [
    ({"demo": True, "n_queries": 0}, "[prepare] n_queries: --n-queries"),
    ({"demo": True, "seed": -1}, "[prepare] seed: --seed"),
    ({"demo": True, "workers": 0}, "[prepare] workers: --workers"),
    ({"db": "db", "queries": "q", "max_pixels": 0}, "[prepare] max_pixels: max_pixels"),
    ({"db": "db", "queries": "q", "workers": 2.5}, "[prepare] workers must be"),
])
def test_config_refuses_out_of_range(tmp_path, table, named):
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", {"prepare": table})
    assert named in str(info.value)


def test_the_library_refuses_before_reading(tmp_path):
    from bpcr.dataset.prepare import prepare, prepare_queries
    from bpcr.demo import prepare_demo

    for call, named in [
        (lambda: prepare(tmp_path / "db", None, tmp_path / "q", None, tmp_path / "out", PrepareOptions(workers=0)),
         "--workers"),
        (lambda: prepare(tmp_path / "db", None, tmp_path / "q", None, tmp_path / "out",
                         PrepareOptions(max_pixels=0)), "max_pixels"),
        (lambda: prepare_queries(tmp_path / "q", tmp_path / "out", PrepareOptions(workers=-1)), "--workers"),
        (lambda: prepare_demo(tmp_path / "demo", DemoOptions(n_products=0)), "--n-products"),
        (lambda: prepare_demo(tmp_path / "demo", DemoOptions(n_distractors=-1)), "--n-distractors"),
    ]:
        with pytest.raises(BadInput) as info:
            call()
        assert named in str(info.value)
    assert list(tmp_path.iterdir()) == []
