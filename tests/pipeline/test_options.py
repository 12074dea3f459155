"""`bpcr sweep` and `bpcr predict`'s options, declared once (SweepOptions, PredictOptions): the --help and the
range checks follow the declaration."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.pipeline.options import PredictOptions, SweepOptions, check_sweep_options
from bpcr.ranges import SEED_MAX
from tests.helpers.cli_help import help_as_declared


def test_the_defaults_pass_their_own_checks():
    check_sweep_options(SweepOptions())
    from bpcr.pipeline.sweep import MAX_POINTS

    assert MAX_POINTS == SweepOptions.max_points == 200


@pytest.mark.parametrize("command, cls", [("sweep", SweepOptions), ("predict", PredictOptions)])
def test_help_shows_each_option_as_declared(cli, monkeypatch, command, cls):
    _, shown = help_as_declared(cli, monkeypatch, command, cls)
    assert "--run" in shown
    if command == "sweep":
        assert f"an integer in [0, {SEED_MAX}]" in shown and "a number in (0, 1)" in shown


@pytest.mark.parametrize("kwargs, named", [
    ({"max_points": 0}, "--max-points"), ({"split_seed": -1}, "--split-seed"), ({"public_share": 1.0}, "--public-share"),
    ({"public_share": 0}, "--public-share"), ({"split_seed": SEED_MAX + 1}, "--split-seed"),
])
def test_sweep_refuses_before_reading_the_config(tmp_path, kwargs, named):
    from bpcr.pipeline.sweep import sweep

    with pytest.raises(BadInput) as info:
        sweep(tmp_path / "missing.toml", ["rerank.top=1,2"], SweepOptions(**kwargs))
    assert named in str(info.value) and len(str(info.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
