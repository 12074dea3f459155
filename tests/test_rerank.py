"""SIFT re-ranking: ratio test, matching, RANSAC, scores and order, the stage end to end."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from bpcr import sift
from bpcr.manifest import write_manifest
from bpcr.rerank import blend_scores, finish_query, rerank, sift_scores
from bpcr.runs import load_run, write_run

# ---------------------------------------------------------------- synthetic images


def textured(seed: int, width: int = 220, height: int = 180) -> np.ndarray:
    """A product-label-like BGR image: shapes, letters and lines that give SIFT corners."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 255, np.uint8)
    for _ in range(18):
        colour = tuple(int(c) for c in rng.integers(0, 230, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, 50)), y + int(rng.integers(8, 50))), colour, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(4, 25)), colour, -1)
    for _ in range(4):
        text = "".join(chr(int(c)) for c in rng.integers(65, 91, 4))
        org = (int(rng.integers(0, width - 60)), int(rng.integers(20, height)))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.5, 1.0)), (0, 0, 0), 2)
    return img


KNOWN_H = np.array([[0.9, 0.08, 12.0], [-0.05, 0.95, 8.0], [0.0002, 0.0001, 1.0]])


def photo_of(img: np.ndarray, H: np.ndarray = KNOWN_H) -> np.ndarray:
    """The label seen under a perspective change, on a grey background."""
    return cv2.warpPerspective(img, H, (img.shape[1] + 40, img.shape[0] + 40), borderValue=(128, 128, 128))


def keypoints_of(img: np.ndarray, cap: int = 500) -> sift.Keypoints:
    return sift.extract_sift(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cap)


# ---------------------------------------------------------------- kernels


def test_ratio_test_on_hand_made_distances():
    nearest = [1.0, 4.0, 9.0, 0.0, 3.0, 0.0]
    second = [2.0, 5.0, 10.0, 0.0, 3.0, 7.0]
    # ratios 0.5, 0.8 (kept: only > 0.8 is rejected), 0.9, undefined, 1.0, 0.0
    assert sift.ratio_test(nearest, second, 0.8).tolist() == [True, True, False, False, False, True]
    assert sift.ratio_test(nearest, second, 0.5).tolist() == [True, False, False, False, False, True]


@pytest.mark.parametrize("matcher", ["flann", "bf"])
def test_match_on_hand_made_descriptors(matcher):
    db = np.zeros((3, 128), np.uint8)
    db[0, 0], db[1, 1], db[2, 2] = 100, 100, 100
    query = np.zeros((2, 128), np.uint8)
    query[0, 0] = 90  # distances 10 to db 0, ~134.5 to db 1 and 2: ratio 0.07, kept
    query[1, 0], query[1, 1] = 50, 50  # equidistant from db 0 and db 1: ratio 1, rejected
    xy = np.zeros((3, 2), np.float32)
    found = sift.match(sift.Keypoints(xy[:2], query), sift.Keypoints(xy, db), ratio=0.8, matcher=matcher)
    assert found.query_idx.tolist() == [0]
    assert found.db_idx.tolist() == [0]
    assert found.distance.tolist() == pytest.approx([10.0])


def test_match_needs_a_second_neighbour():
    one = sift.Keypoints(np.zeros((1, 2), np.float32), np.full((1, 128), 7, np.uint8))
    assert len(sift.match(one, one)) == 0


def test_flann_knn_equals_opencv_flann_based_matcher():
    """Cross-check against the textbook cv2.FlannBasedMatcher with the same RNG seed."""
    query, db = keypoints_of(photo_of(textured(1))), keypoints_of(textured(1))
    idx, dist = sift.knn2(query.desc, db.desc, "flann", seed=3)
    cv2.setRNGSeed(3)
    reference = cv2.FlannBasedMatcher(dict(algorithm=1, trees=5), dict(checks=50)).knnMatch(
        query.desc.astype(np.float32), db.desc.astype(np.float32), k=2)
    assert idx.tolist() == [[m.trainIdx, n.trainIdx] for m, n in reference]
    assert dist == pytest.approx(np.array([[m.distance, n.distance] for m, n in reference]), rel=1e-5)


def test_flann_is_deterministic_whatever_ran_before():
    query, db = keypoints_of(photo_of(textured(2))), keypoints_of(textured(2))
    first = sift.knn2(query.desc, db.desc, "flann", seed=0)
    cv2.setRNGSeed(12345)
    cv2.randu(np.zeros((10, 10), np.float32), 0, 1)  # consume the global RNG
    second = sift.knn2(query.desc, db.desc, "flann", seed=0)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_extract_caps_keypoints_and_stores_integers():
    kp = keypoints_of(textured(3), cap=40)
    assert len(kp) == 40 and kp.desc.dtype == np.uint8 and kp.xy.shape == (40, 2)
    full = keypoints_of(textured(3), cap=5000)
    assert len(full) > 40


def test_to_gray_shrinks_only():
    from PIL import Image

    big = Image.new("RGB", (1000, 400), (10, 20, 30))
    assert sift.to_gray(big, 500).shape == (200, 500)
    small = Image.new("RGB", (120, 80))
    assert sift.to_gray(small, 500).shape == (80, 120)


def test_ransac_recovers_a_known_homography():
    label = textured(4, 300, 240)
    query, db = keypoints_of(label), keypoints_of(photo_of(label))
    found = sift.match(query, db)
    inliers, H = sift.verify_homography(query, db, found)
    assert H is not None
    assert inliers.sum() >= 30 and inliers.mean() > 0.7
    # at the inlier keypoints the estimate agrees with the known H within the RANSAC threshold
    points = query.xy[found.query_idx[inliers]].reshape(-1, 1, 2).astype(np.float64)
    error = np.linalg.norm(cv2.perspectiveTransform(points, H) - cv2.perspectiveTransform(points, KNOWN_H), axis=2)
    assert np.median(error) < 1.0 and error.max() < 5.0
    # a tighter threshold pins the whole label, corners included, to within 2 px
    inliers, H = sift.verify_homography(query, db, found, threshold=2.0)
    corners = np.array([[[0, 0]], [[299, 0]], [[299, 239]], [[0, 239]]], np.float64)
    error = cv2.perspectiveTransform(corners, H) - cv2.perspectiveTransform(corners, KNOWN_H)
    assert np.abs(error).max() < 2.0


def test_ransac_needs_four_matches():
    kp = sift.Keypoints(np.zeros((3, 2), np.float32), np.zeros((3, 128), np.uint8))
    three = sift.Matches(np.arange(3), np.arange(3), np.ones(3, np.float32))
    mask, H = sift.verify_homography(kp, kp, three)
    assert H is None and mask.tolist() == [False, False, False]


# ---------------------------------------------------------------- scores and order


def test_local_score_hand_values():
    assert sift.local_score(3, 256.0) == 3.375
    assert sift.local_score(3, 0.0) == 3.5
    assert sift.local_score(2, 5000.0) == 2.0  # distance clipped to the bound
    assert sift.local_score(0, 10.0) == 0.0


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
    kw = {"top": 4, "workers": 1, "progress": False, "cache_dir": d["cache"], **kw}
    return rerank(d["run"], d["root"] / "database.csv", d["root"] / "queries.csv", name, d["out"], **kw)


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
                  "odd-sift", dataset["out"], top=3, workers=1, progress=False, cache_dir=dataset["cache"])
    run = load_run(trec)
    assert run.ranking["v0"][0] == "n0"
    assert run.provenance["warnings"]["db_not_in_manifest"] == 1


def test_cli_defaults_match_the_library():
    import inspect

    from bpcr import cli, rerank as stage

    params = inspect.signature(cli.rerank).parameters
    assert params["max_keypoints"].default.default == stage.DEFAULT_MAX_KEYPOINTS
    assert params["max_side"].default.default == stage.DEFAULT_MAX_SIDE
    assert params["top"].default.default == stage.DEFAULT_TOP
    assert params["cache_dir"].default.default == stage.DEFAULT_CACHE_DIR
