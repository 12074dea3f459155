"""The work SIFT re-ranking spreads over processes (paper 000 §3.1.1, §3.4.2).

:func:`extract_task` describes one image (database or query) and caches its
descriptors (:mod:`bpcr.reranking.sift_cache`); the stage gathers every descriptor a run
needs into one :class:`Pack` (two flat files), and :func:`match_task` matches
one query against its shortlist from the pack, with the ratio test and
optionally RANSAC (:mod:`bpcr.reranking.sift`). Workers run with one OpenCV thread and
its baseline code paths, and one BLAS thread (:func:`init_worker`), so results
never depend on the worker count or the processor.

Decoding (:func:`load_gray`) asks the JPEG decoder for the largest power-of-two
reduction (1/2, 1/4, 1/8, in the DCT domain) that still leaves the long side
at least twice ``max_side`` ("draft" mode), then shrinks with INTER_AREA to the
size a full decode would give: a 12 MP phone photo is decoded at 1000 x 750
instead of 4000 x 3000. Images within four times ``max_side`` decode exactly
as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bpcr.dataset.images import DRAFT_MARGIN
from bpcr.memory import keep_freed_memory
from bpcr.reranking.sift import Keypoints, extract_sift, match_many, mean_match_distance, root_sift, to_gray, verify_homography
from bpcr.reranking.sift_cache import SiftOptions, image_sha256, save_keypoints


@dataclass(frozen=True)
class MatchOptions:
    ratio: float
    matcher: str
    geometry: bool
    ransac_threshold: float
    seed: int
    device: str | None = None  # the exact matcher's torch device; None: numpy


def init_worker() -> None:
    # For the worker's whole life: one OpenCV thread (the processes already use every
    # core) and the baseline code paths, as bpcr.reranking.sift.reproducible_opencv sets them;
    # one BLAS thread for the exact matcher's products, for the same reason.
    cv2.setNumThreads(1)
    cv2.setUseOptimized(False)
    keep_freed_memory()  # SIFT's pyramid is allocated and freed for every image
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then BLAS keeps its own thread count; results are exact either way
        return
    threadpool_limits(1)


# ---------------------------------------------------------------- decoding and description


def load_gray(path: Path, sift: SiftOptions) -> np.ndarray:
    """The (H, W) uint8 grey image SIFT describes: :func:`bpcr.dataset.images.load_rgb`'s checks and
    upright RGB, shrunk by :func:`bpcr.reranking.sift.to_gray`; JPEGs decoded in draft mode (module docstring)
    when ``sift.jpeg_draft``. Raises :class:`bpcr.dataset.images.ImageError`."""
    from bpcr.dataset import images

    if not sift.jpeg_draft:
        return to_gray(images.load_rgb(Path(path)), sift.max_side)
    image, source = images.load_rgb_draft(Path(path), DRAFT_MARGIN * sift.max_side, images.MAX_PIXELS)
    return to_gray(image, sift.max_side, source_size=source)


def image_keypoints(path: str, sift: SiftOptions) -> Keypoints:
    return extract_sift(load_gray(Path(path), sift), sift.max_keypoints)


def extract_task(task: tuple[str, str, SiftOptions]) -> tuple[str, str | None, Keypoints | None]:
    """Compute and cache one image; returns (cache file, failure reason or None, keypoints or None)."""
    from bpcr.dataset.images import ImageError

    path, target, sift = task
    try:
        # Hashed before decoding: a change in between makes the entry fail its next check, never pass it.
        digest = image_sha256(Path(path))
        keypoints = image_keypoints(path, sift)
    except ImageError as exc:
        return target, exc.reason, None
    except OSError as exc:
        return target, f"cannot read: {exc.strerror}", None
    save_keypoints(Path(target), keypoints, digest, sift)
    return target, None, keypoints


# ---------------------------------------------------------------- the run's pack of descriptors


@dataclass(frozen=True)
class Pack:
    """Every descriptor one run matches, as two flat files the workers map: ``desc`` (rows, 128)
    uint8 and ``xy`` (rows, 2) float32. An image is a span ``(first row, rows)``."""

    desc: str
    xy: str
    rows: int

    def keypoints(self, spans: list[tuple[int, int] | None]) -> list[Keypoints | None]:
        """The keypoints of each span (None stays None)."""
        if self.rows == 0:
            desc = np.zeros((0, 128), np.uint8)
            xy = np.zeros((0, 2), np.float32)
        else:
            desc = np.memmap(self.desc, dtype=np.uint8, mode="r", shape=(self.rows, 128))
            xy = np.memmap(self.xy, dtype=np.float32, mode="r", shape=(self.rows, 2))
        return [None if span is None else
                Keypoints(np.array(xy[span[0]:span[0] + span[1]]), np.array(desc[span[0]:span[0] + span[1]]))
                for span in spans]


class PackWriter:
    """Appends keypoints to a :class:`Pack` in ``folder``; RootSIFT is applied here, once per image."""

    def __init__(self, folder: Path, use_root_sift: bool) -> None:
        self._paths = (folder / "desc.u8", folder / "xy.f32")
        self._files = [open(p, "wb") for p in self._paths]
        self._root_sift = use_root_sift
        self.rows = 0

    def add(self, keypoints: Keypoints) -> tuple[int, int]:
        desc = root_sift(keypoints.desc) if self._root_sift else keypoints.desc
        self._files[0].write(np.ascontiguousarray(desc, dtype=np.uint8).tobytes())
        self._files[1].write(np.ascontiguousarray(keypoints.xy, dtype=np.float32).tobytes())
        span = (self.rows, len(keypoints))
        self.rows += len(keypoints)
        return span

    def close(self) -> Pack:
        for handle in self._files:
            handle.close()
        return Pack(str(self._paths[0]), str(self._paths[1]), self.rows)


def match_task(
    task: tuple[str, tuple[int, int], list[tuple[int, int] | None], Pack, MatchOptions],
) -> tuple[str, list[tuple[int, float]]]:
    """Match one query against its shortlist: returns (query ID, [(count, mean distance)] per
    shortlisted image). Images without descriptors (``None`` spans, already warned about) count (0, 0.0)."""
    query_id, query_span, spans, pack, options = task
    query, *shortlist = pack.keypoints([query_span, *spans])
    present = [kp for kp in shortlist if kp is not None]
    found = iter(match_many(query, present, ratio=options.ratio, matcher=options.matcher, seed=options.seed,
                            device=options.device))
    out: list[tuple[int, float]] = []
    for db in shortlist:
        if db is None:
            out.append((0, 0.0))
            continue
        matches = next(found)
        distances = matches.distance
        if options.geometry:
            inliers, _ = verify_homography(query, db, matches, threshold=options.ransac_threshold, seed=options.seed)
            distances = distances[inliers]
        out.append((int(distances.shape[0]), mean_match_distance(distances)))
    return query_id, out
