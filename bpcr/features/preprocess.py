"""What ``bpcr extract`` does to a decoded image before resizing it: the winners' two preprocessing steps.

- ``resize="pad"`` letterboxes the image to a square (:func:`letterbox`) before it is resized to
  ``size x size``: the 2019 winner's preprocessing (SE-ResNet-152 GRMAC + DenseNet-201 MAC at 480 x 480,
  each image padded to a square with white rather than stretched). The padding is centred; when the
  difference of the sides is odd, the extra row (column) goes to the bottom (right).
- ``crop="salient"`` cuts the image to its salient object first (:func:`salient_box`), as the 2020
  runner-up cut each query photo to its foreground with a salient-object detector.

The salient box, decided once here (and recorded in a store's ``meta.json`` as ``crop_params``):

1. the image is shrunk (box filter) to a thumbnail whose longer side is :data:`CROP_THUMB` pixels
   (never enlarged), its borders are mirrored outwards by :data:`CROP_MIRROR` of its sides (the
   spectrum sees an image as periodic: an object near one side would light up the opposite one
   too), and OpenCV-contrib's spectral-residual saliency (Hou & Zhang 2007; the ``"spectral"`` of
   :mod:`bpcr.features.saliency`, deterministic: a DFT on OpenCV's own 64 x 64 working image) is
   computed on it and cut back to the thumbnail; the fine-grained detector was tried and left out:
   on the demo's photos its centre-surround halo made the boxes span most of the image;
2. the map is smoothed (Gaussian, sigma :data:`CROP_BLUR` of the thumbnail's longer side), which
   joins the edge and corner peaks spectral residual gives into one region, scaled to 0..255 and
   thresholded with Otsu's method;
3. the box is the bounding box of *all* pixels above the threshold, not of the largest connected
   region: the object's peaks are often several regions, and a box that cuts the product off costs
   more than one that keeps some background;
4. fallback, the whole image (``fallback`` true), when nothing stands out: the thumbnail has (almost)
   no contrast (no channel spans more than :data:`CROP_FLAT` grey levels: a blank or a noisy plain
   image), the map is flat, or the box covers less than :data:`CROP_MIN_AREA` of the image's area;
5. otherwise the box grows by :data:`CROP_MARGIN` of the image's width (height) on each side,
   clipped to the image.

A box is in the upright (EXIF-rotated) image's full-resolution pixels, the width and height a manifest
records, as PIL's crop box: columns ``x0 .. x1 - 1``, rows ``y0 .. y1 - 1``. With ``jpeg_draft`` the
saliency is computed on the draft-decoded image and the box scaled to full resolution; the crop is then
cut from the draft image.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from bpcr.features.options import PAD_WHITE
from bpcr.features.saliency import SALIENCY_METHODS

CROP_THUMB = 128  # longer side of the thumbnail the saliency is computed on, pixels
CROP_MIRROR = 0.25  # the thumbnail is mirrored by this share of its width (height) on each side first
CROP_BLUR = 0.03  # smoothing of the map: Gaussian sigma as a share of the thumbnail's longer side
CROP_FLAT = 8  # a thumbnail whose every channel spans at most this many grey levels has nothing to stand out
CROP_MIN_AREA = 0.05  # a salient box (before the margin) under this share of the image's area: fallback
CROP_MARGIN = 0.05  # the box grows by this share of the image's width (height) on each side
# The rule as a store's meta.json and an unfinished extraction's plan record it.
CROP_PARAMS = {"saliency": "spectral", "thumbnail": CROP_THUMB, "mirror": CROP_MIRROR, "blur": CROP_BLUR,
               "threshold": "otsu", "region": "all salient pixels", "flat": CROP_FLAT, "min_area": CROP_MIN_AREA,
               "margin": CROP_MARGIN}


@dataclass(frozen=True)
class Preprocess:
    """Between decoding and resizing: ``crop`` ("none" or "salient"), then ``resize`` ("square", "aspect" or
    "pad"; only "pad" changes the pixels here, letterboxing with ``pad_colour``)."""

    resize: str = "square"
    pad_colour: tuple[int, int, int] = PAD_WHITE
    crop: str = "none"


@dataclass(frozen=True)
class CropBox:
    """A salient crop in full-resolution pixels: columns ``x0 .. x1 - 1``, rows ``y0 .. y1 - 1``; ``fallback``:
    nothing stood out and the box is the whole image."""

    x0: int
    y0: int
    x1: int
    y1: int
    fallback: bool

    def row(self) -> tuple[int, int, int, int, int]:
        """``(x0, y0, x1, y1, fallback as 0/1)``, a row of a store's ``crops.csv``."""
        return self.x0, self.y0, self.x1, self.y1, int(self.fallback)


def prepare(image: Image.Image, full_size: tuple[int, int],
            preprocess: Preprocess) -> tuple[Image.Image, CropBox | None]:
    """``image`` cut and padded as ``preprocess`` says, ready to resize; and its crop box (None without a crop).

    ``full_size``: the (width, height) of a full decode, which ``image`` is unless it was draft-decoded.
    """
    box = None
    if preprocess.crop == "salient":
        box = salient_box(image, full_size)
        image = cut(image, box, full_size)
    if preprocess.resize == "pad":
        image = letterbox(image, preprocess.pad_colour)
    return image, box


def letterbox(image: Image.Image, colour: tuple[int, int, int] = PAD_WHITE) -> Image.Image:
    """``image`` centred on a square of ``colour`` whose side is its longer side; an odd difference puts the
    extra row (column) at the bottom (right). A square image is returned as it is."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), tuple(int(c) for c in colour))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def salient_box(image: Image.Image, full_size: tuple[int, int] | None = None) -> CropBox:
    """The box of ``image``'s salient object in the pixels of ``full_size`` (default: ``image.size``), by the
    rule of this module's docstring; the whole image, marked ``fallback``, when nothing stands out."""
    width, height = full_size or image.size
    whole = CropBox(0, 0, width, height, True)
    w, h = image.size
    scale = min(1.0, CROP_THUMB / max(w, h))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    rgb = image.convert("RGB")
    thumb = np.asarray(rgb.resize((tw, th), Image.BOX, reducing_gap=3.0) if scale < 1.0 else rgb)
    if int(np.ptp(thumb.reshape(-1, 3), axis=0).max()) <= CROP_FLAT:
        return whole
    # Mirrored borders: the spectrum treats the image as periodic, and an object touching one side would
    # otherwise light up the opposite side too.
    py, px = round(CROP_MIRROR * th), round(CROP_MIRROR * tw)
    mirrored = cv2.copyMakeBorder(np.ascontiguousarray(thumb[:, :, ::-1]), py, py, px, px, cv2.BORDER_REFLECT)
    ok, raw = SALIENCY_METHODS["spectral"]().computeSaliency(mirrored)
    if not ok or raw is None:
        return whole
    raw = np.asarray(raw, dtype=np.float32).reshape(th + 2 * py, tw + 2 * px)[py:py + th, px:px + tw]
    raw = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
    raw = cv2.GaussianBlur(raw, (0, 0), CROP_BLUR * max(tw, th))
    lo, hi = float(raw.min()), float(raw.max())
    if not hi - lo > 1e-6 * abs(hi):  # a flat map: no region stands out
        return whole
    levels = np.round((raw - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    _, salient = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    rows, cols = np.nonzero(salient)
    if rows.size == 0:
        return whole
    # thumbnail pixels [c0, c1) -> full-resolution pixels, rounded outwards
    x0, x1 = int(cols.min()) * width // tw, -(-(int(cols.max()) + 1) * width // tw)
    y0, y1 = int(rows.min()) * height // th, -(-(int(rows.max()) + 1) * height // th)
    if (x1 - x0) * (y1 - y0) < CROP_MIN_AREA * width * height:
        return whole
    mx, my = round(CROP_MARGIN * width), round(CROP_MARGIN * height)
    return CropBox(max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my), False)


def cut(image: Image.Image, box: CropBox, full_size: tuple[int, int] | None = None) -> Image.Image:
    """``image`` cut to ``box`` (in the pixels of ``full_size``, default ``image.size``, scaled to the image's
    own, rounded outwards); the image itself for a box that is the whole image."""
    width, height = full_size or image.size
    w, h = image.size
    if (box.x0, box.y0, box.x1, box.y1) == (0, 0, width, height):
        return image
    x0, y0 = box.x0 * w // width, box.y0 * h // height
    x1, y1 = max(x0 + 1, -(-box.x1 * w // width)), max(y0 + 1, -(-box.y1 * h // height))
    return image.crop((x0, y0, min(w, x1), min(h, y1)))
