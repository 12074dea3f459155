"""SIFT re-ranking: scores and order, the stage end to end (its kernels: tests/test_sift.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import pytest

from bpcr.manifest import write_manifest
from bpcr.rerank import blend_scores, finish_query, rerank, sift_scores
from bpcr.runs import load_run, write_run
from test_sift import photo_of, textured

# ---------------------------------------------------------------- scores and order


def test_ties_break_by_distance_then_id():
    shortlist = ["b", "a", "c", "d", "e"]
    scores = sift_scores([5, 5, 5, 7, 0], [100.0, 100.0, 50.0, 300.0, 0.0])
    ids, written = finish_query(shortlist, scores, tail=["z", "y"])
    # d: most matches; c: 5 matches, smaller distance; a, b: full tie, by ID; e: unmatched; tail in input order
    assert ids == ["d", "c", "a", "b", "e", "z", "y"]
    # scores are written with 8 significant digits
    expected = [7 + 0.5 * (1 - 300 / 1024), 5 + 0.5 * (1 - 50 / 1024), 5 + 0.5 * (1 - 100 / 1024), 5 + 0.5 * (1 - 100 / 1024)]
    assert written[:4] == pytest.approx(expected, rel=1e-7)
    assert written[4:] == [0.5 * (5 - 4) / 5, -1.0, -2.0]


def test_unmatched_images_keep_input_order():
    ids, _ = finish_query(["q", "p", "o", "n"], sift_scores([0, 0, 2, 0], [0, 0, 10.0, 0]), tail=[])
    assert ids == ["o", "q", "p", "n"]


def test_blend_hand_values():
    # visual min-max: [1, 0.5, 0]; local min-max: [0, 1, 0.5]
    assert blend_scores([0.9, 0.8, 0.7], [1.0, 3.0, 2.0], 0.25) == pytest.approx([0.75, 0.625, 0.125])
    assert blend_scores([1.0, 1.0], [2.0, 4.0], 0.5) == pytest.approx([0.0, 0.5])


# ---------------------------------------------------------------- the stage


@pytest.fixture
def dataset(tmp_path):
    """Two queries (photos of products 0 and 1) and five database labels, plus a deep input run."""
    root = tmp_path / "data"
    (root / "db").mkdir(parents=True)
    (root / "q").mkdir()
    db_ids = [f"n{i}" for i in range(5)]
    for i, db_id in enumerate(db_ids):
        cv2.imwrite(str(root / "db" / f"{db_id}.png"), textured(100 + i))
    cv2.imwrite(str(root / "q" / "v0.png"), photo_of(textured(100)))
    cv2.imwrite(str(root / "q" / "v1.png"), photo_of(textured(101)))
    write_manifest(root / "database.csv", db_ids, [root / "db" / f"{d}.png" for d in db_ids], [220] * 5, [180] * 5, [""] * 5)
    write_manifest(root / "queries.csv", ["v0", "v1"], [root / "q" / "v0.png", root / "q" / "v1.png"], [260] * 2, [220] * 2, [""] * 2)
    # the true matches sit last in the shortlist of 4; n4 is below the shortlist
    ranking = {"v0": ["n3", "n2", "n1", "n0", "n4"], "v1": ["n0", "n2", "n3", "n1", "n4"]}
    scores = {q: [0.9, 0.8, 0.7, 0.6, 0.5] for q in ranking}
    write_run(tmp_path / "runs", "deep", ranking, scores, {"run": "deep"})
    return {"root": root, "run": tmp_path / "runs" / "deep.trec", "out": tmp_path / "out", "cache": tmp_path / "cache"}


def _rerank(d, name="sift", **kw):
    kw = {"top": 4, "workers": 1, "cache_dir": d["cache"], **kw}
    return rerank(d["run"], d["root"] / "database.csv", d["root"] / "queries.csv", name, d["out"], **kw).written[".trec"]


def test_matching_image_outranks_non_matching_and_tail_keeps_order(dataset):
    trec = _rerank(dataset)
    run = load_run(trec)
    assert run.ranking["v0"][0] == "n0" and run.ranking["v1"][0] == "n1"
    assert run.ranking["v0"][-1] == "n4" and run.scores["v0"][-1] == -1.0
    assert run.scores["v0"][0] > 10  # many ratio-test matches
    assert run.submission["v0"][0] == "n0"


@pytest.mark.parametrize("scorer", ["inliers", "blend"])
def test_other_scorers_find_the_match(dataset, scorer):
    run = load_run(_rerank(dataset, name=scorer, scorer=scorer, blend_weight=0.9))
    assert run.ranking["v0"][0] == "n0" and run.ranking["v1"][0] == "n1"
    assert run.provenance["params"]["scorer"] == scorer


def test_rows_beyond_top_keep_input_order(dataset):
    run = load_run(_rerank(dataset, top=1))
    assert run.ranking["v0"] == ["n3", "n2", "n1", "n0", "n4"]
    assert run.scores["v0"][1:] == [-1.0, -2.0, -3.0, -4.0]


def test_deterministic_across_runs_and_workers(dataset):
    a = _rerank(dataset, name="a")
    b = _rerank(dataset, name="b", workers=2)
    for suffix in (".csv", ".trec"):
        assert a.with_suffix(suffix).read_text().replace(" a\n", "\n") == b.with_suffix(suffix).read_text().replace(" b\n", "\n")


def test_cache_reuse_and_invalidation(dataset):
    first = json.loads(_rerank(dataset, name="one").with_suffix(".json").read_text())
    assert first["sift_cache"] == {"computed": 4, "reused": 0}  # n4 is in no shortlist
    second = json.loads(_rerank(dataset, name="two").with_suffix(".json").read_text())
    assert second["sift_cache"] == {"computed": 0, "reused": 4}
    capped = json.loads(_rerank(dataset, name="three", max_keypoints=100).with_suffix(".json").read_text())
    assert capped["sift_cache"] == {"computed": 4, "reused": 0}
    path = dataset["root"] / "db" / "n2.png"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = json.loads(_rerank(dataset, name="four").with_suffix(".json").read_text())
    assert touched["sift_cache"] == {"computed": 1, "reused": 3}
    files = list(dataset["cache"].rglob("*"))
    assert all(f.suffix == ".npz" for f in files if f.is_file())


def test_unreadable_query_keeps_input_order_with_a_warning(dataset):
    (dataset["root"] / "q" / "v1.png").write_bytes(b"not an image")
    run = load_run(_rerank(dataset))
    assert run.ranking["v1"] == ["n0", "n2", "n3", "n1", "n4"]
    assert run.ranking["v0"][0] == "n0"
    assert run.provenance["warnings"]["query_unreadable"] == 1
    assert run.provenance["queries"] == {"total": 2, "reranked": 1}


def test_output_names_its_input_and_parameters(dataset):
    run = load_run(_rerank(dataset, ratio=0.7))
    prov = run.provenance
    from bpcr.fileio import sha256_file

    files = {Path(f["path"]).suffix: f["sha256"] for f in prov["input_run"]["files"]}
    assert files[".trec"] == sha256_file(dataset["run"])
    assert prov["input_run"]["name"] == "deep"
    assert prov["params"]["ratio"] == 0.7 and prov["params"]["top"] == 4
    assert prov["params"]["max_keypoints"] == 250 and prov["params"]["matcher"] == "flann"


def test_cli_rerank_and_bad_input(dataset, cli, tmp_path):
    d = dataset
    args = ["rerank", d["run"], "--db-manifest", d["root"] / "database.csv", "--query-manifest", d["root"] / "queries.csv",
            "--top", "4", "--workers", "1", "--cache-dir", d["cache"], "--out", d["out"]]
    ok = cli(*args, "--name", "viacli")
    assert ok.code == 0, ok.err
    assert load_run(d["out"] / "viacli.trec").ranking["v0"][0] == "n0"
    bad = cli(*args, "--name", "x", "--scorer", "nope")
    assert bad.code == 2 and "unknown scorer" in bad.err and len(bad.err.strip().splitlines()) == 1
    same = cli(*args[:-2], "--out", d["run"].parent, "--name", "deep")
    assert same.code == 2 and "overwrite" in same.err
    assert "Example" in cli("rerank", "--help").out


def test_database_image_missing_from_manifest_scores_unmatched(dataset, tmp_path):
    write_run(tmp_path / "runs", "odd", {"v0": ["n9", "n3", "n0"]}, {"v0": [0.9, 0.8, 0.7]}, {"run": "odd"})
    trec = rerank(tmp_path / "runs" / "odd.trec", dataset["root"] / "database.csv", dataset["root"] / "queries.csv",
                  "odd-sift", dataset["out"], top=3, workers=1, cache_dir=dataset["cache"])
    run = load_run(trec.csv)
    assert trec.provenance == run.provenance
    assert run.ranking["v0"][0] == "n0"
    assert run.provenance["warnings"]["db_not_in_manifest"] == 1


def test_cli_defaults_match_the_library():
    import inspect

    from bpcr import rerank as stage
    from bpcr.cli import stages

    params = inspect.signature(stages.rerank).parameters
    assert params["max_keypoints"].default.default == stage.DEFAULT_MAX_KEYPOINTS
    assert params["max_side"].default.default == stage.DEFAULT_MAX_SIDE
    assert params["top"].default.default == stage.DEFAULT_TOP
    assert params["cache_dir"].default.default == stage.DEFAULT_CACHE_DIR
