"""A config's [[whiten]]: checked whole before any stage, run between extract and search with up-to-date
skipping, its stores named in later tables as an extraction's; and `bpcr predict` through it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bpcr.pipeline.config import load_config, validate_config
from tests.helpers import ROOT
from tests.helpers.tiny_pipeline import first_run, predicted_copy, rerun_after_edit, stages_run

DEMO = "[prepare]\ndemo = true\nn_products = 2\nn_distractors = 3\nn_queries = 2\n"
EXTRACT = "[[extract]]\nname = 'a'\nbackbone = 'test_resnet'\npoolings = ['gem', 'mac']\n"
WHITEN = "[[whiten]]\nname = 'a-lw'\nfeatures = 'a/gem'\n"
SEARCH = "[[search]]\nname = 's'\nfeatures = 'a-lw/gem'\n"


def test_a_config_with_whiten_validates(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(DEMO + EXTRACT + WHITEN + "method = 'learned'\ndims = 16\npair_tau = 0.8\n" +
                    "[[whiten]]\nname = 'a-pca'\nfeatures = 'a/mac'\nmethod = 'pca'\n" + SEARCH +
                    "[[search]]\nname = 'p'\nfeatures = 'a-pca/mac'\n" +
                    "[[search]]\nname = 'fused'\nfeatures = ['a-lw/gem', 'a/mac']\n" +
                    "[[refine]]\nname = 'r'\ninput = 's'\nmethod = 'aqe'\nfeatures = 'a-lw/gem'\n")
    validate_config(path, load_config(path))


@pytest.mark.parametrize("text,reason", [
    (DEMO + EXTRACT + WHITEN + "tau = 0.8\n" + SEARCH,
     "[whiten a-lw] unknown option 'tau'; accepted: dims, method, pair_tau"),
    (DEMO + EXTRACT + WHITEN + "manifest = 'queries.csv'\n" + SEARCH, "[whiten a-lw] unknown option 'manifest'"),
    (DEMO + EXTRACT + WHITEN + "method = 'zca'\n" + SEARCH,
     "[whiten a-lw] unknown method 'zca'; choose from learned, pca"),
    (DEMO + EXTRACT + WHITEN + "dims = 0\n" + SEARCH, "[whiten a-lw] --dims must be an integer at least 1, got 0"),
    (DEMO + EXTRACT + WHITEN + "dims = '16'\n" + SEARCH, "[whiten a-lw] dims must be an integer, got '16' (a string)"),
    (DEMO + EXTRACT + WHITEN + "pair_tau = 1.0\n" + SEARCH, "[whiten a-lw] --pair-tau must be a number in [0, 1)"),
    (DEMO + EXTRACT + WHITEN + "method = 'pca'\npair_tau = 0.5\n" + SEARCH, "[whiten a-lw] --pair-tau chooses"),
    (DEMO + EXTRACT + "[[whiten]]\nname = 'a-lw'\n" + SEARCH,
     "[whiten a-lw] needs features = '<extract name>/<pooling>'"),
    (DEMO + EXTRACT + "[[whiten]]\nfeatures = 'a/gem'\n", "every [[whiten]] needs a name"),
    (DEMO + EXTRACT + WHITEN.replace("a/gem", "b/gem") + SEARCH, "[whiten a-lw] features 'b/gem' must be"),
    (DEMO + EXTRACT + WHITEN.replace("a/gem", "a/grmac") + SEARCH, "[extract a] has no pooling 'grmac'"),
    (DEMO + EXTRACT + WHITEN.replace("'a-lw'", "'a'") + SEARCH, "[whiten a] is named as an [[extract]]"),
    (DEMO + EXTRACT + WHITEN + WHITEN + SEARCH, "two [[whiten]] are named 'a-lw'"),
    (DEMO + EXTRACT + WHITEN + "[[whiten]]\nname = 'again'\nfeatures = 'a-lw/gem'\n" + SEARCH,
     "[whiten again] features 'a-lw/gem' must be '<extract name>/<pooling>'"),  # a whitening of a whitening
    (DEMO + EXTRACT + WHITEN + SEARCH.replace("a-lw/gem", "a-lw/mac"),
     "[search s] features 'a-lw/mac': [whiten a-lw] has no pooling 'mac'; it whitens gem"),
    (DEMO + EXTRACT + "[whiten]\nname = 'a-lw'\nfeatures = 'a/gem'\n",
     "whiten must be an array of tables, one [[whiten]] per entry"),
])
def test_a_bad_whiten_table_is_one_line_before_any_stage(refused_config, text, reason):
    refused_config(text, reason)


# ---------------------------------------------------------------- end to end, on a tiny demo

# pair_tau 0.5: the tiny demo lists one product twice with identical words; at 0.5 its shades pair too.
TINY = """[[whiten]]
name = "lite0-lw"
features = "lite0/mac"
pair_tau = 0.5
[[whiten]]
name = "lite0-pca"
features = "lite0/mac"
method = "pca"
dims = 8
[[search]]
name = "mac-lw"
features = "lite0-lw/mac"
[[search]]
name = "mac-pca"
features = "lite0-pca/mac"
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_demo_config):
    return first_run(tmp_path_factory, tiny_demo_config, "pipeline-whiten", TINY)


@pytest.mark.slow
def test_whiten_stage_learns_on_the_database_and_whitens_the_queries_with_it(ran):
    folder, result = ran
    work = folder / "work"
    assert stages_run(result) >= {"whiten:lite0-lw-database", "whiten:lite0-lw-queries", "whiten:lite0-pca-database",
                                  "whiten:lite0-pca-queries", "search:mac-lw", "search:mac-pca"}
    order = [t.stage for t in result.times]
    assert max(i for i, s in enumerate(order) if s == "extract") < order.index("whiten") < order.index("index")
    db = json.loads((work / "features" / "lite0-lw" / "database" / "mac" / "meta.json").read_text())
    q = json.loads((work / "features" / "lite0-lw" / "queries" / "mac" / "meta.json").read_text())
    assert db["whitening"] == q["whitening"] and db["whitening"]["method"] == "learned"
    learned = db["whitening_learned"]
    # learned on the database manifest's pairs; the queries and the ground truth were only checked against
    assert learned["manifest"] == str(Path("work") / "prepared" / "database.csv") and learned["pair_tau"] == 0.5
    assert learned["pairs"] >= 2 and learned["no_query_leak"]["query_ids"] == 6
    assert learned["no_query_leak"]["gt_queries"] == 6
    assert (work / "features" / "lite0-lw" / "database" / "mac" / "whitening.npz").is_file()
    pca = json.loads((work / "features" / "lite0-pca" / "queries" / "mac" / "meta.json").read_text())
    assert pca["whitening"]["method"] == "pca" and pca["dim"] == 8
    scores = json.loads((work / "scores.json").read_text())["runs"]
    assert set(scores) == {"mac", "mac-lw", "mac-pca"}


@pytest.mark.slow
def test_rerun_skips_and_a_changed_option_relearns_only_its_own(ran, tmp_path):
    folder, _ = ran
    _, rerun = rerun_after_edit(folder, tmp_path, "dims = 8", "dims = 6")
    assert rerun == {"whiten:lite0-pca-database", "whiten:lite0-pca-queries", "index:lite0-pca-mac-cosine",
                     "search:mac-pca"}


@pytest.mark.slow
def test_predict_whitens_new_queries_with_the_databases_projection(ran, tmp_path, cli, monkeypatch):
    folder, _ = ran
    copy, photos = predicted_copy(folder, tmp_path, cli, monkeypatch, "--run", "mac-lw")
    folder_of = next((copy / "work" / "predict").iterdir())
    assert sorted(p.name for p in (folder_of / "features").iterdir()) == ["lite0", "lite0-lw"]  # pca pruned
    shutil.rmtree(copy / "work" / "features" / "lite0-lw" / "database")
    refused = cli("predict", "tiny.toml", photos, tmp_path / "again.csv", "--run", "mac-lw")
    assert refused.code == 2 and refused.err.count("\n") == 1, refused.err
    assert "[whiten] lite0-lw-database" in refused.err and "run `bpcr run tiny.toml` first" in refused.err


def test_the_training_demo_config_whitens_the_untrained_lite0_next_to_its_twins():
    configs = ROOT / "configs"
    config = load_config(configs / "demo-train.toml")
    validate_config(configs / "demo-train.toml", config)
    whitens = {e["features"]: e for e in config["whiten"]}
    assert set(whitens) == {"lite0/gem", "lite0/grmac"}
    searched = {e["features"] for e in config["search"]}
    for spec, entry in whitens.items():
        assert entry.get("method", "learned") == "learned"
        assert f"{entry['name']}/{spec.partition('/')[2]}" in searched and spec in searched  # beside its twin
