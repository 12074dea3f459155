"""A config's [[combine]]: checked whole before any stage, run after [[whiten]] and before search with up-to-date
skipping, its store named in later tables as "<name>/combined"; its search equals the sum fusion of the stores
with the weights squared; and `bpcr predict` combines new queries with the database's parameters."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bpcr.io.runs import read_trec
from bpcr.pipeline.config import load_config, validate_config
from tests.helpers.tiny_pipeline import first_run, predicted_copy, rerun_after_edit, stages_run

DEMO = "[prepare]\ndemo = true\nn_products = 2\nn_distractors = 3\nn_queries = 2\n"
EXTRACT = "[[extract]]\nname = 'a'\nbackbone = 'test_resnet'\npoolings = ['gem', 'mac']\n"
WHITEN = "[[whiten]]\nname = 'a-lw'\nfeatures = 'a/gem'\n"
COMBINE = "[[combine]]\nname = 'ab'\nfeatures = ['a/gem', 'a/mac']\n"
SEARCH = "[[search]]\nname = 's'\nfeatures = 'ab/combined'\n"


def test_a_config_with_combine_validates(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(DEMO + EXTRACT + WHITEN + COMBINE + "weights = [10, 8.95]\n" +
                    "[[combine]]\nname = 'four'\nfeatures = ['a/gem', 'a/mac', 'a-lw/gem']\nznorm = true\n"
                    "pca = 16\npca_whiten = true\npca_rows = 100\nseed = 3\ndtype = 'float32'\n" + SEARCH +
                    "[[search]]\nname = 'f'\nfeatures = ['four/combined', 'a/mac']\n" +
                    "[[refine]]\nname = 'r'\ninput = 's'\nmethod = 'aqe'\nfeatures = 'ab/combined'\n")
    validate_config(path, load_config(path))


@pytest.mark.parametrize("text,reason", [
    (DEMO + EXTRACT + COMBINE + "weight = [1, 2]\n" + SEARCH,
     "[combine ab] unknown option 'weight'; accepted: dtype, pca, pca_rows, pca_whiten, seed, weights, znorm"),
    (DEMO + EXTRACT + COMBINE + "weights = [1]\n" + SEARCH,
     "[combine ab] --weights needs 2 finite numbers, one per input store"),
    (DEMO + EXTRACT + COMBINE + "weights = [1, -2]\n" + SEARCH, "[combine ab] --weights must be finite numbers >= 0"),
    (DEMO + EXTRACT + COMBINE + "weights = '1,2'\n" + SEARCH, "[combine ab] weights must be an array of numbers"),
    (DEMO + EXTRACT + COMBINE + "znorm = 1\n" + SEARCH, "[combine ab] znorm must be true or false, got 1"),
    (DEMO + EXTRACT + COMBINE + "pca = 0\n" + SEARCH, "[combine ab] --pca must be an integer at least 1, got 0"),
    (DEMO + EXTRACT + COMBINE + "pca_whiten = true\n" + SEARCH, "[combine ab] --pca-whiten applies to the PCA"),
    (DEMO + EXTRACT + COMBINE + "dtype = 'float64'\n" + SEARCH, "[combine ab] unknown dtype 'float64'"),
    (DEMO + EXTRACT + "[[combine]]\nname = 'ab'\n" + SEARCH, "[combine ab] needs features = ['<extract name>/"),
    (DEMO + EXTRACT + "[[combine]]\nname = 'ab'\nfeatures = []\n" + SEARCH, "[combine ab] features is empty"),
    (DEMO + EXTRACT + "[[combine]]\nname = 'ab'\nfeatures = ['a/gem', 'a/gem']\n" + SEARCH,
     "[combine ab] features names 'a/gem' twice"),
    (DEMO + EXTRACT + "[[combine]]\nname = 'ab'\nfeatures = ['a/gem', 'b/mac']\n" + SEARCH,
     "[combine ab] features 'b/mac' must be '<extract name>/<pooling>'"),
    (DEMO + EXTRACT + "[[combine]]\nname = 'ab'\nfeatures = ['a/gem', 'a/grmac']\n" + SEARCH,
     "[extract a] has no pooling 'grmac'"),
    (DEMO + EXTRACT + COMBINE.replace("'ab'", "'a'") + SEARCH.replace("ab/", "a/"),
     "[combine a] is named as an [[extract]]"),
    (DEMO + EXTRACT + WHITEN + COMBINE.replace("'ab'", "'a-lw'") + SEARCH, "[combine a-lw] is named as an [[whiten]]"),
    (DEMO + EXTRACT + COMBINE + COMBINE + SEARCH, "two [[combine]] are named 'ab'"),
    (DEMO + EXTRACT + COMBINE + "[[combine]]\nname = 'again'\nfeatures = ['ab/combined', 'a/mac']\n" + SEARCH,
     "[combine again] features 'ab/combined' must be '<extract name>/<pooling>'"),  # a combination of one
    (DEMO + EXTRACT + WHITEN.replace("a/gem", "ab/combined") + COMBINE + SEARCH,
     "[whiten a-lw] features 'ab/combined' must be"),  # whitening runs before combining
    (DEMO + EXTRACT + COMBINE + SEARCH.replace("ab/combined", "ab/mac"),
     "[search s] features 'ab/mac': [combine ab] has no pooling 'mac'; it combines its features into combined"),
    (DEMO + EXTRACT + "[combine]\nname = 'ab'\nfeatures = ['a/gem']\n",
     "combine must be an array of tables, one [[combine]] per entry"),
])
def test_a_bad_combine_table_is_one_line_before_any_stage(refused_config, text, reason):
    refused_config(text, reason)


# ---------------------------------------------------------------- end to end, on a tiny demo

TINY = """[[whiten]]
name = "lite0-pca"
features = "lite0/mac"
method = "pca"
dims = 8
[[combine]]
name = "both"
features = ["lite0/mac", "lite0-pca/mac"]
weights = [10, 8.95]
dtype = "float32"
[[combine]]
name = "both-z"
features = ["lite0/mac", "lite0-pca/mac"]
znorm = true
pca = 6
[[search]]
name = "both"
features = "both/combined"
[[search]]
name = "fused"
features = ["lite0/mac", "lite0-pca/mac"]
weights = [100, 80.1025]
[[search]]
name = "both-z"
features = "both-z/combined"
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_demo_config):
    return first_run(tmp_path_factory, tiny_demo_config, "pipeline-combine", TINY)


@pytest.mark.slow
def test_combine_stage_learns_on_the_database_and_its_search_is_the_squared_weights_fusion(ran):
    folder, result = ran
    work = folder / "work"
    assert stages_run(result) >= {"combine:both-database", "combine:both-queries", "combine:both-z-database",
                                  "combine:both-z-queries", "search:both", "search:both-z", "search:fused"}
    order = [t.stage for t in result.times]
    assert order.index("whiten") < order.index("combine") < order.index("index")
    for name in ("both", "both-z"):
        db = json.loads((work / "features" / name / "database" / "combined" / "meta.json").read_text())
        q = json.loads((work / "features" / name / "queries" / "combined" / "meta.json").read_text())
        assert db["pooling_params"] == q["pooling_params"] and db["pooling"] == "combined"
        assert (work / "features" / name / "database" / "combined" / "combination.npz").is_file()
        inputs = [i["store"] for i in db["combination"]["inputs"]]
        assert inputs == [str(Path("work/features/lite0/database/mac")),
                          str(Path("work/features/lite0-pca/database/mac"))]
    assert db["dim"] == 6 and 0 < db["combination"]["learned"]["explained_variance_ratio"] <= 1
    ranked_c, scores_c = read_trec(folder / "subs" / "both.trec")
    ranked_f, scores_f = read_trec(folder / "subs" / "fused.trec")
    assert ranked_c == ranked_f  # the same IDs in the same order for every query
    for query in ranked_c:
        assert np.allclose(scores_c[query], np.array(scores_f[query]) / (100 + 80.1025), rtol=0, atol=1e-6)
    scores = json.loads((work / "scores.json").read_text())["runs"]
    assert set(scores) == {"mac", "both", "fused", "both-z"}


@pytest.mark.slow
def test_rerun_skips_and_a_changed_option_relearns_only_its_own(ran, tmp_path):
    folder, _ = ran
    _, rerun = rerun_after_edit(folder, tmp_path, "pca = 6", "pca = 5")
    assert rerun == {"combine:both-z-database", "combine:both-z-queries", "index:both-z-combined-cosine",
                     "search:both-z"}


@pytest.mark.slow
def test_predict_combines_new_queries_with_the_databases_parameters(ran, tmp_path, cli, monkeypatch):
    folder, _ = ran
    copy, photos = predicted_copy(folder, tmp_path, cli, monkeypatch, "--run", "both-z")
    folder_of = next((copy / "work" / "predict").iterdir())
    assert sorted(p.name for p in (folder_of / "features").iterdir()) == ["both-z", "lite0", "lite0-pca"]
    q = json.loads((folder_of / "features" / "both-z" / "queries" / "combined" / "meta.json").read_text())
    assert q["combination"]["applied"] == str(Path("work/features/both-z/database/combined/combination.npz"))
    shutil.rmtree(copy / "work" / "features" / "both-z" / "database")
    refused = cli("predict", "tiny.toml", photos, tmp_path / "again.csv", "--run", "both-z")
    assert refused.code == 2 and refused.err.count("\n") == 1, refused.err
    assert "[combine] both-z-database" in refused.err and "run `bpcr run tiny.toml` first" in refused.err
