"""The cache of SIFT descriptors used by re-ranking, for database and query images alike.

One ``.npz`` file (an entry) per image and SIFT setting, written
atomically and read with ``allow_pickle=False``, holding:

- ``xy`` float32 (K, 2) and ``desc`` uint8 (K, 128), K <= the keypoint cap;
- ``image_sha256``: the sha256 of the image bytes the descriptors came from;
- ``sift``: int64 ``[SIFT version, max_side, max_keypoints, jpeg_draft]``.

Entries live under a key that covers the image's path, size and mtime, the
SIFT options, the kit's SIFT version and OpenCV's version, so a changed image
or setting is never looked up. An entry found under its key is still checked
before it is used (:func:`check_entry`): a file overwritten, truncated or
copied from elsewhere would otherwise pass for an image without keypoints,
and every match against it would silently count zero.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bpcr.io.fileio import atomic_path, sha256_file
from bpcr.reranking.options import RerankOptions
from bpcr.reranking.sift import SIFT_VERSION, Keypoints

ARRAYS = ("xy", "desc", "image_sha256", "sift")
# What reading a damaged .npz can raise: a torn or foreign zip, a bad member, a pickle refused.
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class SiftOptions:
    """Everything that changes an image's cached descriptors: the options of :class:`RerankOptions` that key
    the cache (their defaults and meaning are declared there; :meth:`of` picks them from a stage's options)."""

    max_side: int = RerankOptions.max_side
    max_keypoints: int = RerankOptions.max_keypoints
    jpeg_draft: bool = RerankOptions.jpeg_draft  # decoded near max_side (bpcr.reranking.sift_tasks.load_gray)

    @classmethod
    def of(cls, options: RerankOptions) -> SiftOptions:
        return cls(options.max_side, options.max_keypoints, options.jpeg_draft)

    def stamp(self) -> np.ndarray:
        """The ``sift`` array an entry made with these options holds."""
        return np.array([SIFT_VERSION, self.max_side, self.max_keypoints, int(self.jpeg_draft)], dtype=np.int64)


class BadEntry(Exception):
    """A cache entry that cannot be used; ``str()`` says why."""


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
        "jpeg_draft": sift.jpeg_draft,
        "sift_version": SIFT_VERSION,
        "opencv": cv2.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.npz"


def image_sha256(image_path: Path) -> str:
    """The hash an entry records of its image's bytes. Raises OSError when unreadable."""
    return sha256_file(image_path)


def save_keypoints(path: Path, keypoints: Keypoints, image_hash: str, sift: SiftOptions) -> None:
    """Write one entry: ``keypoints`` of the image whose bytes hash to ``image_hash``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz" to the temp name
            np.savez(handle, xy=np.ascontiguousarray(keypoints.xy, dtype=np.float32),
                     desc=np.ascontiguousarray(keypoints.desc, dtype=np.uint8),
                     image_sha256=np.array(image_hash), sift=sift.stamp())


def load_keypoints(path: Path, sift: SiftOptions) -> tuple[Keypoints, str]:
    """An entry's keypoints and the image hash it records; BadEntry unless it is exactly what
    :func:`save_keypoints` writes for ``sift``."""
    # Each member's size is bounded before it is read, so a hostile header cannot claim gigabytes.
    limit = 4096 + sift.max_keypoints * 128
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise BadEntry("not an .npz archive")
            if sorted(data.files) != sorted(ARRAYS):
                raise BadEntry(f"holds arrays {', '.join(sorted(data.files)) or 'none'}, "
                               f"expected {', '.join(sorted(ARRAYS))}")
            for name in ARRAYS:
                if data.zip.getinfo(f"{name}.npy").file_size > limit:
                    raise BadEntry(f"array {name} is larger than {sift.max_keypoints} keypoints allow")
            xy, desc, stamp, digest = data["xy"], data["desc"], data["sift"], data["image_sha256"]
    except _READ_ERRORS as exc:
        raise BadEntry(f"unreadable ({type(exc).__name__}: {exc})") from None
    if xy.dtype != np.float32 or xy.ndim != 2 or xy.shape[1] != 2:
        raise BadEntry(f"xy is {xy.dtype} {xy.shape}, expected float32 (K, 2)")
    if desc.dtype != np.uint8 or desc.shape != (xy.shape[0], 128):
        raise BadEntry(f"desc is {desc.dtype} {desc.shape}, expected uint8 ({xy.shape[0]}, 128)")
    if xy.shape[0] > sift.max_keypoints:
        raise BadEntry(f"{xy.shape[0]} keypoints, more than the cap of {sift.max_keypoints}")
    if not np.all(np.isfinite(xy)):
        raise BadEntry("keypoint positions are not finite")
    if stamp.dtype != np.int64 or not np.array_equal(stamp, sift.stamp()):
        raise BadEntry(f"made with SIFT settings {stamp.tolist()}, expected {sift.stamp().tolist()}")
    if digest.dtype.kind != "U" or digest.shape != () or len(str(digest)) != 64:
        raise BadEntry("no image hash")
    return Keypoints(xy, desc), str(digest)


def read_entry(path: Path, image_path: Path, sift: SiftOptions) -> Keypoints:
    """The keypoints the entry at ``path`` holds for ``image_path``; BadEntry (why) when it cannot serve it.

    Reads the entry in full and hashes the image's bytes: the descriptors must
    have come from exactly this image, with these options. Raises OSError when
    the image cannot be read.
    """
    keypoints, recorded = load_keypoints(path, sift)
    if recorded != image_sha256(image_path):
        raise BadEntry("made from other image bytes than the image's now")
    return keypoints


def check_entry(path: Path, image_path: Path, sift: SiftOptions) -> str | None:
    """Why the entry at ``path`` cannot serve ``image_path`` (None when it can); see :func:`read_entry`."""
    try:
        read_entry(path, image_path, sift)
    except BadEntry as exc:
        return str(exc)
    return None
