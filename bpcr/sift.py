"""SIFT kernels for re-ranking: keypoints, ratio-test matching, spatial verification.

Paper 000 (``000_6803ae82f1e53bfd.txt``) §3.1.1: SIFT keypoints and 128-D
descriptors, FLANN nearest neighbours, Lowe's ratio test at 0.8 ("if [the ratio
of closest to second-closest distance] is greater than 0.8, they are
rejected"), score = number of matches with the matched descriptors' distances
breaking ties. §3.4.2 applies it to the top-100 shortlist. Spatial
verification (a RANSAC homography, the "[23]" the paper cites for re-ranking)
is the optional stronger score.

Reproducibility. The same images give the same keypoints, matches and scores
on any x86-64 machine and with any number of workers, for a given OpenCV
build: every kernel here runs inside :func:`reproducible_opencv` (one OpenCV
thread, OpenCV's CPU-specific AVX2/AVX-512 and IPP code paths off), keypoints
are kept in a canonical order, FLANN and RANSAC are seeded on every call, and
match distances are exact (see :func:`knn2`).

Everything here works on plain arrays; :mod:`bpcr.rerank` is the stage.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

# Bumped whenever keypoint extraction changes, so cached descriptors are rebuilt.
# 2: baseline OpenCV code paths on one thread, canonical keypoint order.
SIFT_VERSION = 2

# OpenCV stores SIFT descriptors as integers in 0..255 with L2 norm ~512, so the
# L2 distance of two descriptors is below 512*sqrt(2) ~ 724 (non-negative
# entries). The tie-break fraction in :func:`local_score` divides by this bound.
DISTANCE_BOUND = 1024.0

# FLANN k-d forest of paper 000 §3.1.1 (OpenCV's FLANN_INDEX_KDTREE = 1).
FLANN_INDEX_KDTREE = 1
FLANN_TREES = 5
FLANN_CHECKS = 50

MATCHERS = ("flann", "bf")


@dataclass(frozen=True)
class Keypoints:
    """One image's SIFT features.

    xy: (N, 2) float32 keypoint positions (x, y) in the resized image's pixels.
    desc: (N, 128) uint8 descriptors (OpenCV's SIFT values are integers 0..255).
    """

    xy: np.ndarray
    desc: np.ndarray

    def __len__(self) -> int:
        return int(self.desc.shape[0])


@dataclass(frozen=True)
class Matches:
    """Ratio-test survivors: query keypoint ``query_idx[i]`` matched ``db_idx[i]`` at ``distance[i]`` (L2)."""

    query_idx: np.ndarray  # (M,) int64
    db_idx: np.ndarray  # (M,) int64
    distance: np.ndarray  # (M,) float32

    def __len__(self) -> int:
        return int(self.query_idx.shape[0])


@contextmanager
def reproducible_opencv() -> Iterator[None]:
    """Run OpenCV on one thread with only its baseline instructions; the settings before are restored.

    Both matter to SIFT. Its detection is split over threads, and what it
    returns (the keypoints' order and, under a cap, which ones) can change with
    the thread count. And OpenCV dispatches to AVX2/AVX-512 (and IPP) code on
    the CPUs that have them, whose float rounding differs from the baseline
    path, so the same image gives other keypoints on another CPU.
    ``setUseOptimized(False)`` turns the dispatch off and every x86-64 CPU runs
    the same code (SIFT took ~20% longer on an AVX-512 machine). Switching costs
    microseconds.
    """
    threads, optimized = cv2.getNumThreads(), cv2.useOptimized()
    cv2.setNumThreads(1)
    cv2.setUseOptimized(False)
    try:
        yield
    finally:
        cv2.setUseOptimized(optimized)
        cv2.setNumThreads(threads)


def to_gray(image: Image.Image, max_side: int) -> np.ndarray:
    """An RGB image to (H, W) uint8 grey, shrunk (never enlarged) so the long side is <= ``max_side``.

    INTER_AREA averages the source pixels, so shrinking does not alias fine
    label print into false keypoints.
    """
    rgb = np.asarray(image.convert("RGB"))
    with reproducible_opencv():
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        height, width = gray.shape
        long_side = max(height, width)
        if long_side > max_side:
            scale = max_side / long_side
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray


def extract_sift(gray: np.ndarray, max_keypoints: int) -> Keypoints:
    """SIFT keypoints and descriptors of a (H, W) uint8 image, at most ``max_keypoints``.

    OpenCV keeps every keypoint tied with the weakest retained response, so it can
    return a few more than ``nfeatures``; the cap is enforced here. Keypoints are
    put in a canonical order that never depends on OpenCV's (strongest response
    first, then x, y, size, angle, octave), so the kept set and the rows of
    ``desc`` are the same whatever order detection produced them in.
    """
    with reproducible_opencv():
        sift = cv2.SIFT_create(nfeatures=max_keypoints)
        keypoints, desc = sift.detectAndCompute(gray, None)
    if desc is None or not keypoints:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    fields = np.array([(k.response, k.pt[0], k.pt[1], k.size, k.angle, k.octave) for k in keypoints],
                      dtype=np.float64).reshape(-1, 6)
    # np.lexsort sorts by the last key first.
    keep = np.lexsort((fields[:, 5], fields[:, 4], fields[:, 3], fields[:, 2], fields[:, 1], -fields[:, 0]))
    keep = keep[:max_keypoints]
    xy = fields[keep, 1:3].astype(np.float32).reshape(-1, 2)
    return Keypoints(xy, np.clip(np.rint(desc[keep]), 0, 255).astype(np.uint8))


def ratio_test(nearest: np.ndarray, second: np.ndarray, ratio: float = 0.8) -> np.ndarray:
    """Lowe's ratio test (paper 000 §3.1.1): keep a match unless nearest/second > ``ratio``.

    nearest, second: (M,) L2 distances to the first and second neighbour.
    Returns an (M,) bool mask. The paper rejects ratios *greater* than 0.8, so a
    ratio of exactly 0.8 is kept. When the second neighbour is at distance 0 the
    ratio is undefined (two identical candidates): rejected, as the match is
    ambiguous.
    """
    nearest = np.asarray(nearest, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    return (second > 0) & (nearest <= ratio * second)


def knn2(query_desc: np.ndarray, db_desc: np.ndarray, matcher: str = "flann", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two nearest database descriptors of every query descriptor.

    query_desc: (Nq, 128), db_desc: (Nd, 128) with Nd >= 2.
    Returns indices (Nq, 2) int64 into db_desc and L2 distances (Nq, 2) float32.

    ``flann`` (the default, as in the paper): FLANN randomised k-d forest (5
    trees, 50 checks; paper 000 §3.1.1). Its trees pick split dimensions and
    shuffle rows with OpenCV's per-thread RNG, which is reseeded with ``seed``
    right before every index build on the calling thread: the same pair always
    gives the same neighbours, whatever ran before in the process and on any
    machine with the same OpenCV build (another build may draw other trees).
    ``bf``: exact brute force; its neighbours depend on nothing but the
    descriptors, so it is the matcher to use where results must agree across
    OpenCV builds, and the check of FLANN's approximation.

    Distances are exact with either: descriptors are integers in 0..255, so a
    squared distance is an integer below 128 * 255^2 < 2^24, exact in float32
    whatever order SIMD code sums it in, and the square root is correctly rounded.
    """
    query = np.ascontiguousarray(query_desc, dtype=np.float32)
    db = np.ascontiguousarray(db_desc, dtype=np.float32)
    if matcher == "flann":
        with reproducible_opencv():
            cv2.setRNGSeed(seed)
            index = cv2.flann_Index(db, dict(algorithm=FLANN_INDEX_KDTREE, trees=FLANN_TREES))
            idx, sq = index.knnSearch(query, 2, params=dict(checks=FLANN_CHECKS))
        # FLANN's L2 returns squared distances.
        return idx.astype(np.int64), np.sqrt(np.maximum(sq, 0)).astype(np.float32)
    if matcher == "bf":
        with reproducible_opencv():
            pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(query, db, k=2)
        idx = np.array([[p[0].trainIdx, p[1].trainIdx] for p in pairs], dtype=np.int64).reshape(-1, 2)
        dist = np.array([[p[0].distance, p[1].distance] for p in pairs], dtype=np.float32).reshape(-1, 2)
        return idx, dist
    raise ValueError(f"unknown matcher {matcher!r}; choose from {', '.join(MATCHERS)}")


def match(query: Keypoints, db: Keypoints, ratio: float = 0.8, matcher: str = "flann", seed: int = 0) -> Matches:
    """Ratio-test matches of query keypoints into a database image (paper 000 §3.1.1).

    With fewer than two database descriptors there is no second neighbour, so no
    match can pass the ratio test.
    """
    empty = Matches(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(query) == 0 or len(db) < 2:
        return empty
    idx, dist = knn2(query.desc, db.desc, matcher=matcher, seed=seed)
    # FLANN reports -1 when it found no neighbour within its checks.
    keep = ratio_test(dist[:, 0], dist[:, 1], ratio) & (idx[:, 0] >= 0) & (idx[:, 1] >= 0)
    rows = np.flatnonzero(keep)
    return Matches(rows.astype(np.int64), idx[rows, 0], dist[rows, 0])


def verify_homography(
    query: Keypoints,
    db: Keypoints,
    matches: Matches,
    threshold: float = 5.0,
    seed: int = 0,
    max_iters: int = 2000,
    confidence: float = 0.995,
) -> tuple[np.ndarray, np.ndarray | None]:
    """RANSAC homography from query to database keypoints; the inliers verify the match.

    Returns an (M,) bool inlier mask over ``matches`` and the 3x3 H mapping query
    (x, y) to database (x, y), or None when fewer than 4 matches exist or no
    model was found (then no match is an inlier). ``threshold`` is the
    reprojection error in resized-image pixels. OpenCV's RANSAC draws samples
    from an RNG it seeds itself; ``seed`` also reseeds the global RNG so the
    result never depends on earlier calls.
    """
    none = np.zeros(len(matches), dtype=bool)
    if len(matches) < 4:
        return none, None
    src = query.xy[matches.query_idx].reshape(-1, 1, 2)
    dst = db.xy[matches.db_idx].reshape(-1, 1, 2)
    with reproducible_opencv():
        cv2.setRNGSeed(seed)
        H, mask = cv2.findHomography(src, dst, cv2.RANSAC, threshold, maxIters=max_iters, confidence=confidence)
    if H is None or mask is None:
        return none, None
    return mask.ravel().astype(bool), H


def mean_match_distance(distances: np.ndarray) -> float:
    """The mean of match distances, the same to the last bit whatever their order or the CPU.

    distances: (M,) float32. Summed exactly (``math.fsum``, in float64, over the
    sorted values), where numpy's float32 mean sums in an order that depends on
    the array's length and the CPU's vector width. 0.0 for no match.
    """
    values = np.sort(np.asarray(distances, dtype=np.float64).ravel())
    return math.fsum(values.tolist()) / values.size if values.size else 0.0


def local_score(count: int, mean_distance: float) -> float:
    """One pair's SIFT score: the match count, ties broken by smaller mean distance.

    score = count + (1 - min(d, 1024) / 1024) / 2 for count > 0, else 0, where d
    is the mean L2 distance of the counted matches (paper 000 §3.1.1: "we
    consider the distances between matched descriptors to avoid tie
    problems"). The fraction lies in [0, 0.5], so a higher count always wins
    and equal counts are ordered by distance; remaining ties break by ID where
    the run is written.
    """
    if count <= 0:
        return 0.0
    d = min(max(float(mean_distance), 0.0), DISTANCE_BOUND)
    return float(count) + 0.5 * (1.0 - d / DISTANCE_BOUND)
