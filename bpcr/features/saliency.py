"""Saliency masks for the masked poolings (SR-MAC, and VAMAC/GRMAAC's saliency).

002 takes its salient region from a trained saliency branch and 003 from LDF, a
salient-object network; neither is available without training, so the kit uses
OpenCV-contrib's static saliency detectors, which need no weights:

- ``"spectral"``: spectral residual (Hou & Zhang 2007), computed by OpenCV on a
  64 x 64 thumbnail and resized back; peaks on edges and corners of objects.
- ``"fine"``: fine-grained centre-surround saliency (Montabone & Soto 2010),
  computed at full resolution; fills object regions more evenly.

:func:`saliency_map` gives one map per image in [0, 1]; :func:`mask_for_features`
resizes a batch of maps to the feature map's H x W, which is the ``mask=`` the
poolings take (``bpcr.features.pooling``).
"""
from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bpcr.errors import BadInput

SALIENCY_METHODS: dict[str, Callable[[], Any]] = {
    "spectral": cv2.saliency.StaticSaliencySpectralResidual_create,
    "fine": cv2.saliency.StaticSaliencyFineGrained_create,
}


def saliency_map(image: np.ndarray, method: str = "spectral") -> np.ndarray:
    """Saliency of one image: (H, W, 3) uint8 RGB -> (H, W) float32 in [0, 1].

    Each map is min-max normalised on its own. Decision: an image with no
    contrast at all (every pixel equal), or a detector output without any
    spread, has no salient region, so its map is all ones, i.e. a mask that
    keeps everything, never NaN.
    """
    if method not in SALIENCY_METHODS:
        raise BadInput(None, None, f"unknown saliency method {method!r}; choose from {', '.join(SALIENCY_METHODS)}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a (H, W, 3) uint8 RGB array, got {getattr(image, 'shape', type(image))}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("image is empty")
    ones = np.ones((h, w), dtype=np.float32)
    if image.min() == image.max():
        return ones
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    ok, raw = SALIENCY_METHODS[method]().computeSaliency(bgr)
    if not ok or raw is None:
        return ones
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float32).reshape(h, w), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(raw.min()), float(raw.max())
    if not hi > lo:
        return ones
    return ((raw - lo) / (hi - lo)).astype(np.float32)


def mask_for_features(saliency: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize saliency maps to a feature map: (B, H, W) -> float32 tensor (B, h, w).

    Shrinking (h <= H and w <= W, the usual case: image -> feature map) uses area
    interpolation, so each feature cell holds the mean saliency of the pixels it
    covers; 003 §3.2 says "bilinear", which for a 224 -> 7 reduction would read
    only a few pixels per cell. Enlarging uses bilinear interpolation
    (``align_corners=False``). Values stay in [0, 1]; an all-ones map stays
    exactly ones. A single (H, W) map is accepted and returned as (1, h, w).
    """
    s = torch.as_tensor(np.asarray(saliency) if not isinstance(saliency, torch.Tensor) else saliency)
    if s.dim() == 2:
        s = s.unsqueeze(0)
    if s.dim() != 3:
        raise ValueError(f"saliency must have shape (B, H, W), got {tuple(s.shape)}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    s = s.to(torch.float32).unsqueeze(1)
    if tuple(s.shape[-2:]) != (h, w):
        if h <= s.shape[-2] and w <= s.shape[-1]:
            s = F.adaptive_avg_pool2d(s, (h, w))
        else:
            s = F.interpolate(s, size=(h, w), mode="bilinear", align_corners=False)
    return s.squeeze(1).clamp(0.0, 1.0)
