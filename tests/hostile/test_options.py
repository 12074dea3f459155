"""Hostile option values, command by command (DESIGN.md "Exit codes").

Every case exits 2 with exactly one line on stderr that names the option, before
any work: the folder it runs in is unchanged. Values Typer can refuse from the
range ``--help`` shows (``min=``/``max=``) are refused while parsing; the rest
(open bounds, NaN, options that need another option) by the stage function's
own checks, which a notebook or a config reaches too (the library section).
Also: ``--help`` shows the range of every numeric option.
"""
from __future__ import annotations

import inspect
import math
import re
import typing
from pathlib import Path

import pytest
import typer

from bpcr.cli import app
from bpcr.errors import BadInput
from bpcr.options import fields_of, flag_of, spec_of
from bpcr.ranges import RESAMPLES_MAX, SEED_MAX, TUNING_STEPS_MAX, bounds_text

# Inputs need not exist: each option is refused before any file is read.
PREPARE_DEMO = ["prepare", "--demo", "--out", "demo"]
PREPARE = ["prepare", "--db", "db", "--queries", "queries", "--out", "prepared"]
EXTRACT = ["extract", "db.csv", "--out", "features", "--pooling", "gem", "--weights", "none"]
INDEX = ["index", "store", "--out", "index"]
SEARCH = ["search", "--index", "index", "--queries", "queries", "--name", "s", "--out", "subs"]
SEARCH2 = SEARCH + ["--index", "index2", "--queries", "queries2"]
TEXT_INDEX = ["text-index", "database.csv", "--out", "text-index"]
REFINE = ["refine", "run.trec", "--text-index", "text-index", "--name", "r", "--out", "subs"]
RERANK = ["rerank", "run.trec", "--db-manifest", "database.csv", "--query-manifest", "queries.csv", "--name", "r",
          "--out", "subs"]
ENSEMBLE = ["ensemble", "a.trec", "b.trec", "--method", "rrf", "--name", "e", "--out", "subs"]
SCORE = ["score", "run.csv", "--gt", "gt.csv"]  # the leaderboard would go to ./leaderboard.md
TRAIN = ["train", "database.csv", "--out", "trained"]
REPORT = ["report", "run.csv", "--gt", "gt.csv", "--out", "report"]
SWEEP = ["sweep", "config.toml", "--grid", "rerank.top=1,2"]

# (arguments, what the one line must name)
CASES = {
    "prepare": [
        (PREPARE_DEMO + ["--seed", "-1"], "--seed"),
        (PREPARE_DEMO + ["--n-products", "0"], "--n-products"),
        (PREPARE_DEMO + ["--n-distractors", "-5"], "--n-distractors"),
        (PREPARE_DEMO + ["--n-queries", "0"], "--n-queries"),
        (PREPARE_DEMO + ["--n-queries", "1000001"], "--n-queries"),
        (PREPARE_DEMO + ["--workers", "0"], "--workers"),
        (PREPARE + ["--workers", "-1"], "--workers"),
        (PREPARE + ["--workers", "two"], "--workers"),
    ],
    "extract": [
        (EXTRACT + ["--size", "8"], "--size"),
        (EXTRACT + ["--size", "100000"], "--size"),
        (EXTRACT + ["--size", "224.5"], "--size"),
        (EXTRACT + ["--batch-size", "0"], "--batch-size"),
        (EXTRACT + ["--workers", "-1"], "--workers"),
        (EXTRACT + ["--threads", "0"], "--threads"),
        (EXTRACT + ["--threads", "-4"], "--threads"),
        (EXTRACT + ["--shard", "0/4"], "--shard"),
        (EXTRACT + ["--shard", "5/4"], "--shard"),
        (EXTRACT + ["--pca-from", "no-such-database-output"], "no-such-database-output"),
    ],
    "index": [
        (INDEX + ["--pq", "8"], "--pq"),  # a flat index is exact: --pq would be ignored
        (INDEX + ["--kind", "hnsw", "--nlist", "16"], "--nlist"),
        (INDEX + ["--nlist", "16"], "--nlist"),
        (INDEX + ["--kind", "ivf", "--pq", "0"], "--pq"),
        (INDEX + ["--kind", "ivf", "--nlist", "0"], "--nlist"),
        (INDEX + ["--kind", "hnsw", "--hnsw-m", "1"], "--hnsw-m"),
        (INDEX + ["--kind", "ivf", "--target-recall", "0"], "--target-recall"),
        (INDEX + ["--kind", "ivf", "--target-recall", "1.5"], "--target-recall"),
        (INDEX + ["--kind", "ivf", "--target-recall", "nan"], "--target-recall"),
        (INDEX + ["--kind", "ivf", "--recall-sample", "0"], "--recall-sample"),
        (INDEX + ["--kind", "ivf", "--seed", "-1"], "--seed"),
        (INDEX + ["--kind", "ivf", "--seed", str(SEED_MAX + 1)], "--seed"),
    ],
    "search": [
        (SEARCH + ["--weights", "-1"], "--weights"),
        (SEARCH2 + ["--weights", "-1,1"], "--weights"),
        (SEARCH2 + ["--weights", "0,0"], "--weights"),
        (SEARCH2 + ["--weights", "nan,1"], "--weights"),
        (SEARCH2 + ["--weights", "inf,1"], "--weights"),
        (SEARCH2 + ["--weights", "1"], "--weights"),
        (SEARCH2 + ["--weights", "0.6;0.4"], "--weights"),
        (SEARCH + ["--depth", "0"], "--depth"),
        (SEARCH + ["--depth", "many"], "--depth"),
        (SEARCH + ["--k", "0"], "--k"),
        (SEARCH + ["--shortlist", "0"], "--shortlist"),
        (SEARCH + ["--depth", "6"], "--depth"),  # the CSV holds 7 answers a query
    ],
    "text-index": [
        (TEXT_INDEX + ["--tau", "1"], "--tau"),  # neighbours need cosine > tau: none above 1
        (TEXT_INDEX + ["--tau", "-0.1"], "--tau"),
        (TEXT_INDEX + ["--tau", "nan"], "--tau"),
        (TEXT_INDEX + ["--max-non-latin", "1.5"], "--max-non-latin"),
    ],
    "refine": [
        (REFINE + ["--k-keep", "0"], "--k-keep"),
        (REFINE + ["--k-keep", "8"], "--k-keep"),
        (REFINE + ["--k", "9"], "--k"),
        (REFINE + ["--weights", "-1"], "--weights"),
        (REFINE + ["--method", "kreciprocal", "--k1", "0"], "--k1"),
        (REFINE + ["--method", "diffusion", "--shortlist", "3"], "--shortlist"),
        (REFINE + ["--method", "diffusion", "--gamma", "0"], "--gamma"),
        (REFINE + ["--method", "aqe", "--k1", "5"], "--k1"),  # an option of another method
        (REFINE + ["--method", "dupgroup", "--dup-by", "colour"], "--dup-by"),
        (REFINE + ["--method", "best"], "best"),
        (REFINE + ["--method", "kreciprocal", "--graph-dir", "keep.txt"], "--graph-dir"),  # a file: before any work
    ],
    "dba": [
        (["dba", "store", "--out", "augmented", "--graph-dir", "keep.txt"], "--graph-dir"),
    ],
    "rerank": [
        (RERANK + ["--top", "0"], "--top"),
        (RERANK + ["--blend-weight", "1.5"], "--blend-weight"),
        (RERANK + ["--ratio", "0"], "--ratio"),
        (RERANK + ["--ratio", "1.1"], "--ratio"),
        (RERANK + ["--max-keypoints", "0"], "--max-keypoints"),
        (RERANK + ["--max-side", "16"], "--max-side"),
        (RERANK + ["--seed", "-1"], "--seed"),
        (RERANK + ["--seed", str(SEED_MAX + 1)], "--seed"),
        (RERANK + ["--workers", "0"], "--workers"),
        (RERANK + ["--cache-dir", "keep.txt"], "--cache-dir"),
    ],
    "ensemble": [
        (ENSEMBLE + ["--weights", "-1,1"], "--weights"),
        (ENSEMBLE + ["--weights", "0,0"], "--weights"),
        (ENSEMBLE + ["--weights", "nan,1"], "--weights"),
        (ENSEMBLE + ["--rrf-k", "-1"], "--rrf-k"),
        (ENSEMBLE + ["--rrf-k", "nan"], "--rrf-k"),
        (ENSEMBLE + ["--k", "-1"], "--k"),
        (ENSEMBLE + ["--depth", "6"], "--depth"),
        (ENSEMBLE + ["--folds", "1"], "--folds"),
        (ENSEMBLE + ["--seed", "-1"], "--seed"),
        (ENSEMBLE + ["--steps", "0"], "--steps"),
        (ENSEMBLE + ["--steps", str(TUNING_STEPS_MAX + 1)], "--steps"),
        (ENSEMBLE + ["--split-seed", "-1"], "--split-seed"),
        (ENSEMBLE + ["--public-share", "1.5"], "--public-share"),
    ],
    "score": [
        (SCORE + ["--resamples", "0"], "--resamples"),
        (SCORE + ["--resamples", "-5"], "--resamples"),
        (SCORE + ["--resamples", str(RESAMPLES_MAX + 1)], "--resamples"),
        (SCORE + ["--seed", "-1"], "--seed"),
        (SCORE + ["--seed", str(SEED_MAX + 1)], "--seed"),
        (SCORE + ["--public-share", "-0.5"], "--public-share"),
        (SCORE + ["--variant", "cutoff"], "--variant"),  # not numeric: refused before the files are read all the same
    ],
    "train": [
        (TRAIN + ["--epochs", "0"], "--epochs"),
        (TRAIN + ["--margin", "3"], "--margin"),
        (TRAIN + ["--margin", "0"], "--margin"),
        (TRAIN + ["--batch-size", "1"], "--batch-size"),
        (TRAIN + ["--size", "8"], "--size"),
        (TRAIN + ["--lr", "0"], "--lr"),
        (TRAIN + ["--seed", "-1"], "--seed"),
        (TRAIN + ["--loss", "triplet"], "triplet"),
        (TRAIN + ["--optimizer", "adam"], "adam"),
    ],
    "report": [
        (REPORT + ["--thumb", "8"], "--thumb"),
        (REPORT + ["--limit", "0"], "--limit"),
        (REPORT + ["--half", "middle"], "middle"),
        (REPORT + ["--public-share", "1.5"], "--public-share"),
    ],
    "sweep": [
        (SWEEP + ["--max-points", "0"], "--max-points"),
        (SWEEP + ["--split-seed", "-1"], "--split-seed"),
        (["sweep", "config.toml"], "--grid"),
    ],
    "predict": [
        (["predict", "config.toml", "photos", "out.csv"], "photos"),
        (["predict", "config.toml", "keep.txt", "out.csv"], "keep.txt"),  # a file, not a folder of photos
    ],
    "usage": [
        (["search", "--bogus"], "--bogus"),
        (["score", "run.csv"], "--gt"),
        (["index", "store"], "--out"),
    ],
}
ALL_CASES = [pytest.param(args, named, id=f"{command}:{' '.join(args[len(args) - 2:])}")
             for command, cases in CASES.items() for args, named in cases]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
@pytest.mark.parametrize("args,named", ALL_CASES)
def test_hostile_option_is_one_line_and_writes_nothing(cli, tmp_path, monkeypatch, args, named):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("a file of the user's\n")
    before = _snapshot(tmp_path)
    result = cli(*args)
    lines = result.err.strip().splitlines()
    assert result.code == 2, (result.code, result.err)
    assert len(lines) == 1, lines
    assert named in lines[0] and lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.err and result.out == ""
    assert _snapshot(tmp_path) == before


def test_a_bare_command_still_prints_its_help(cli):
    result = cli()
    assert result.code == 2 and "Usage" in result.out
    assert cli("--version").code == 0
    assert cli("score", "--help").code == 0


# ---------------------------------------------------------------- --help shows every range

# Options whose range Typer cannot state: the backbone decides (bpcr.features.backbones refuses the rest).
NO_RANGE = {("extract", "--layer")}
_RANGE = re.compile(r"\[(?:(-?[\d.]+)<=)?x(?:(<=|>=)(-?[\d.]+))?\]")


def _numeric_options():
    for info in app.registered_commands:
        command = info.name or info.callback.__name__.replace("_", "-")
        hints = typing.get_type_hints(info.callback)
        for name, param in inspect.signature(info.callback).parameters.items():
            option = param.default
            kinds = [a for a in typing.get_args(hints[name]) if a is not type(None)] or [hints[name]]
            if isinstance(option, typer.models.OptionInfo) and kinds[0] in (int, float):
                yield command, option.param_decls[0], option


NUMERIC = [pytest.param(c, d, o, id=f"{c}:{d}") for c, d, o in _numeric_options()]


def test_the_numeric_options_are_found():
    found = {(c, d) for c, d, _ in _numeric_options()}
    assert {("score", "--resamples"), ("extract", "--threads"), ("index", "--pq"), ("ensemble", "--steps")} <= found
    assert len(found) >= 35


def _declared(command: str, decl: str):
    """The Spec of ``bpcr command``'s option ``decl`` when the command derives its options from a dataclass."""
    info = next(i for i in app.registered_commands if (i.name or i.callback.__name__.replace("_", "-")) == command)
    cls = getattr(info.callback, "options_class", None)
    return next((spec_of(f) for f in fields_of(cls) if flag_of(f) == decl), None) if cls is not None else None


def _help_line(cli, monkeypatch, command: str, decl: str) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # one help line per option
    result = cli(command, "--help")
    # the option's own line in the options table (its name first), not an example in the text above it
    lines = [line for line in result.out.splitlines() if line.strip("│ *\t").split(" ")[0].rstrip(",") == decl]
    assert lines, f"{decl} not in `bpcr {command} --help`"
    return lines[0]


@pytest.mark.parametrize("command,decl,option", NUMERIC)
def test_help_shows_the_range_of_every_numeric_option(cli, monkeypatch, command, decl, option):
    spec = _declared(command, decl)
    if (command, decl) in NO_RANGE:
        assert option.min is None and option.max is None and (spec is None or not spec.bounded)
        return
    if spec is not None:  # declared once: the range the library checks is the one --help states
        assert spec.bounded, f"{command} {decl} has no range"
        assert option.min is None and option.max is None  # no second declaration for Typer to check
        text = bounds_text(spec.low, spec.high, spec.low_open, spec.high_open, spec.integer)
        assert text in _help_line(cli, monkeypatch, command, decl)
        return
    assert option.min is not None or option.max is not None, f"{command} {decl} has no range"
    if option.hidden:  # a deprecated name: not in --help, its range is still checked
        return
    line = _help_line(cli, monkeypatch, command, decl)
    found = _RANGE.search(line)
    assert found, line
    low, sign, bound = found.groups()
    shown_min = float(low) if low is not None else (float(bound) if sign == ">=" else None)
    shown_max = float(bound) if sign == "<=" else None
    assert shown_min == (None if option.min is None else float(option.min))
    assert shown_max == (None if option.max is None else float(option.max))


# ---------------------------------------------------------------- the library refuses the same values


def _refuses(call, named: str) -> None:
    with pytest.raises(BadInput) as info:
        call()
    assert named in str(info.value) and len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("kwargs,named", [
    ({"weights": [-1.0, 1.0]}, "--weights"), ({"weights": [0.0, 0.0]}, "--weights"),
    ({"weights": [math.nan, 1.0]}, "--weights"), ({"shortlist": 0}, "--shortlist"), ({"chunk_rows": 0}, "chunk_rows"),
])
def test_search_refuses(tmp_path, kwargs, named):
    from bpcr.retrieval.options import SearchOptions
    from bpcr.retrieval.search import search

    _refuses(lambda: search([tmp_path / "a", tmp_path / "b"], [tmp_path / "qa", tmp_path / "qb"], "s",
                            tmp_path / "subs", SearchOptions(**kwargs)), named)
    assert not (tmp_path / "subs").exists()


@pytest.mark.parametrize("kwargs,named", [
    ({"seed": -1}, "--seed"), ({"seed": SEED_MAX + 1}, "--seed"), ({"n_resamples": 0}, "--resamples"),
    ({"n_resamples": 2.5}, "--resamples"), ({"variant": "nope"}, "variant"),
])
def test_score_runs_refuses(tmp_path, kwargs, named):
    from bpcr.evaluation.options import ScoreOptions
    from bpcr.evaluation.score import score_runs

    _refuses(lambda: score_runs([tmp_path / "run.csv"], tmp_path / "gt.csv", ScoreOptions(**kwargs)), named)


@pytest.mark.parametrize("kwargs,named", [
    ({"kind": "flat", "pq": 8}, "--pq"), ({"kind": "hnsw", "nlist": 8}, "--nlist"), ({"kind": "ivf", "seed": -1}, "--seed"),
    ({"kind": "ivf", "target_recall": 0.0}, "--target-recall"), ({"kind": "ivf", "recall_sample": 0}, "--recall-sample"),
    ({"kind": "hnsw", "hnsw_m": 1}, "--hnsw-m"), ({"kind": "ivf", "train_size": 0}, "train_size"),
])
def test_build_index_refuses(tmp_path, kwargs, named):
    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import IndexOptions

    _refuses(lambda: build_index(tmp_path / "store", tmp_path / "index", IndexOptions(**kwargs), log=lambda _: None),
             named)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs,named", [
    ({"seed": -1}, "--seed"), ({"folds": 1}, "--folds"), ({"steps": 0}, "--steps"),
    ({"steps": TUNING_STEPS_MAX + 1}, "--steps"), ({"weights": [1.0, -1.0]}, "--weights"),
])
def test_ensemble_refuses_before_reading_runs(tmp_path, kwargs, named):
    from bpcr.evaluation.ensemble import ensemble
    from bpcr.evaluation.options import EnsembleOptions

    _refuses(lambda: ensemble([tmp_path / "a.csv", tmp_path / "b.csv"], "e", EnsembleOptions(method="rrf", **kwargs),
                              tmp_path / "subs"), named)


def test_tuning_refuses_negative_seeds():
    from bpcr.evaluation.tuning import cv_folds

    _refuses(lambda: cv_folds(["v1", "v2", "v3"], 2, seed=-1), "--seed")


@pytest.mark.parametrize("kwargs,named", [
    ({"workers": -1}, "--workers"), ({"threads": 0}, "--threads"), ({"pca_from": "no-such-output"}, "no-such-output"),
])
def test_extract_refuses_before_any_work(tmp_path, kwargs, named):
    from bpcr.features.extract import extract
    from bpcr.features.options import ExtractOptions

    _refuses(lambda: extract(tmp_path / "no-manifest.csv", tmp_path / "out",
                             ExtractOptions(backbone="efficientnet_lite0", poolings=["gem"], **kwargs)),
             named)
    assert list(tmp_path.iterdir()) == []


def test_extract_reads_the_pca_from_whitening_first(tmp_path):
    """A --pca-from folder whose whitening is damaged is refused before the manifest is even read."""
    from bpcr.features.extract import extract
    from bpcr.features.options import ExtractOptions

    (tmp_path / "db" / "gem").mkdir(parents=True)
    (tmp_path / "db" / "gem" / "pca.npz").write_bytes(b"not a zip")
    _refuses(lambda: extract(tmp_path / "no-manifest.csv", tmp_path / "out",
                             ExtractOptions(backbone="efficientnet_lite0", poolings=["gem"], pca_from=tmp_path / "db")),
             "pca.npz")


@pytest.mark.parametrize("kwargs,named", [({"seed": -1}, "--seed"), ({"workers": 0}, "--workers"),
                                          ({"ratio": 0.0}, "--ratio")])
def test_rerank_refuses(tmp_path, kwargs, named):
    from bpcr.reranking.options import RerankOptions
    from bpcr.reranking.rerank import rerank

    _refuses(lambda: rerank(tmp_path / "run.csv", tmp_path / "db.csv", tmp_path / "q.csv", "r", tmp_path / "subs",
                            RerankOptions(**kwargs)), named)
