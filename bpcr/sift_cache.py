"""The cache of database SIFT descriptors used by re-ranking.

One ``.npz`` file per database image and SIFT setting (``xy`` float32 (K, 2),
``desc`` uint8 (K, 128); read with ``allow_pickle=False``), under a key that
covers the image's path, size and mtime, the SIFT options, the kit's SIFT
version and OpenCV's version, so a changed image or setting is never served
stale descriptors.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .fileio import atomic_path
from .sift import SIFT_VERSION, Keypoints


@dataclass(frozen=True)
class SiftOptions:
    """Everything that changes a database image's cached descriptors."""

    max_side: int
    max_keypoints: int


def cache_file(cache_dir: Path, image_path: Path, sift: SiftOptions) -> Path:
    """Where ``image_path``'s descriptors live; the key covers path, size, mtime and SIFT options.

    Raises OSError when the image cannot be stat'ed.
    """
    st = image_path.stat()
    key = {
        "path": str(image_path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "max_side": sift.max_side,
        "max_keypoints": sift.max_keypoints,
        "sift_version": SIFT_VERSION,
        "opencv": cv2.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.npz"


def save_keypoints(path: Path, keypoints: Keypoints) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz" to the temp name
            np.savez(handle, xy=keypoints.xy, desc=keypoints.desc)


def load_keypoints(path: Path) -> Keypoints:
    with np.load(path, allow_pickle=False) as data:
        xy = np.asarray(data["xy"], dtype=np.float32).reshape(-1, 2)
        desc = np.asarray(data["desc"], dtype=np.uint8).reshape(-1, 128)
    if xy.shape[0] != desc.shape[0]:
        raise ValueError("keypoint and descriptor counts differ")
    return Keypoints(xy, desc)
