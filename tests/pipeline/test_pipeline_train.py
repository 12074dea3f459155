"""`bpcr run` with a [[train]] stage, an [[extract]] of its weights and a [report], on a tiny demo."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from bpcr.pipeline.runner import run_pipeline
from tests.helpers import ROOT
from tests.helpers.tiny_pipeline import predicted_copy, run_tiny, stages_run

pytestmark = [pytest.mark.filterwarnings("ignore:backbone .* has random weights"),
              pytest.mark.slow]  # module fixtures train networks on a generated dataset

# A tiny random network trained for one epoch of two steps: the stage's wiring, not training itself.
TRAIN = """[[train]]
name = "t"
backbone = "test_resnet"
weights = "none"
size = 32
epochs = 1
batch_size = 4
images_per_epoch = 8
pool_size = 8
categories = 3
min_category_size = 2
device = "cpu"
threads = 1
workers = 0
[[extract]]
name = "trained"
backbone = "test_resnet"
weights = "train:t"
size = 32
poolings = ["gem", "grmac"]
dtype = "float32"
workers = 0
threads = 1
[[search]]
name = "trained-gem"
features = "trained/gem"
[report]
thumb = 32
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_demo_config):
    folder = tmp_path_factory.mktemp("pipeline-train")
    (folder / "tiny.toml").write_text(tiny_demo_config(6, one_worker=True, then=TRAIN))
    return folder, run_tiny(folder)


def test_train_stage_feeds_extract_and_the_report_follows_the_leaderboard(ran):
    folder, result = ran
    work = folder / "work"
    out = work / "train" / "t"
    assert sorted(p.name for p in out.iterdir()) == ["train.json", "weights.pt"]
    summary = json.loads((out / "train.json").read_text())
    # Trained on the database manifest; the queries beside it were only checked against.
    assert summary["options"]["manifest"]["file"] == "database.csv"
    assert summary["leak_check"]["query_ids"] == 6 and summary["leak_check"]["gt_queries"] == 6
    assert summary["options"]["epochs"] == 1 and summary["options"]["backbone"] == "test_resnet"
    for which in ("database", "queries"):
        meta = json.loads((work / "features" / "trained" / which / "gem" / "meta.json").read_text())
        assert meta["weights"]["state_sha256"] == summary["weights"]["state_sha256"]
    assert stages_run(result) >= {"train:t", "extract:trained-database", "extract:trained-queries",
                                  "search:trained-gem", "report:report"}
    order = [t.stage for t in result.times]
    assert order.index("train") < order.index("extract") and order[-1] == "report"
    # The report sits beside the leaderboard and shows the leaderboard's best runs (both, here).
    report = json.loads((folder / "report" / "report.json").read_text())
    scores = json.loads((work / "scores.json").read_text())["runs"]
    assert sorted(report["runs"]) == sorted(scores) == ["mac", "trained-gem"]
    assert report["thumb"] == 32 and (folder / "report" / "index.html").is_file()


def test_rerun_skips_training_extraction_and_report(ran):
    folder, _ = ran
    weights = (folder / "work" / "train" / "t" / "weights.pt").read_bytes()
    page = (folder / "report" / "index.html").read_bytes()
    again = run_tiny(folder)
    assert stages_run(again) == set()
    assert {t.stage for t in again.times} >= {"train", "report"}
    assert (folder / "work" / "train" / "t" / "weights.pt").read_bytes() == weights
    assert (folder / "report" / "index.html").read_bytes() == page


def test_new_weights_reextract_and_a_changed_option_retrains(ran, tmp_path):
    folder, _ = ran
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    weights = copy / "work" / "train" / "t" / "weights.pt"
    # Other weights behind the same path (the train stamp itself still matches): the extraction's key follows them.
    state = torch.load(weights, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.5
    torch.save(state, weights)
    downstream = {"extract:trained-database", "extract:trained-queries", "index:trained-gem-cosine",
                  "search:trained-gem", "report:report"}
    assert stages_run(run_tiny(copy)) == downstream
    # A changed training option trains again, and everything downstream of the weights follows; Lite0 does not.
    config = (copy / "tiny.toml").read_text().replace("pool_size = 8", "pool_size = 12")
    (copy / "tiny.toml").write_text(config)
    assert stages_run(run_tiny(copy)) == {"train:t", *downstream}


def test_predict_reuses_the_training_and_refuses_without_it(ran, tmp_path, cli, monkeypatch):
    folder, _ = ran
    copy, photos = predicted_copy(folder, tmp_path, cli, monkeypatch, "--run", "trained-gem")
    (copy / "work" / "train" / "t" / "weights.pt").unlink()
    refused = cli("predict", "tiny.toml", photos, tmp_path / "again.csv", "--run", "trained-gem")
    assert refused.code == 2 and refused.err.count("\n") == 1, refused.err
    assert "[train] t: work/train/t/weights.pt is missing; run `bpcr run tiny.toml` first" in refused.err
    assert not (tmp_path / "again.csv").exists()


DEMO = "[prepare]\ndemo = true\nn_products = 2\nn_distractors = 3\nn_queries = 2\n"
TRAIN_T = "[[train]]\nname = 't'\nbackbone = 'test_resnet'\n"
EXTRACT = "[[extract]]\nname = 'a'\nbackbone = 'test_resnet'\npoolings = ['gem']\n"
SEARCH = "[[search]]\nname = 's'\nfeatures = 'a/gem'\n"


@pytest.mark.parametrize("text,reason", [
    (DEMO + EXTRACT + "weights = 'train:nope'\n", "[extract a] weights 'train:nope' names no [[train]] of this "
                                                 "config; the config has no [[train]]"),
    (DEMO + TRAIN_T + EXTRACT + "weights = 'train:nope'\n", "names no [[train]] of this config; [[train]] names: t"),
    (DEMO + TRAIN_T + EXTRACT.replace("test_resnet", "tf_efficientnet_lite0") + "weights = 'train:t'\n",
     "[extract a] backbone 'tf_efficientnet_lite0' cannot load the weights of [train t], which trains 'test_resnet'"),
    (DEMO + TRAIN_T + "epoch = 3\n", "[train t] unknown option 'epoch'"),
    (DEMO + TRAIN_T + "queries = 'q.csv'\n", "[train t] unknown option 'queries'"),
    (DEMO + TRAIN_T + "epochs = '3'\n", "[train t] epochs must be an integer, got '3' (a string)"),
    (DEMO + TRAIN_T + "epochs = 0\n", "[train t] --epochs must be an integer at least 1, got 0"),
    (DEMO + TRAIN_T + "loss = 'triplet'\n", "[train t] unknown loss 'triplet'"),
    (DEMO + TRAIN_T + "weights = 'train:u'\n", "[train t] weights 'train:u': training starts from"),
    (DEMO + TRAIN_T + TRAIN_T, "two [[train]] are named 't'"),
    (DEMO + "[[train]]\nepochs = 1\n", "every [[train]] needs a name"),
    (DEMO + "[train]\nname = 't'\n", "train must be an array of tables, one [[train]] per entry"),
    (DEMO + EXTRACT + SEARCH + "[report]\nruns = ['nope']\n", "[report] runs: 'nope' is not a run of this config"),
    (DEMO + EXTRACT + SEARCH + "[report]\nruns = []\n", "[report] runs is empty"),
    (DEMO + EXTRACT + SEARCH + "[report]\ndiff = ['s']\n", "[report] diff must be an array of 2 strings"),
    (DEMO + EXTRACT + SEARCH + "[report]\ndiff = ['s', 's']\n", "[report] diff needs two different runs"),
    (DEMO + EXTRACT + SEARCH + "[report]\nthumb = 4\n", "[report] thumb must be an integer in [16, 1024], got 4"),
    (DEMO + EXTRACT + SEARCH + "[report]\nbest = 0\n", "[report] best must be an integer in [1,"),
    (DEMO + EXTRACT + SEARCH + "[report]\nsplit_seed = 1\n", "[report] unknown option 'split_seed'"),
    ("[prepare]\ndb = 'd'\nqueries = 'q'\n" + EXTRACT + SEARCH + "[report]\n",
     "[report] needs ground truth: give [prepare] gt or [score] gt (or demo = true)"),
    (DEMO + "[[report]]\nbest = 1\n", "report must be one table, written [report]; got [[report]]"),
])
def test_bad_train_or_report_table_is_one_line_before_any_stage(refused_config, text, reason):
    refused_config(text, reason)


def test_a_report_folder_in_the_way_is_refused_before_any_stage(cli, tmp_path, monkeypatch):
    (tmp_path / "bad.toml").write_text(DEMO + EXTRACT + SEARCH + "[report]\nout = 'mine'\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my own files\n")
    monkeypatch.chdir(tmp_path)
    result = cli("run", "bad.toml")
    assert result.code == 2 and "[report] out mine: exists and is not a bpcr report folder" in result.err, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "mine"]


def test_the_training_demo_config_reuses_the_demo_and_pairs_each_trained_run_with_its_twin():
    from bpcr.pipeline.config import load_config, validate_config
    from bpcr.pipeline.configtypes import train_name

    configs = ROOT / "configs"
    demo, trained = (load_config(configs / name) for name in ("demo.toml", "demo-train.toml"))
    validate_config(configs / "demo-train.toml", trained)
    # The same work folder, dataset, untrained Lite0 stores and indexes: reused, not rebuilt.
    assert (trained["work"], trained["prepare"], trained["index"]) == (demo["work"], demo["prepare"], demo["index"])
    assert [e for e in trained["extract"] if e["name"] == "lite0"] == [e for e in demo["extract"] if e["name"] == "lite0"]
    assert trained["submissions"] != demo["submissions"] and trained["leaderboard"] != demo["leaderboard"]
    assert trained["score"].get("gt") == demo.get("score", {}).get("gt")
    losses = {t["name"]: t["loss"] for t in trained["train"]}
    # contrastive against robust contrastive, each with and without the softmax (issue: one run per variant)
    assert sorted(losses.values()) == ["contrastive", "contrastive+softmax", "robust-contrastive",
                                       "robust-contrastive+softmax"]
    # the default training is the demo's own, entry for entry, so one training serves both leaderboards
    assert [t for t in trained["train"] if t["name"] == "rc-softmax"] == demo["train"]
    # every training: every training image per epoch at 224 px; the default's stages and learning rate chosen
    # on validation (6 epochs, about 1,050 steps), the variants train what it chose (4 epochs)
    assert all(t["size"] == 224 and "images_per_epoch" not in t for t in trained["train"])
    assert [(t["epochs"], t.get("choose"), t.get("trainable"), t.get("lr")) for t in trained["train"]] == [
        (6, {"trainable": ["head", "last"], "lr": [0.001, 0.003]}, None, None), *[(4, None, "last", 0.003)] * 3]
    searched = {e["features"] for e in trained["search"]}
    for entry in trained["extract"]:
        if train_name(entry.get("weights")) is not None:
            # every trained pooling is searched, and so is the untrained twin's same pooling
            assert {k: v for k, v in entry.items() if k not in ("name", "weights")} == {
                "backbone": "tf_efficientnet_lite0", "size": 224, "poolings": ["gem", "grmac"]}
            assert all(f"{entry['name']}/{p}" in searched and f"lite0/{p}" in searched for p in entry["poolings"])
    assert {train_name(e.get("weights")) for e in trained["extract"]} - {None} == set(losses)


def test_extracting_trained_weights_at_another_size_or_pooling_says_so(ran, tmp_path):
    folder, _ = ran
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config = (copy / "tiny.toml").read_text()
    trained_extract = config[config.index('name = "trained"'):]
    assert 'size = 32' in trained_extract and 'poolings = ["gem", "grmac"]' in trained_extract
    heard: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(copy)
        run_pipeline("tiny.toml", log=heard.append)
    assert not [line for line in heard if "weights train:t" in line]  # as trained: nothing to say
    changed = trained_extract.replace("size = 32", "size = 40", 1).replace('poolings = ["gem", "grmac"]',
                                                                          'poolings = ["grmac"]', 1)
    (copy / "tiny.toml").write_text(config.replace(trained_extract, changed.replace('"trained/gem"', '"trained/grmac"')))
    heard.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(copy)
        run_pipeline("tiny.toml", log=heard.append)
    said = [line for line in heard if "weights train:t" in line]
    assert len(said) == 1 and said[0].startswith("warning: [extract trained]"), heard
    assert "extracts at 40 px, the weights were trained at 32 px" in said[0]
    assert "pools with grmac, the weights were trained with gem" in said[0]
