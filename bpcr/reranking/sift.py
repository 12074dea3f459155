"""SIFT kernels for re-ranking: keypoints, ratio-test matching, spatial verification.

Paper 000 (``000_6803ae82f1e53bfd.txt``) §3.1.1: SIFT keypoints and 128-D
descriptors, FLANN nearest neighbours, Lowe's ratio test at 0.8 ("if [the ratio
of closest to second-closest distance] is greater than 0.8, they are
rejected"), score = number of matches with the matched descriptors' distances
breaking ties. §3.4.2 applies it to the top-100 shortlist. Spatial
verification (a RANSAC homography, the "[23]" the paper cites for re-ranking)
is the optional stronger score. RootSIFT (Arandjelović & Zisserman, "Three
things everyone should know to improve object retrieval", CVPR 2012) is an
option: each descriptor L1-normalised and square-rooted, so that Euclidean
matching compares descriptors by the Hellinger kernel.

Matching. ``bf`` finds the exact two nearest neighbours of a query's
descriptors in every image of its shortlist at once, with one matrix product
(:func:`knn2_many`, numpy, or torch on any device); ``flann`` builds the
paper's k-d forest for every pair. Descriptors are integers, so the exact
matcher's distances are the same to the bit on every machine and device.

Reproducibility. The same images give the same keypoints, matches and scores
on any x86-64 machine and with any number of workers, for a given OpenCV
build: every kernel here runs inside :func:`reproducible_opencv` (one OpenCV
thread, OpenCV's CPU-specific AVX2/AVX-512 and IPP code paths off), keypoints
are kept in a canonical order, FLANN and RANSAC are seeded on every call, and
match distances are exact (see :func:`knn2`).

Everything here works on plain arrays; :mod:`bpcr.reranking.rerank` is the stage.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image

from bpcr.reranking.options import MATCHERS  # the matchers' names, declared with the options

# Bumped whenever keypoint extraction changes, so cached descriptors are rebuilt.
# 2: baseline OpenCV code paths on one thread, canonical keypoint order.
# 3: JPEG draft decoding (bpcr.reranking.sift_tasks.load_gray), named in the cache key and stamp.
SIFT_VERSION = 3

# OpenCV stores SIFT descriptors as integers in 0..255 with L2 norm ~512, so the
# L2 distance of two descriptors is below 512*sqrt(2) ~ 724 (non-negative
# entries). The tie-break fraction in :func:`local_score` divides by this bound.
DISTANCE_BOUND = 1024.0

# FLANN k-d forest of paper 000 §3.1.1 (OpenCV's FLANN_INDEX_KDTREE = 1).
FLANN_INDEX_KDTREE = 1
FLANN_TREES = 5
FLANN_CHECKS = 50

# RootSIFT descriptors are stored like OpenCV's: unit vectors scaled by 512 and rounded to integers.
ROOT_SIFT_SCALE = 512.0
# The exact matcher scores at most this many (query, database) descriptor pairs at once.
BLOCK_PAIRS = 1 << 23


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


def shrunk_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the long side is ``max_side``; unchanged when it is already no longer."""
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_gray(image: Image.Image, max_side: int, source_size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB image to (H, W) uint8 grey, shrunk (never enlarged) so the long side is <= ``max_side``.

    INTER_AREA averages the source pixels, so shrinking does not alias fine
    label print into false keypoints. ``source_size``: the (width, height) the
    image had before a JPEG decoder already shrank it (draft mode); the output
    then has the size the full image would have given.
    """
    rgb = np.asarray(image.convert("RGB"))
    with reproducible_opencv():
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        height, width = gray.shape
        size = shrunk_size(*(source_size or (width, height)), max_side)
        if size != (width, height):
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
    ``bf``: exact brute force (:func:`knn2_many`, the same neighbours and
    distances as OpenCV's ``BFMatcher``); its neighbours depend on nothing but
    the descriptors, so it is the matcher to use where results must agree
    across OpenCV builds, and the check of FLANN's approximation.

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
        (idx, dist), = knn2_many(query_desc, [db_desc])
        return idx, dist
    raise ValueError(f"unknown matcher {matcher!r}; choose from {', '.join(MATCHERS)}")


def root_sift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012): each descriptor L1-normalised, then square-rooted.

    desc: (N, 128) non-negative integers (OpenCV's uint8 SIFT). Returns (N, 128)
    uint8 ``min(255, rint(512 * sqrt(d / sum(d))))``: unit L2 vectors scaled
    and rounded as OpenCV stores SIFT, so every distance stays an exact integer
    computation and :data:`DISTANCE_BOUND` still holds. A component only
    exceeds 255 when a quarter of the descriptor's mass sits in one bin
    (degenerate patches); it is clipped there as OpenCV clips. An all-zero
    descriptor stays zero. Computed in float64, whose division and square root
    are correctly rounded, so every machine gives the same integers.
    """
    d = np.asarray(desc, dtype=np.float64)
    total = d.sum(axis=1, keepdims=True)
    unit = np.sqrt(np.divide(d, total, out=np.zeros_like(d), where=total > 0))
    return np.clip(np.rint(ROOT_SIFT_SCALE * unit), 0, 255).astype(np.uint8)


def knn2_many(query_desc: np.ndarray, db_descs: Sequence[np.ndarray],
              device: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact two nearest neighbours of every query descriptor in each of several database images at once.

    query_desc: (Nq, 128), db_descs: B arrays (Ni, 128), integers in 0..255.
    Returns, per database image, indices (Nq, 2) int64 into it and L2 distances
    (Nq, 2) float32, nearest first. An image with one descriptor reports
    index -1 and distance inf as the second neighbour; one with none, both.

    Squared distances come from one product per block of images,
    ``|q|^2 + |d|^2 - 2 q.d``: with integer entries below 256 every term and
    every partial sum is an integer below 2^24, exact in float32 whatever
    order a BLAS or a GPU sums in, so the distances (square roots, correctly
    rounded) equal OpenCV ``BFMatcher``'s on any machine and device. Equal
    distances go to the lower index. ``device``: None computes with numpy;
    a torch device name ("cpu", "cuda", "cuda:1", ...) with torch there, at
    full float32 precision (no TF32).
    """
    query = np.ascontiguousarray(query_desc, dtype=np.float32).reshape(-1, 128)
    sizes = [int(np.shape(d)[0]) for d in db_descs]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    width = max([2, *sizes])
    per_block = max(1, BLOCK_PAIRS // max(1, query.shape[0] * width))
    kernel = _top2_numpy if device is None else _top2_torch(device)
    for start in range(0, len(db_descs), per_block):
        chunk = db_descs[start:start + per_block]
        stacked = np.concatenate([np.asarray(d, dtype=np.float32).reshape(-1, 128) for d in chunk])
        # Column of each stacked row in the (image, rank) grid padded to ``width`` per image.
        columns = np.concatenate([i * width + np.arange(len(d)) for i, d in enumerate(chunk)]).astype(np.int64)
        idx, sq = kernel(query, stacked, columns, len(chunk), width)  # (B, Nq, 2) each
        dist = np.sqrt(sq, dtype=np.float32)
        out.extend((idx[b], dist[b]) for b in range(len(chunk)))
    return out


def _top2_numpy(query: np.ndarray, stacked: np.ndarray, columns: np.ndarray, images: int,
                width: int) -> tuple[np.ndarray, np.ndarray]:
    # One product for the block, then two argmins per image over its columns (a loop beats a padded grid here).
    sq = (query * query).sum(axis=1)[:, None] + (stacked * stacked).sum(axis=1)[None, :]
    sq -= 2.0 * (query @ stacked.T)
    rows = np.arange(query.shape[0])
    idx = np.full((images, query.shape[0], 2), -1, dtype=np.int64)
    out = np.full((images, query.shape[0], 2), np.inf, dtype=np.float32)
    bounds = np.searchsorted(columns // width, np.arange(images + 1))
    for image in range(images):
        block = sq[:, bounds[image]:bounds[image + 1]]
        for k in range(min(2, block.shape[1])):
            nearest = block.argmin(axis=1)
            idx[image, :, k] = nearest
            out[image, :, k] = block[rows, nearest]
            block[rows, nearest] = np.inf
    return idx, out


def _top2_torch(device: str):
    import torch

    dev = torch.device(device)

    def kernel(query: np.ndarray, stacked: np.ndarray, columns: np.ndarray, images: int,
               width: int) -> tuple[np.ndarray, np.ndarray]:
        saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # TF32 would round the products
        try:
            q = torch.from_numpy(query).to(dev)
            d = torch.from_numpy(stacked).to(dev)
            sq = (q * q).sum(dim=1)[:, None] + (d * d).sum(dim=1)[None, :]
            sq = sq - 2.0 * (q @ d.T)
        finally:
            torch.set_float32_matmul_precision(saved)
        grid = torch.full((q.shape[0], images * width), float("inf"), dtype=torch.float32, device=dev)
        grid[:, torch.from_numpy(columns).to(dev)] = sq
        grid = grid.reshape(q.shape[0], images, width)
        # topk's order among equal values is not the lowest index first; two argmins are.
        first = grid.argmin(dim=2, keepdim=True)
        d1 = grid.gather(2, first)
        grid.scatter_(2, first, float("inf"))
        second = grid.argmin(dim=2, keepdim=True)
        d2 = grid.gather(2, second)
        idx = torch.cat([first, second], dim=2).permute(1, 0, 2)
        sq2 = torch.cat([d1, d2], dim=2).permute(1, 0, 2)
        idx = torch.where(torch.isinf(sq2), torch.full_like(idx, -1), idx)
        return idx.cpu().numpy().astype(np.int64), np.ascontiguousarray(sq2.cpu().numpy())

    return kernel


def match_many(query: Keypoints, dbs: Sequence[Keypoints], ratio: float = 0.8, matcher: str = "flann",
               seed: int = 0, device: str | None = None) -> list[Matches]:
    """:func:`match` of one query against every image of a shortlist, the same matches pair by pair.

    ``bf`` scores the whole shortlist in blocks with :func:`knn2_many` (on
    ``device``); ``flann`` builds its forest for each pair.
    """
    if matcher != "bf" or len(query) == 0:
        return [match(query, db, ratio=ratio, matcher=matcher, seed=seed) for db in dbs]
    found = knn2_many(query.desc, [db.desc for db in dbs], device=device)
    return [_ratio_matches(idx, dist, ratio) if len(db) >= 2 else _no_matches()
            for db, (idx, dist) in zip(dbs, found)]


def _no_matches() -> Matches:
    return Matches(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def _ratio_matches(idx: np.ndarray, dist: np.ndarray, ratio: float) -> Matches:
    # FLANN reports -1 when it found no neighbour within its checks.
    keep = ratio_test(dist[:, 0], dist[:, 1], ratio) & (idx[:, 0] >= 0) & (idx[:, 1] >= 0)
    rows = np.flatnonzero(keep)
    return Matches(rows.astype(np.int64), idx[rows, 0], dist[rows, 0])


def match(query: Keypoints, db: Keypoints, ratio: float = 0.8, matcher: str = "flann", seed: int = 0) -> Matches:
    """Ratio-test matches of query keypoints into a database image (paper 000 §3.1.1).

    With fewer than two database descriptors there is no second neighbour, so no
    match can pass the ratio test.
    """
    if len(query) == 0 or len(db) < 2:
        return _no_matches()
    idx, dist = knn2(query.desc, db.desc, matcher=matcher, seed=seed)
    return _ratio_matches(idx, dist, ratio)


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
