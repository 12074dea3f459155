"""The placed teams' recipes (configs/recipes/) and their offline stand-ins (`bpcr run RECIPE --stand-in`,
bpcr.pipeline.standin): every recipe validates with its own backbones and with its stand-ins, the stand-in
replaces backbones, sizes and hub weights and nothing else, the runs made from a stand-in say so, and one
recipe's stand-in runs end to end on a tiny demo."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from bpcr.features.backbones import BUNDLED_WEIGHTS
from bpcr.io.fileio import sha256_file
from bpcr.pipeline.config import load_config, validate_config
from bpcr.pipeline.runconfig import RUN_TABLES
from bpcr.pipeline.standin import apply_stand_in
from tests.helpers import ROOT
from tests.helpers.tiny_pipeline import stages_run

RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.toml"))
IDS = [p.stem for p in RECIPES]


def test_there_is_one_recipe_per_placed_team_and_make_recipes_runs_each():
    assert IDS == ["2018-2nd", "2018-3rd", "2019-1st", "2020-1st", "2020-2nd"]
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^RECIPES\s*=\s*(.+)$", makefile, re.MULTILINE)
    assert listed is not None and listed.group(1).split() == IDS
    assert "--stand-in" in makefile and "--leaderboard leaderboard-recipes.md" in makefile


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_a_recipe_validates_with_its_own_backbones_and_with_its_stand_ins(path):
    config = load_config(path)
    validate_config(path, config)
    offline, stand_in = apply_stand_in(path, config)
    validate_config(path, offline)
    # Offline-runnable: every network has bundled weights, at the demo's sizes, and nothing asks the hub.
    for table in ("extract", "train"):
        for entry in offline.get(table, []):
            assert entry["backbone"] in BUNDLED_WEIGHTS and entry["size"] in (224, 240), entry
            assert entry.get("weights") != "hub", entry
    assert stand_in.replaced and stand_in.runs


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_a_recipe_cites_its_team_and_score_and_ends_with_a_run_named_after_its_file(path):
    text = path.read_text()
    header = text.split("\nwork = ", 1)[0]
    assert re.search(r"mAP@7 0\.\d+", header) and re.search(r"(19|20)\d\d", header)
    assert "--stand-in" in header
    config = load_config(path)
    runs = [e["name"] for table in RUN_TABLES for e in config.get(table, [])]
    assert runs[-1] == path.stem  # what `make recipes` scores
    assert all(n.startswith(path.stem) for t in ("extract", "train", "combine") for n in
               (e["name"] for e in config.get(t, [])))  # no store of one recipe overwrites another's in work/demo
    assert config["work"] == "work/demo" and config["prepare"] == {"demo": True, "seed": 0}  # the demo's, reused
    assert config["submissions"] != "submissions" and config["score"]["gt"] == "ground_truth/demo.csv"
    # the team's own networks, with their hub weights, unless --stand-in
    assert all(e.get("weights") == "hub" or str(e.get("weights", "")).startswith("train:")
               for e in config.get("extract", []))


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_the_stand_in_replaces_backbones_sizes_and_hub_weights_and_nothing_else(path):
    config = load_config(path)
    before = copy.deepcopy(config)
    offline, stand_in = apply_stand_in(path, config)
    assert config == before  # the loaded config is not changed in place
    assert set(offline) == set(config) - {"offline"}
    for key in offline:
        if key not in ("extract", "train"):
            assert offline[key] == config[key], key
    mapping = config["offline"]
    replaced = 0
    for table in ("extract", "train"):
        assert [e["name"] for e in offline.get(table, [])] == [e["name"] for e in config.get(table, [])]
        for own, rewritten in zip(config.get(table, []), offline.get(table, [])):
            stand = mapping[own["backbone"]]
            expected = {k: v for k, v in own.items() if not (k == "weights" and v == "hub")}
            expected.update(stand)
            assert rewritten == expected
            replaced += 1
    assert len(stand_in.replaced) == replaced
    # each replacement is recorded as the config's backbone and size against the stand-in's
    for record in stand_in.replaced:
        assert mapping[record.backbone] == {"backbone": record.stand_in, "size": record.stand_in_size}


def test_without_stand_in_the_offline_table_is_only_checked(tmp_path):
    from bpcr.pipeline.runner import Pipeline

    path = ROOT / "configs" / "recipes" / "2019-1st.toml"
    pipeline = Pipeline(path)
    assert pipeline.stand_in is None and pipeline.config == load_config(path)
    assert {e["backbone"] for e in pipeline.config["extract"]} == {"legacy_seresnet152.in1k", "densenet201.tv_in1k"}
    assert Pipeline(path, stand_in=True).stand_in is not None


# ---------------------------------------------------------------- the mechanism, on a config of its own

DEMO = "[prepare]\ndemo = true\nn_products = 2\nn_distractors = 3\nn_queries = 2\n"
CONFIG = DEMO + """
[[train]]
name = "t"
backbone = "vgg16"
weights = "hub"
size = 480
[[extract]]
name = "a"
backbone = "vgg16"
weights = "train:t"
size = 480
poolings = ["mac", "gem"]
[[extract]]
name = "b"
backbone = "resnet50"
weights = "hub"
size = 480
resize = "pad"
poolings = ["mac"]
[[extract]]
name = "lite"
backbone = "tf_efficientnet_lite0"
poolings = ["mac"]
[[whiten]]
name = "a-lw"
features = "a/gem"
[[combine]]
name = "ab"
features = ["a-lw/gem", "b/mac"]
[[search]]
name = "s-ab"
features = "ab/combined"
[[search]]
name = "s-b"
features = "b/mac"
[[search]]
name = "s-lite"
features = "lite/mac"
[[refine]]
name = "r"
input = "s-b"
method = "aqe"
[[ensemble]]
name = "e"
inputs = ["s-lite", "r"]
method = "rrf"
[[search]]
name = "s-lite2"
features = "lite/mac"
[[ensemble]]
name = "e-lite"
inputs = ["s-lite", "s-lite2"]
method = "rrf"
[offline]
vgg16 = { backbone = "tf_efficientnet_lite0", size = 224 }
resnet50 = { backbone = "tf_efficientnet_lite1" }
"""


def test_runs_made_from_a_stand_in_are_found_through_features_weights_and_input_runs(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    validate_config(path, config)
    offline, stand_in = apply_stand_in(path, config)
    validate_config(path, offline)
    train, a, b, lite = offline["train"][0], *offline["extract"]
    assert (train["backbone"], train["size"], "weights" in train) == ("tf_efficientnet_lite0", 224, False)
    assert (a["backbone"], a["size"], a["weights"]) == ("tf_efficientnet_lite0", 224, "train:t")
    assert (b["backbone"], b["size"], b["resize"], "weights" in b) == ("tf_efficientnet_lite1", 480, "pad", False)
    assert lite == config["extract"][2]
    made_from = {run: sorted(r.label for r in found) for run, found in stand_in.runs.items()}
    assert made_from == {"s-ab": ["extract a", "extract b", "train t"], "s-b": ["extract b"],
                         "r": ["extract b"], "e": ["extract b"]}  # s-lite and e-lite: no stand-in
    assert stand_in.note("r") == "stand-in (tf_efficientnet_lite1@480 for resnet50@480)"
    assert stand_in.note("s-lite") is None and stand_in.record("e-lite") is None
    assert stand_in.record("s-ab")["replaced"][0] == {
        "table": "train", "name": "t", "backbone": "vgg16", "size": 480, "stand_in": "tf_efficientnet_lite0",
        "stand_in_size": 224, "weights": "hub"}


@pytest.mark.parametrize("text,reason", [
    (CONFIG + 'densenet201 = { backbone = "tf_efficientnet_lite0" }\n',
     ("[offline] maps 'densenet201', which no [[extract]] or [[train]] uses; their backbones: resnet50, "
      "tf_efficientnet_lite0, vgg16")),
    (CONFIG.replace("size = 224 }", "size = 224, resize = 'pad' }"),
     "[offline \"vgg16\"] unknown key 'resize'; a stand-in sets backbone and size"),
    (CONFIG.replace("size = 224 }", "size = 8 }"), "[offline \"vgg16\"] size must be an integer in [16, 4096], got 8"),
    (CONFIG.replace('resnet50 = { backbone = "tf_efficientnet_lite1" }', 'resnet50 = { size = 224 }'),
     "[offline \"resnet50\"] needs backbone = '<the network that stands in>', got none"),
    (CONFIG.replace('resnet50 = { backbone = "tf_efficientnet_lite1" }', 'resnet50 = "tf_efficientnet_lite1"'),
     "[offline \"resnet50\"] must be a table"),
    (CONFIG.replace("[offline]", "[[offline]]"), "offline must be one table, written [offline]"),
])
def test_a_bad_offline_table_is_one_line_before_any_stage(refused_config, text, reason):
    refused_config(text, reason)


@pytest.mark.parametrize("text,reason", [
    (CONFIG.split("[offline]")[0], "--stand-in needs an [offline] table"),
    (CONFIG.replace('resnet50 = { backbone = "tf_efficientnet_lite1" }\n', ""),
     "[extract b] backbone 'resnet50' loads hub weights and [offline] names no stand-in for it"),
])
def test_stand_in_without_a_stand_in_for_a_hub_backbone_is_refused(cli, tmp_path, monkeypatch, text, reason):
    config = tmp_path / "c.toml"
    config.write_text(text)
    monkeypatch.chdir(tmp_path)
    result = cli("run", config, "--stand-in")
    assert result.code == 2 and reason in result.err and len(result.err.strip().splitlines()) == 1, result
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]


# ---------------------------------------------------------------- one recipe's stand-in, end to end

@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """configs/recipes/2020-1st.toml with its stand-in on a tiny demo: its tables as they are, but the dataset
    (8 products), the folders and the stand-in's size (64 px), on one thread."""
    import tomli_w

    from bpcr.pipeline.runner import run_pipeline

    recipe = load_config(ROOT / "configs" / "recipes" / "2020-1st.toml")
    recipe.update(work="work", submissions="subs", leaderboard="lb.md",
                  prepare={"demo": True, "seed": 2, "n_products": 8, "n_distractors": 20, "n_queries": 6,
                           "workers": 1})
    recipe["score"] = {}  # scored against the tiny demo's own ground truth
    for stand_in in recipe["offline"].values():
        stand_in["size"] = 64
    for entry in recipe["extract"]:
        entry.update(workers=0, threads=1)
    folder = tmp_path_factory.mktemp("recipe")
    (folder / "tiny.toml").write_text(tomli_w.dumps(recipe))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        result = run_pipeline("tiny.toml", log=lambda _: None, stand_in=True)
    return folder, result


@pytest.mark.slow
def test_a_recipe_s_stand_in_runs_end_to_end_and_its_runs_say_so(ran):
    folder, result = ran
    assert stages_run(result) == {"prepare:demo", "extract:2020-1st-resnext101-database",
                                  "extract:2020-1st-resnext101-queries",
                                  "index:2020-1st-resnext101-mac-cosine", "search:2020-1st-mac", "refine:2020-1st"}
    meta = json.loads((folder / "work" / "features" / "2020-1st-resnext101" / "queries" / "mac" / "meta.json")
                      .read_text())
    assert (meta["backbone"], meta["input_size"], meta["weights"]["source"]) == ("tf_efficientnet_lite0", 64, "bundled")
    words = "stand-in (tf_efficientnet_lite0@64 for resnext101_32x4d.gluon_in1k@480)"
    for run in ("2020-1st-mac", "2020-1st"):
        prov = json.loads((folder / "subs" / f"{run}.json").read_text())
        assert prov["summary"].startswith(words + ": "), prov["summary"]
        assert prov["stand_in"] == {"config": "tiny.toml", "replaced": [{
            "table": "extract", "name": "2020-1st-resnext101", "backbone": "resnext101_32x4d.gluon_in1k",
            "size": 480, "stand_in": "tf_efficientnet_lite0", "stand_in_size": 64, "weights": "hub"}]}
    refined = json.loads((folder / "subs" / "2020-1st.json").read_text())
    assert refined["method"] == "refine:qe-2020" and "2/3" in refined["summary"]  # the recipe's own step, after the note
    # marked before the refinement read it: the input run's JSON is the one the refinement hashed
    recorded = {f["path"]: f["sha256"] for f in refined["input_run"]["files"]}
    assert recorded[str(Path("subs/2020-1st-mac.json"))] == sha256_file(folder / "subs" / "2020-1st-mac.json")
    board = (folder / "lb.md").read_text()
    assert board.count(words) == 2  # the leaderboard's method column
    assert len((folder / "subs" / "2020-1st.csv").read_text().splitlines()) == 6


@pytest.mark.slow
def test_a_stand_in_rerun_skips_every_stage(ran):
    from bpcr.pipeline.runner import run_pipeline

    folder, _ = ran
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        again = run_pipeline("tiny.toml", log=lambda _: None, stand_in=True)
    assert stages_run(again) == set()
    assert json.loads((folder / "subs" / "2020-1st.json").read_text())["stand_in"]["config"] == "tiny.toml"
