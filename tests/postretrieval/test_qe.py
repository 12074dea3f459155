"""Query expansion (bpcr.postretrieval.qe): average QE, alpha-QE and the 2020 preset on hand-made geometry."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.postretrieval.context import Context
from bpcr.postretrieval.qe import WINNER_2020_WEIGHTS, expanded_queries
from bpcr.postretrieval.options import RefineOptions
from bpcr.postretrieval.refine import refine
from bpcr.io.runs import load_run
from bpcr.postretrieval.similarity import load_similarity
from tests.helpers.refine_world import make_world, unit

# q = (1, 0, 0). Cosines with q: a .8, d .7, t .6; t is a's near twin (cos(a, t) = .96), d is not (.56).
DB = {"a": unit(0.8, 0.6, 0), "d": unit(0.7, 0, 0.714), "t": unit(0.6, 0.8, 0), "z": unit(0, 0.2, 1),
      "y": unit(-1, 0.1, 0.2)}
Q = {"v1": unit(1, 0, 0)}


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path, DB, Q)


def test_average_qe_reaches_the_match_through_the_top_hit(world, tmp_path):
    assert load_run(world).ranking["v1"][:3] == ["a", "d", "t"]
    result = refine(world, None, None, None, "aqe", tmp_path / "out", RefineOptions(method="aqe", qe_n=1))
    # q' = normalise(q + a) = (.949, .316, 0): cosine with t .822, with d .664 (.9487 x .70007), with a .949.
    run = load_run(result.csv)
    assert run.ranking["v1"][:3] == ["a", "t", "d"]
    assert run.scores["v1"][:3] == pytest.approx([0.9487, 0.8222, 0.6641], abs=1e-4)
    prov = json.loads(result.written[".json"].read_text())
    assert prov["method"] == "refine:aqe" and prov["params"]["n"] == 1 and prov["params"]["alpha"] == 0.0
    assert prov["input_run"]["name"] == "base" and prov["counts"]["changed"] == 1
    assert prov["defaults"]["options"] == {}


def test_alpha_weights_and_the_2020_preset_by_hand(world, tmp_path):
    run = load_run(world)
    ctx = Context(run, load_similarity(run, run.files))
    q, a, d = (np.array(v) for v in (Q["v1"], DB["a"], DB["d"]))
    for alpha in (0.0, 1.0, 3.0):
        got = expanded_queries(ctx, ["v1"], 2, alpha)[0][0]
        want = q + (q @ a) ** alpha * a + (q @ d) ** alpha * d  # cosines .8 and .70007
        assert got == pytest.approx(want / np.linalg.norm(want), abs=1e-6)
    got = expanded_queries(ctx, ["v1"], 2, 0.0, fixed=WINNER_2020_WEIGHTS)[0][0]
    want = q + 2 / 3 * a + 1 / 3 * d
    assert got == pytest.approx(want / np.linalg.norm(want), abs=1e-6)
    preset = refine(world, None, None, None, "qe2020", tmp_path / "out", RefineOptions(method="qe-2020"))
    assert preset.provenance["params"]["weights"] == pytest.approx([1, 2 / 3, 1 / 3])


def test_ties_by_id_and_same_bytes(tmp_path):
    db = dict(DB, n2=unit(0.5, 0.5, 0.5), n1=unit(0.5, 0.5, 0.5))  # identical vectors: equal scores
    run = make_world(tmp_path, db, Q)
    first = refine(run, None, None, None, "one", tmp_path / "out",
                   RefineOptions(method="alpha-qe", qe_n=2, qe_alpha=1.0))
    again = refine(run, None, None, None, "two", tmp_path / "out",
                   RefineOptions(method="alpha-qe", qe_n=2, qe_alpha=1.0))
    ranking = load_run(first.csv).ranking["v1"]
    assert ranking.index("n1") + 1 == ranking.index("n2")
    for suffix in (".csv", ".trec"):
        assert first.written[suffix].read_text() == again.written[suffix].read_text().replace(" two", " one")


def test_several_feature_sets_expand_per_set_and_fuse(tmp_path):
    from bpcr.retrieval.options import SearchOptions
    from bpcr.retrieval.search import search

    make_world(tmp_path, DB, Q, name="A")
    flipped = {k: [v[1], v[0], v[2]] for k, v in DB.items()}  # another network, another geometry
    make_world(tmp_path, flipped, {"v1": [0.0, 1.0, 0.0]}, name="B", meta={"backbone": "other", "pooling": "none"})
    search([tmp_path / "index-A", tmp_path / "index-B"], [tmp_path / "q-A", tmp_path / "q-B"], "fused",
           tmp_path / "runs", SearchOptions(depth=7, fusion="product"), log=lambda m: None)
    result = refine(tmp_path / "runs" / "fused.trec", None, None, None, "f-aqe", tmp_path / "out",
                    RefineOptions(method="aqe", qe_n=1))
    assert result.provenance["similarity"]["fusion"] == "product"
    # In both sets q' = normalise(q + a) (the same geometry, axes swapped): the product of equal cosines.
    scores = load_run(result.csv).scores["v1"]
    assert scores[:2] == pytest.approx([(1 + 0.9487) ** 2, (1 + 0.8222) ** 2], abs=1e-3)


def test_alpha_needs_cosine_and_options_belong_to_their_method(tmp_path, world):
    with pytest.raises(BadInput, match="--k1 is an option of --method kreciprocal"):
        refine(world, None, None, None, "x", tmp_path / "out", RefineOptions(method="aqe", k1=3))
    with pytest.raises(BadInput, match="--qe-n must be"):
        refine(world, None, None, None, "x", tmp_path / "out", RefineOptions(method="aqe", qe_n=0))
    with pytest.raises(BadInput, match="unknown refine method"):
        refine(world, None, None, None, "x", tmp_path / "out", RefineOptions(method="best"))
    assert not (tmp_path / "out").exists()


def test_cli_qe(world, tmp_path, cli):
    result = cli("refine", world, "--method", "aqe", "--qe-n", "1", "--name", "cli-aqe", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    assert "query expansion" in result.out and load_run(tmp_path / "out" / "cli-aqe.csv").submission["v1"][1] == "t"
    bad = cli("refine", world, "--method", "alpha-qe", "--kd", "5", "--name", "x", "--out", tmp_path / "out")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "--kd" in bad.err
