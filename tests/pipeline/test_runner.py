"""End to end: `bpcr run` on a tiny generated dataset through every stage."""
from __future__ import annotations

import json
import shutil

import pytest

from bpcr.pipeline.runner import run_pipeline
from tests.helpers import DATA

pytestmark = pytest.mark.slow  # module fixtures build a dataset, a network or a pipeline run

CONFIG = DATA / "tiny_pipeline.toml"
RUNS = ["mac", "grmac", "srmac", "fused", "fused-dba", "refined", "fused-aqe", "fused-diffusion", "sift", "ens",
        "ens-tuned"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    shutil.copy(CONFIG, folder / "tiny.toml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        result = run_pipeline("tiny.toml", log=lambda _: None)
    return folder, result


def test_every_stage_writes_its_runs_and_the_leaderboard(first_run):
    folder, result = first_run
    assert sorted(p.stem for p in result.runs) == sorted(RUNS)
    for name in RUNS:
        for suffix in (".csv", ".trec", ".json"):
            assert (folder / "subs" / f"{name}{suffix}").is_file()
    board = (folder / "lb.md").read_text()
    for name in RUNS:
        assert f"| `{name}` |" in board
    assert (folder / "lb.svg").is_file()
    scores = json.loads((folder / "work" / "scores.json").read_text())["runs"]
    assert set(scores) == set(RUNS)
    assert all(0.0 <= s["map7"] <= 1.0 and s["n_queries"] == 6 for s in scores.values())
    # refinement, re-ranking and fusion are compared with their inputs
    assert scores["refined"]["vs_baseline"]["baseline"] == "fused"
    assert scores["fused-diffusion"]["vs_baseline"]["baseline"] == "fused"
    assert list((folder / "work" / "graphs").glob("knn-*.npz"))  # the graph is kept in the work folder
    assert scores["sift"]["vs_baseline"]["baseline"] == "fused"
    stages = {t.stage for t in result.times}
    assert stages == {"prepare", "extract", "index", "search", "dba", "text-index", "refine", "rerank", "ensemble",
                      "score"}


def test_rerun_skips_everything_and_changes_no_byte(first_run):
    folder, _ = first_run
    before = {p.name: p.read_bytes() for p in sorted((folder / "subs").iterdir())}
    board = (folder / "lb.md").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        again = run_pipeline("tiny.toml", log=lambda _: None)
    assert all(t.skipped for t in again.times if t.stage != "score")
    assert {p.name: p.read_bytes() for p in sorted((folder / "subs").iterdir())} == before
    assert (folder / "lb.md").read_bytes() == board


def test_fresh_run_gives_identical_runs(first_run, tmp_path):
    folder, _ = first_run
    shutil.copy(CONFIG, tmp_path / "tiny.toml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        run_pipeline("tiny.toml", log=lambda _: None)
    for name in RUNS:
        for suffix in (".csv", ".trec"):
            assert (tmp_path / "subs" / f"{name}{suffix}").read_bytes() == (folder / "subs" / f"{name}{suffix}").read_bytes(), name
    assert (tmp_path / "lb.md").read_bytes() == (folder / "lb.md").read_bytes()


def test_changed_option_reruns_only_downstream(first_run, tmp_path):
    folder, _ = first_run
    work = tmp_path / "copy"
    shutil.copytree(folder, work)
    config = (work / "tiny.toml").read_text().replace('scorer = "inliers"', 'scorer = "matches"')
    (work / "tiny.toml").write_text(config)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        result = run_pipeline("tiny.toml", log=lambda _: None)
    ran = {t.name for t in result.times if not t.skipped and t.stage != "score"}
    assert ran == {"sift", "ens", "ens-tuned"}


def test_a_changed_code_default_reruns_what_it_changes(first_run, tmp_path):
    """A kit whose SIFT descriptors (or any default a config leaves out) changed must not keep old outputs."""
    import bpcr.reranking.sift

    folder, _ = first_run
    work = tmp_path / "copy"
    shutil.copytree(folder, work)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setattr(bpcr.reranking.sift, "SIFT_VERSION", bpcr.reranking.sift.SIFT_VERSION + 100)
        result = run_pipeline("tiny.toml", log=lambda _: None)
    ran = {t.name for t in result.times if not t.skipped and t.stage != "score"}
    assert ran == {"sift", "ens", "ens-tuned"}


def test_stage_keys_cover_each_stage_s_defaults():
    from bpcr.pipeline.stages import code_defaults
    from bpcr.postretrieval.refine import METHODS

    rerank = code_defaults("rerank")
    assert {"max_side", "max_keypoints", "matcher", "ratio", "sift_version"} <= set(rerank)
    refine = code_defaults("refine")
    assert refine["diffusion"] == {k: o.default for k, o in METHODS["diffusion"].options.items()}
    assert code_defaults("dba") == {"n": 1, "alpha": 0.0}
    assert {"size", "resize"} <= set(code_defaults("extract")) and "epochs" in code_defaults("train")
    assert code_defaults("extract")["layout"] == "channels_last"


DEMO = "[prepare]\ndemo = true\nn_products = 2\nn_distractors = 3\nn_queries = 2\n"
EXTRACT = "[[extract]]\nname = 'a'\nbackbone = 'tf_efficientnet_lite0'\npoolings = ['mac']\n"
SEARCH = "[[search]]\nname = 's'\nfeatures = 'a/mac'\n"


@pytest.mark.parametrize("text,reason", [
    ("[prepare]\ndemo = true\n[[search]]\nname = 'x'\nfeatures = 'nope/mac'\n", "must be '<extract name>/<pooling>'"),
    ("bogus = 1\n", "unknown top-level key 'bogus'"),
    (DEMO + EXTRACT + "sizes = 3\n", "[extract a] unknown option 'sizes'"),
    (DEMO + EXTRACT + "jpeg_draft = 'yes'\n", "[extract a] jpeg_draft must be true or false, got 'yes'"),
    ("[prepare\n", "invalid TOML"),
    # each would be found only in a late stage (or never): refused before the demo is generated
    ("work = 5\n" + DEMO, "work must be a string"),
    (DEMO + EXTRACT + "size = '96'\n", "[extract a] size must be an integer, got '96' (a string)"),
    (DEMO + EXTRACT.replace("'a'", "'../../escape'"), "[[extract]] name: ID '../../escape' looks like a path"),
    (DEMO + EXTRACT + "[[search]]\nname = 's'\nfeatures = 5\n", "[search s] features must be a string or an array"),
    (DEMO + EXTRACT + SEARCH + "[score]\nbogus = 1\n", "[score] unknown option 'bogus'"),
    (DEMO + EXTRACT + SEARCH + "[score]\nn_resamples = 0\n", "[score] n_resamples: --resamples must be"),
    (DEMO + EXTRACT + "[search]\nname = 's'\nfeatures = 'a/mac'\n", "one [[search]] per entry"),
    # the report's folder is swapped whole: never the work folder, the runs' folder or one above them
    (DEMO + EXTRACT + SEARCH + "[report]\nout = 'work'\n", "[report] out 'work' is the work folder"),
    (DEMO + EXTRACT + SEARCH + "[report]\nout = '.'\n", "[report] out '.' is above the work folder"),
    ("submissions = 'runs'\n" + DEMO + EXTRACT + SEARCH + "[report]\nout = 'runs'\n",
     "[report] out 'runs' is the submissions folder"),
])
def test_bad_config_is_one_line_before_any_stage(refused_config, text, reason):
    refused_config(text, reason)


def test_a_dataset_without_descriptions_or_ground_truth(first_run, tmp_path, monkeypatch):
    folder, _ = first_run
    (tmp_path / "own.toml").write_text(f"work = 'w'\n[prepare]\ndb = '{folder / 'work' / 'database'}'\n"
                                       f"queries = '{folder / 'work' / 'queries'}'\n")
    monkeypatch.chdir(tmp_path)
    result = run_pipeline("own.toml", log=lambda _: None)
    assert (tmp_path / "w" / "prepared" / "database.csv").is_file() and result.runs == []


@pytest.mark.slow
def test_two_configs_sharing_a_work_folder_never_vouch_for_each_others_runs(tmp_path, tiny_demo_config):
    """configs/demo.toml and demo-train.toml share work/demo and name runs alike, each in its own submissions
    folder. B runs; A changes what both read (the extraction) and runs; B runs again: its own run is made anew,
    not left as B's first run because A's stamp of that stage matches the new key."""
    from tests.helpers.tiny_pipeline import run_tiny, stages_run

    a = tiny_demo_config(4, one_worker=True)
    b = a.replace('submissions = "subs"', 'submissions = "subs-b"').replace('leaderboard = "lb.md"',
                                                                           'leaderboard = "lb-b.md"')
    (tmp_path / "tiny.toml").write_text(b)
    run_tiny(tmp_path)
    first_b = (tmp_path / "subs-b" / "mac.trec").read_bytes()
    (tmp_path / "tiny.toml").write_text(a.replace("size = 64", "size = 72"))
    run_tiny(tmp_path)
    (tmp_path / "tiny.toml").write_text(b.replace("size = 64", "size = 72"))
    again = run_tiny(tmp_path)
    assert "search:mac" in stages_run(again) and "extract:lite0-database" not in stages_run(again)
    assert (tmp_path / "subs-b" / "mac.trec").read_bytes() == (tmp_path / "subs" / "mac.trec").read_bytes()
    assert (tmp_path / "subs-b" / "mac.trec").read_bytes() != first_b
