"""SIFT kernels (paper 000 §3.1.1): ratio test, matching, RANSAC homography, the local score.

The synthetic label images are shared with the re-ranking stage's tests: tests/helpers/label_images.py.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from bpcr.reranking import sift
from tests.helpers.label_images import KNOWN_H, keypoints_of, photo_of, textured

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


def test_local_score_hand_values():
    assert sift.local_score(3, 256.0) == 3.375
    assert sift.local_score(3, 0.0) == 3.5
    assert sift.local_score(2, 5000.0) == 2.0  # distance clipped to the bound
    assert sift.local_score(0, 10.0) == 0.0


# ---------------------------------------------------------------- reproducibility


@pytest.mark.slow
def test_keypoints_do_not_depend_on_the_callers_opencv_settings():
    """Threads and CPU-specific code paths of the caller change nothing (a CPU without AVX-512 is simulated by
    turning OpenCV's dispatch off); the caller's settings are back afterwards."""
    before = (cv2.getNumThreads(), cv2.useOptimized())
    images = [cv2.cvtColor(photo_of(textured(seed, 500, 400)), cv2.COLOR_BGR2GRAY) for seed in (7, 8, 9)]
    seen = []
    try:
        for threads, optimized in ((1, False), (4, True), (4, False), (2, True)):
            cv2.setNumThreads(threads)
            cv2.setUseOptimized(optimized)
            seen.append([sift.extract_sift(image, 250) for image in images])
            assert (cv2.getNumThreads(), cv2.useOptimized()) == (threads, optimized)
    finally:
        cv2.setUseOptimized(before[1])
        cv2.setNumThreads(before[0])
    for other in seen[1:]:
        for a, b in zip(seen[0], other):
            assert np.array_equal(a.xy, b.xy) and np.array_equal(a.desc, b.desc)


def test_reproducible_opencv_restores_settings_after_an_error():
    before = (cv2.getNumThreads(), cv2.useOptimized())
    with pytest.raises(RuntimeError):
        with sift.reproducible_opencv():
            assert (cv2.getNumThreads(), cv2.useOptimized()) == (1, False)
            raise RuntimeError
    assert (cv2.getNumThreads(), cv2.useOptimized()) == before


def test_mean_match_distance_is_exact_and_order_free():
    assert sift.mean_match_distance(np.array([1.0, 2.0, 3.0, 4.0], np.float32)) == 2.5
    assert sift.mean_match_distance(np.zeros(0, np.float32)) == 0.0
    # float32 sums lose the small terms: 1e8 + 1 + ... ; the exact mean keeps them
    values = np.array([1e8] + [1.0] * 1000, np.float32)
    assert sift.mean_match_distance(values) == (1e8 + 1000) / 1001
    assert sift.mean_match_distance(values[::-1]) == sift.mean_match_distance(values)


# ---------------------------------------------------------------- RootSIFT


def test_root_sift_hand_values():
    desc = np.zeros((4, 128), np.uint8)
    desc[0, :16] = 64  # L1 1024, each bin 1/16 of it: sqrt = 0.25 -> 128
    desc[2, 5] = 200  # one bin holds everything: sqrt = 1 -> 512, clipped to 255 as OpenCV clips
    desc[3, 0], desc[3, 1] = 9, 16  # 9/25, 16/25 -> 0.6, 0.8 -> clipped, but the zeros stay 0
    out = sift.root_sift(desc)
    assert out.dtype == np.uint8 and out.shape == (4, 128)
    assert out[0, :16].tolist() == [128] * 16 and not out[0, 16:].any()
    assert not out[1].any()  # an all-zero descriptor stays zero
    assert out[2, 5] == 255 and out[2].sum() == 255
    assert out[3, :2].tolist() == [255, 255] and not out[3, 2:].any()


def test_root_sift_of_real_descriptors_is_a_unit_vector_at_opencvs_scale():
    kp = keypoints_of(textured(11))
    rooted = sift.root_sift(kp.desc).astype(np.float64)
    norms = np.linalg.norm(rooted, axis=1)
    assert np.all(np.abs(norms - 512) < 8)  # rounding to integers only
    # the squared distance of two RootSIFT vectors is 2 - 2 x the Hellinger kernel of the L1-normalised SIFT
    p = kp.desc[:20].astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    hellinger = np.sqrt(p[:, None, :] * p[None, :, :]).sum(axis=2)
    sq = ((rooted[:20, None, :] - rooted[None, :20, :]) ** 2).sum(axis=2) / 512 ** 2
    assert np.allclose(sq, 2 - 2 * hellinger, atol=0.02)


# ---------------------------------------------------------------- the exact matcher


def _shortlist():
    query = keypoints_of(photo_of(textured(12)))
    dbs = [keypoints_of(textured(seed)) for seed in (12, 13, 14)]
    one = sift.Keypoints(dbs[1].xy[:1], dbs[1].desc[:1])
    none = sift.Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    return query, [dbs[0], one, dbs[1], none, dbs[2]]


@pytest.mark.parametrize("device", [None, "cpu"])  # numpy, and torch on the CPU (the GPU path's code)
def test_exact_knn_equals_opencv_bfmatcher_bit_for_bit(device):
    query, dbs = _shortlist()
    found = sift.knn2_many(query.desc, [db.desc for db in dbs], device=device)
    for db, (idx, dist) in zip(dbs, found):
        if len(db) < 2:
            continue
        reference = cv2.BFMatcher(cv2.NORM_L2).knnMatch(query.desc.astype(np.float32), db.desc.astype(np.float32), k=2)
        ref_dist = np.array([[m.distance, n.distance] for m, n in reference], np.float32)
        ref_idx = np.array([[m.trainIdx, n.trainIdx] for m, n in reference])
        assert dist.dtype == np.float32 and np.array_equal(dist, ref_dist)
        distinct = ref_dist[:, 0] < ref_dist[:, 1]  # where two neighbours tie, either may come first
        assert np.array_equal(idx[distinct, 0], ref_idx[distinct, 0])
    assert found[1][0][:, 1].tolist() == [-1] * len(query) and np.isinf(found[1][1][:, 1]).all()
    assert (found[3][0] == -1).all()


@pytest.mark.slow
def test_match_many_equals_pair_by_pair_whatever_the_blocks(monkeypatch):
    query, dbs = _shortlist()
    whole = sift.match_many(query, dbs, matcher="bf")
    monkeypatch.setattr(sift, "BLOCK_PAIRS", 1)  # one database image per block
    blocked = sift.match_many(query, dbs, matcher="bf")
    torch_cpu = sift.match_many(query, dbs, matcher="bf", device="cpu")
    single = [sift.match(query, db, matcher="bf") for db in dbs]
    for found in (blocked, torch_cpu, single):
        for a, b in zip(whole, found):
            assert np.array_equal(a.query_idx, b.query_idx) and np.array_equal(a.db_idx, b.db_idx)
            assert np.array_equal(a.distance, b.distance)
    assert len(whole[0]) > 20 and len(whole[1]) == 0 and len(whole[3]) == 0


def test_flann_finds_nearly_the_exact_matches():
    query, dbs = _shortlist()
    exact = sift.match_many(query, dbs, matcher="bf")[0]
    approximate = sift.match_many(query, dbs, matcher="flann")[0]
    pairs = lambda m: set(zip(m.query_idx.tolist(), m.db_idx.tolist()))  # noqa: E731
    assert len(pairs(exact) & pairs(approximate)) >= 0.9 * len(pairs(exact))
