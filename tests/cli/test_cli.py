"""bpcr.cli: the choices it lists are the registries' names; old option names still work."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bpcr.cli import options
from bpcr.cli.options import parse_params, parse_shard, parse_weights
from bpcr.errors import BadInput


@pytest.mark.parametrize("listed, module, registry", [
    ("POOLINGS", "bpcr.features.pooling", "POOLINGS"),
    ("DISTANCES", "bpcr.retrieval.distances", "DISTANCES"),
    ("INDEX_KINDS", "bpcr.retrieval.index", "KINDS"),
    ("SIMILARITY_FUSIONS", "bpcr.retrieval.fusion", "SIMILARITY_FUSIONS"),
    ("RUN_FUSIONS", "bpcr.retrieval.fusion", "RUN_FUSIONS"),
    ("NORMALISERS", "bpcr.retrieval.fusion", "NORMALISERS"),
    ("RANK_SCORES", "bpcr.retrieval.fusion", "RANK_SCORES"),
    ("REFINE_MODES", "bpcr.postretrieval.refine", "MODES"),
    ("REFINE_METHODS", "bpcr.postretrieval.refine", "METHODS"),
    ("DUP_BY", "bpcr.postretrieval.dupgroup", "DUP_BY_CHOICES"),
    ("SCORERS", "bpcr.reranking.order", "SCORERS"),
    ("MATCHERS", "bpcr.reranking.sift", "MATCHERS"),
    ("VARIANTS", "bpcr.evaluation.metrics", "VARIANTS"),
])
def test_cli_choices_are_the_registries(listed, module, registry):
    import importlib

    names = getattr(importlib.import_module(module), registry)
    assert list(getattr(options, listed)) == list(names)


@pytest.mark.slow
def test_help_lists_the_choices(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one help line per option, however narrow the terminal
    result = cli("search", "--help")
    assert result.code == 0 and "sum, product" in result.out
    result = cli("ensemble", "--help")
    assert "rrf, borda, combsum, combmnz" in result.out and "--rrf-k" in result.out


def test_help_imports_no_heavy_library():
    code = ("import sys; from bpcr.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'faiss', 'cv2', 'sklearn', 'scipy', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_notebook_front_door_is_lazy():
    code = ("import sys, bpcr; before = 'bpcr.evaluation.score' in sys.modules; f = bpcr.score_runs;"
            " print(before, 'bpcr.evaluation.score' in sys.modules, f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "bpcr.evaluation.score"]
    import bpcr

    with pytest.raises(AttributeError):
        bpcr.no_such_thing  # noqa: B018


def test_options_parsing():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2-4", "a/b"):
        with pytest.raises(BadInput, match="--shard"):
            parse_shard(bad)
    assert parse_params(["gem.p=4", "grmaac.q=[0.5,0.5,1]", "ramac.region_l2=false"]) == {
        "gem": {"p": 4}, "grmaac": {"q": [0.5, 0.5, 1]}, "ramac": {"region_l2": False}}
    with pytest.raises(BadInput, match="POOLING.KEY=VALUE"):
        parse_params(["p=4"])
    assert parse_weights("0.6,0.4") == [0.6, 0.4] and parse_weights("0,1") == [0.0, 1.0]
    for bad in ("-1,1", "0,0", "nan,1", "inf", "1,"):
        with pytest.raises(BadInput, match="--weights"):
            parse_weights(bad)


def test_usage_errors_are_one_line(cli):
    for args, named in ((["search", "--depth", "0"], "'--depth'"), (["search", "--nope"], "--nope"),
                        (["score", "--resamples", "x"], "'--resamples'")):
        result = cli(*args)
        assert result.code == 2 and result.out == ""
        assert result.err.count("\n") == 1 and result.err.startswith("error: ") and named in result.err
