"""The product in the user's hand, and how its label differs from the listing that sells it.

A shop listing shows the product's artwork crisp, flat and whole. The package a user photographs is a
physical object, and its label differs from the listing as real packaging does:

- another print run (:func:`print_revision`): the same design with its text rows, margins, logo and graphics a
  little moved, the lettering sometimes restyled (brand in title case, a sibling typeface, another stroke
  weight, another size format) and a new claim ("NEW LOOK", "+20% FREE");
- curvature (:func:`_wrap`): a round package is a cylinder turned about its axis, so its label is
  foreshortened towards the edges, runs out of view on one side and shows more of itself on the other;
- softer print (:func:`_soften`): printed and photographed lettering resolves less detail than the
  listing's artwork;
- gloss (:func:`_gloss`): a specular highlight across the package washes the print out beneath it;
- stickers (:func:`_sticker`): a price or barcode sticker covers part of the label.

Each is a property of a printed, wrapped, glossy package, drawn from the photo's own random stream; none
refers to any retrieval method. Knobs live in :mod:`.catalogue`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bpcr.demo.artwork import fit_text
from bpcr.demo.catalogue import (CLAIMS, GLOSS_PROB, GLOSS_STRENGTH, GLOSS_WIDTH, PRINT_SOFTNESS, RESTYLED_FONT,
                        REVISION_CLAIM, REVISION_LAYOUT, REVISION_RESTYLE, REVISION_SHARE, STICKER_PROB,
                        STICKER_WIDTH, WRAP_YAW, hsv_colour, pick)

# round packages, and how much of a full cylinder's turn their front shows (a tube is a flattened one)
WRAPPED = {"bottle": 1.0, "pump": 1.0, "dropper": 1.0, "spray": 1.0, "stick": 1.0, "nail": 1.0,
           "lipstick": 1.0, "jar": 1.0, "tube": 0.4}


def print_revision(spec: dict, rng: np.random.Generator) -> dict:
    """The spec of the package in hand: the listed design, or another print run of it (see module doc).

    Draws the same numbers from ``rng`` whatever comes out, so a knob never shifts the rest of the stream.
    """
    revised = rng.random() < REVISION_SHARE
    moved = rng.uniform(-REVISION_LAYOUT, REVISION_LAYOUT, 5 + 2 * len(spec["art"]))
    restyle = rng.random(4) < REVISION_RESTYLE
    margin, logo_scale, phase = (float(v) for v in rng.uniform((0.6, 0.75, 0.0), (1.5, 1.3, 1.0)))
    thicker = int(pick(rng, (-1, 1)))
    claim = pick(rng, CLAIMS) if rng.random() < REVISION_CLAIM else None
    sizes = rng.uniform(0.85, 1.15, len(spec["art"]))
    if not revised:
        return spec
    revision = {
        "rows": [float(v) for v in moved[:3]],
        "margin": margin,
        "logo": (logo_scale, float(moved[3]), float(moved[4])),
        "title_case": bool(restyle[0]),
        "font": RESTYLED_FONT[spec["font"]] if restyle[1] else spec["font"],
        "thickness": thicker if restyle[2] else 0,
        "size_text": bool(restyle[3]),
        "claim": claim,
    }
    art = [[kind, x + float(moved[5 + 2 * i]), y + float(moved[6 + 2 * i]), size * float(sizes[i]), *rest]
           for i, (kind, x, y, size, *rest) in enumerate(spec["art"])]
    return {**spec, "print": revision, "art": art, "phase": phase}


@dataclass(frozen=True)
class Handheld:
    """How one photographed package differs from its listing, beyond its print (see module doc)."""

    yaw: float | None  # radians turned about its axis; None: not a round package
    softness: float  # detail resolved, relative to the listing (1 = as crisp)
    gloss: tuple[float, float, float] | None  # centre and width (shares of the sprite), strength
    sticker: tuple | None  # x, y, width (shares of the label), aspect, kind (0 price, 1 barcode), text, paper RGB

    def on_surface(self, img: np.ndarray, alpha: np.ndarray, label: tuple[int, int, int, int]) -> np.ndarray:
        """Sticker, curvature and print softness on a sprite's colours (H, W, 3) uint8 before its lighting."""
        inside = alpha > 127
        if self.sticker is not None:
            _sticker(img, inside, label, self.sticker)
        if self.yaw is not None:
            img = _wrap(img, inside, self.yaw)
        return _soften(img, inside, self.softness)

    def on_light(self, img: np.ndarray, alpha: np.ndarray, top_view: bool) -> np.ndarray:
        """The specular highlight, after the lighting."""
        return img if self.gloss is None else _gloss(img, alpha > 127, self.gloss, top_view)


def handheld_of(spec: dict, rng: np.random.Generator) -> Handheld:
    """How the package in hand differs from its listing beyond its print; draws a fixed count from ``rng``."""
    turn = WRAPPED.get(spec["category"])
    yaw = float(rng.uniform(-WRAP_YAW, WRAP_YAW))
    softness = float(rng.uniform(*PRINT_SOFTNESS))
    glossy = rng.random() < GLOSS_PROB
    gloss = (float(rng.uniform(0.15, 0.85)), float(rng.uniform(*GLOSS_WIDTH)), float(rng.uniform(*GLOSS_STRENGTH)))
    stuck = rng.random() < STICKER_PROB
    kind = int(rng.integers(0, 2))
    price = pick(rng, ("$", "EUR ", "")) + f"{int(rng.integers(3, 60))}.{int(rng.integers(0, 100)):02d}"
    barcode = "".join(str(d) for d in rng.integers(0, 10, 12))
    paper = (250, 250, 246) if kind == 1 else pick(rng, ((250, 250, 246), hsv_colour(50, 0.55, 1.0), hsv_colour(22, 0.6, 1.0)))
    place = tuple(float(v) for v in rng.uniform((0.0, 0.0, STICKER_WIDTH[0], 0.35), (1.0, 1.0, STICKER_WIDTH[1], 0.65)))
    return Handheld(
        yaw=None if turn is None or spec["top_view"] else yaw * turn,
        softness=softness,
        gloss=gloss if glossy else None,
        sticker=(*place, kind, price if kind == 0 else barcode, paper) if stuck else None,
    )


def _wrap(img: np.ndarray, inside: np.ndarray, yaw: float) -> np.ndarray:
    """Each row of a round package is a cylinder slice turned by ``yaw``: screen offset R sin(theta) shows the
    flat artwork at arc length R (theta - yaw), and the package's edge colour where that runs past the artwork
    (round the side, out of the listing's view). The centre keeps its scale; the silhouette is unchanged."""
    import cv2

    h, w = inside.shape
    rows = inside.any(axis=1)
    left = np.argmax(inside, axis=1).astype(np.float32)[:, None]
    right = (w - 1 - np.argmax(inside[:, ::-1], axis=1)).astype(np.float32)[:, None]
    span = np.maximum(right - left, 1.0)
    centre, radius = (left + right) / 2, span / 2
    xs = np.arange(w, dtype=np.float32)[None, :]
    u = np.clip((xs - centre) / radius, -1.0, 1.0)
    src = np.clip(centre + radius * (np.arcsin(u) - yaw), left, right)
    map_x = np.where(rows[:, None] & inside, src, xs).astype(np.float32)
    map_y = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w)).copy()
    wrapped = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # a source column outside the silhouette (a notch in the outline) keeps the unwrapped pixel
    landed = inside[np.arange(h)[:, None], np.clip(np.rint(map_x), 0, w - 1).astype(np.int64)]
    return np.where((inside & landed)[..., None], wrapped, img)


def _soften(img: np.ndarray, inside: np.ndarray, softness: float) -> np.ndarray:
    """Resolve only ``softness`` of the detail inside the silhouette (averaged within it, so no dark rim)."""
    import cv2

    h, w = inside.shape
    small = (max(1, int(round(w * softness))), max(1, int(round(h * softness))))
    weight = inside.astype(np.float32)
    num = cv2.resize(cv2.resize(img.astype(np.float32) * weight[..., None], small, interpolation=cv2.INTER_AREA),
                     (w, h), interpolation=cv2.INTER_LINEAR)
    den = cv2.resize(cv2.resize(weight, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    soft = np.clip(num / np.maximum(den, 1e-3)[..., None], 0, 255).astype(np.uint8)
    return np.where(inside[..., None], soft, img)


def _gloss(img: np.ndarray, inside: np.ndarray, gloss: tuple[float, float, float], top_view: bool) -> np.ndarray:
    """A soft specular band: along the axis of a standing package, diagonal across a flat lid."""
    h, w = inside.shape
    centre, width, strength = gloss
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    along = (xs + np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]) / 2 if top_view else xs
    band = strength * np.exp(-(((along - centre) / width) ** 2)) * inside
    out = img.astype(np.float32)
    out += (255.0 - out) * band[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _sticker(img: np.ndarray, inside: np.ndarray, label: tuple[int, int, int, int], sticker: tuple) -> None:
    """A price or barcode sticker stuck on the label, in place, clipped to the package's outline."""
    import cv2

    x0, y0, x1, y1 = label
    fx, fy, width, aspect, kind, text, paper = sticker
    sw = max(8, int((x1 - x0) * width))
    sh = max(6, int(sw * aspect))
    sx = int(x0 + fx * max(1, x1 - x0 - sw // 2))
    sy = int(y0 + fy * max(1, y1 - y0 - sh // 2))
    layer = img.copy()
    cv2.rectangle(layer, (sx, sy), (sx + sw, sy + sh), paper, -1)
    if kind == 0:
        fit_text(layer, text, (sx + 2, sy + 2, sx + sw - 2, sy + sh - 2), 0, 1, (25, 25, 25))
    else:
        bars = sy + int(sh * 0.72)
        for i, digit in enumerate(text):
            x = sx + 3 + int(i * (sw - 6) / len(text))
            cv2.rectangle(layer, (x, sy + 2), (x + 1 + int(digit) % 3, bars), (20, 20, 20), -1)
        fit_text(layer, text, (sx + 2, bars, sx + sw - 2, sy + sh - 1), 0, 1, (20, 20, 20))
    img[inside] = layer[inside]
