"""The work SIFT re-ranking spreads over processes (paper 000 §3.1.1, §3.4.2).

:func:`extract_task` describes one database image and caches its descriptors
(:mod:`bpcr.sift_cache`); :func:`match_task` matches one query photo against
its shortlist's cached descriptors, with the ratio test and optionally RANSAC
(:mod:`bpcr.sift`). Workers run with one OpenCV thread and its baseline code
paths (:func:`init_worker`), so results never depend on the worker count or
the processor.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2

from .sift import Keypoints, extract_sift, match, mean_match_distance, to_gray, verify_homography
from .sift_cache import BadEntry, SiftOptions, image_sha256, load_keypoints, save_keypoints


@dataclass(frozen=True)
class MatchOptions:
    ratio: float
    matcher: str
    geometry: bool
    ransac_threshold: float
    seed: int


def init_worker() -> None:
    # For the worker's whole life: one OpenCV thread (the processes already use every
    # core) and the baseline code paths, as bpcr.sift.reproducible_opencv sets them.
    cv2.setNumThreads(1)
    cv2.setUseOptimized(False)


def image_keypoints(path: str, sift: SiftOptions) -> Keypoints:
    from .images import load_rgb

    return extract_sift(to_gray(load_rgb(Path(path)), sift.max_side), sift.max_keypoints)


def extract_task(task: tuple[str, str, SiftOptions]) -> tuple[str, str | None]:
    """Compute and cache one database image; returns (cache file, failure reason or None)."""
    from .images import ImageError

    path, target, sift = task
    try:
        # Hashed before decoding: a change in between makes the entry fail its next check, never pass it.
        digest = image_sha256(Path(path))
        keypoints = image_keypoints(path, sift)
    except ImageError as exc:
        return target, exc.reason
    except OSError as exc:
        return target, f"cannot read: {exc.strerror}"
    save_keypoints(Path(target), keypoints, digest, sift)
    return target, None


def match_task(
    task: tuple[str, str, list[str | None], SiftOptions, MatchOptions],
) -> tuple[str, str | None, list[tuple[int, float]], str | None]:
    """Match one query against its shortlist's cached descriptors.

    Returns (query ID, failure reason or None, [(count, mean distance)] per
    shortlisted image, cache failure or None). Images without descriptors
    (``None`` targets, already warned about) count (0, 0.0). The entries were
    checked before matching began, so one that cannot be read now changed
    during the run: that is reported as ``"FILE: reason"``, never scored as no match.
    """
    from .images import ImageError

    query_id, query_path, targets, sift, options = task
    try:
        query = image_keypoints(query_path, sift)
    except ImageError as exc:
        return query_id, exc.reason, [], None
    out: list[tuple[int, float]] = []
    for target in targets:
        if target is None:
            out.append((0, 0.0))
            continue
        try:
            db, _ = load_keypoints(Path(target), sift)
        except BadEntry as exc:
            return query_id, None, [], f"{target}: {exc}"
        found = match(query, db, ratio=options.ratio, matcher=options.matcher, seed=options.seed)
        distances = found.distance
        if options.geometry:
            inliers, _ = verify_homography(query, db, found, threshold=options.ransac_threshold, seed=options.seed)
            distances = distances[inliers]
        out.append((int(distances.shape[0]), mean_match_distance(distances)))
    return query_id, None, out, None
