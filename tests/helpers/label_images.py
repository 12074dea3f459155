"""Synthetic product-label images for the SIFT and re-ranking tests: a label, its photo, its keypoints."""
from __future__ import annotations

import cv2
import numpy as np

from bpcr.reranking import sift


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
