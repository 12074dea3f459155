"""Photographing the demo's products: clean shop listings and cluttered user photos, saved as JPEG.

Each image draws everything from the ``rng`` it is given, in a fixed order, so the same stream gives the
same pixels in any process.
"""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from bpcr.demo.catalogue import (BACKGROUND_BLUR, CLUTTER_OBJECTS, LONG_SIDE, OCCLUSION_AREA, OCCLUSION_PROB, QUERY_BLUR_SIGMA,
                        QUERY_COLOUR_CAST, QUERY_GLARE_PROB, QUERY_NOISE_SIGMA, QUERY_PERSPECTIVE, QUERY_ROTATION,
                        QUERY_SCALE, SHOP_CLOSEUP_PROB, SHOP_SCALE, SHOP_WITH_BOX_PROB, hsv_colour, pick, product_spec)
from bpcr.demo.drawing import box_sprite, product_sprite
from bpcr.demo.handheld import handheld_of, print_revision


def _warp_onto(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, centre: tuple[float, float], extent: float,
               angle: float, persp: float, rng: np.random.Generator, shadow: float = 0.0) -> np.ndarray:
    """Paste a sprite with its longer side scaled to ``extent`` px, rotated by ``angle`` degrees around
    ``centre``, corners jittered by ``persp`` x extent; returns the pasted coverage (canvas H, W)."""
    import cv2

    h, w = alpha.shape
    s = extent / max(h, w)
    height = extent
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = (src - [w / 2, h / 2]) * s
    dst = dst @ rot.T + centre + rng.uniform(-1, 1, (4, 2)) * persp * height
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    size = (canvas.shape[1], canvas.shape[0])
    fg = cv2.warpPerspective(rgb, m, size, flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    cov = cv2.warpPerspective(alpha, m, size, flags=cv2.INTER_LINEAR)
    if shadow > 0:
        soft = cv2.GaussianBlur(cov, (0, 0), max(2.0, height * 0.03))
        shift = np.float32([[1, 0, height * 0.03], [0, 1, height * 0.03]])
        soft = cv2.warpAffine(soft, shift, size)
        canvas[:] = (canvas * (1 - shadow * soft[..., None])).astype(canvas.dtype)
    canvas[:] = (canvas * (1 - cov[..., None]) + fg * cov[..., None]).astype(canvas.dtype)
    return cov


def _size(rng: np.random.Generator, aspects: tuple[float, ...], long_side: tuple[int, int]) -> tuple[int, int]:
    long = int(rng.integers(long_side[0], long_side[1] + 1))
    aspect = pick(rng, aspects)  # width / height
    return (long, max(LONG_SIDE[0] // 2, int(long / aspect))) if aspect >= 1 else (max(LONG_SIDE[0] // 2, int(long * aspect)), long)


def shop_image(spec: dict, rng: np.random.Generator) -> np.ndarray:
    """A clean listing photo: plain, grey or studio-gradient background, mild pose change."""
    w, h = _size(rng, (1.0, 1.0, 0.75, 1.333), (300, LONG_SIDE[1]))
    kind = pick(rng, ("white", "white", "white", "grey", "gradient", "studio", "studio", "tint"))
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    if kind == "white":
        bg = np.full((h, w, 3), 255.0, np.float32) * np.float32(rng.uniform(0.96, 1.0))
    elif kind == "grey":
        bg = np.full((h, w, 3), rng.uniform(200, 240), np.float32)
    elif kind == "gradient":
        top, bottom = rng.uniform(200, 255, 3), rng.uniform(150, 235, 3)
        bg = (top * (1 - yy) + bottom * yy).astype(np.float32) * np.ones((1, w, 1), np.float32)
    elif kind == "studio":
        xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
        r2 = xx ** 2 + ((yy - 0.45) * 2) ** 2
        bg = np.clip(250 - 70 * r2, 120, 255) * np.ones((1, 1, 3), np.float32)
    else:
        bg = np.ones((h, w, 3), np.float32) * np.array(hsv_colour(rng.uniform(0, 360), 0.12, 0.97), np.float32)
    rgb, alpha = product_sprite(spec)
    closeup = rng.random() < SHOP_CLOSEUP_PROB
    height = min(h, w) * (rng.uniform(1.3, 1.8) if closeup else rng.uniform(*SHOP_SCALE))
    if rng.random() < SHOP_WITH_BOX_PROB and not closeup:
        brgb, balpha = box_sprite(spec)
        _warp_onto(bg, brgb, balpha, (w * rng.uniform(0.6, 0.72), h * 0.55), height * 0.95, 0.0, 0.01, rng, 0.25)
        centre = (w * rng.uniform(0.3, 0.42), h * rng.uniform(0.5, 0.58))
        height *= 0.85
    else:
        centre = (w * rng.uniform(0.4, 0.6), h * rng.uniform(0.42, 0.58))
    _warp_onto(bg, rgb, alpha, centre, height, rng.normal(0, 4), 0.03, rng, rng.uniform(0.1, 0.35))
    return np.clip(bg, 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A cluttered surface: blotches, wood grain, tiles, fabric or scattered shapes."""
    import cv2

    kind = pick(rng, ("blotch", "wood", "tiles", "fabric", "shapes"))
    base = np.array(hsv_colour(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.4, 0.95)), np.float32)
    if kind == "blotch":
        small = rng.uniform(-1, 1, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)).astype(np.float32)
        img = base + 35 * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == "wood":
        xx = np.arange(w, dtype=np.float32)[None, :]
        yy = np.arange(h, dtype=np.float32)[:, None]
        grain = np.sin((xx + 8 * np.sin(yy / rng.uniform(20, 60))) / rng.uniform(3, 9))
        img = base * (0.8 + 0.15 * grain[..., None])
    elif kind == "tiles":
        img = np.ones((h, w, 3), np.float32) * base
        step = int(rng.integers(24, 90))
        for v in range(int(rng.integers(0, step)), max(h, w), step):
            img[:, v:v + 3] *= 0.6
            img[v:v + 3, :] *= 0.6
    elif kind == "fabric":
        xx = np.arange(w, dtype=np.float32)[None, :]
        yy = np.arange(h, dtype=np.float32)[:, None]
        weave = np.sin(xx / rng.uniform(1.5, 4)) * np.sin(yy / rng.uniform(1.5, 4))
        img = base * (0.85 + 0.12 * weave[..., None])
    else:
        img = np.ones((h, w, 3), np.float32) * base
        for _ in range(int(rng.integers(8, 25))):
            c = tuple(float(0.5 * b + 0.5 * v) for b, v in zip(base, rng.uniform(0, 255, 3)))
            p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                cv2.circle(img, p, int(rng.integers(5, max(6, w // 5))), c, -1, cv2.LINE_AA)
            else:
                q = (p[0] + int(rng.integers(-w // 4, w // 4)), p[1] + int(rng.integers(-h // 4, h // 4)))
                cv2.rectangle(img, p, q, c, -1)
    # the camera focuses on the product, so the surface behind it is a little soft
    return cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.float32), (0, 0), float(rng.uniform(*BACKGROUND_BLUR)))


def _clutter_spec(seed: int, rng: np.random.Generator) -> dict:
    # families far above any plan's range: clutter never shows a database product
    return product_spec(seed, 10_000_000 + int(rng.integers(0, 1_000_000)), 0)


def query_image(spec: dict, seed: int, rng: np.random.Generator, package: np.random.Generator) -> np.ndarray:
    """A user photo of the package in hand: clutter, pose, occlusion, lighting, colour cast, blur, noise.

    ``package`` draws how the package differs from its listing (:mod:`.handheld`); ``rng`` everything else.
    """
    # phones are held the way the product stands: portrait for bottles, landscape for palettes
    w, h = _size(rng, (0.75, 0.75, 1.0) if spec["tall"] else (1.333, 1.333, 1.0), (320, LONG_SIDE[1]))
    img = _texture(rng, h, w)
    for _ in range(int(rng.integers(CLUTTER_OBJECTS[0], CLUTTER_OBJECTS[1] + 1))):
        crgb, calpha = product_sprite(_clutter_spec(seed, rng))
        x = pick(rng, (rng.uniform(-0.05, 0.25), rng.uniform(0.75, 1.05)))  # around the product, not on it
        _warp_onto(img, crgb, calpha, (w * x, h * rng.uniform(0.1, 0.9)), min(h, w) * rng.uniform(0.3, 0.7),
                   rng.normal(0, 15), 0.05, rng, 0.3)
    rgb, alpha = product_sprite(print_revision(spec, package), handheld_of(spec, package))
    height = (h if spec["tall"] else w) * rng.uniform(*QUERY_SCALE)
    centre = (w * rng.uniform(0.3, 0.7), h * rng.uniform(0.35, 0.65))
    cov = _warp_onto(img, rgb, alpha, centre, height, rng.uniform(-QUERY_ROTATION, QUERY_ROTATION),
                     QUERY_PERSPECTIVE * rng.uniform(0.2, 1.0), rng, rng.uniform(0.0, 0.4))
    if rng.random() < OCCLUSION_PROB:
        _occlude(img, cov, seed, rng)
    return _camera(img, rng)


def _occlude(img: np.ndarray, cov: np.ndarray, seed: int, rng: np.random.Generator) -> None:
    """Cover part of the product (coverage ``cov``) with a hand or another product, in place."""
    import cv2

    h, w = img.shape[:2]
    ys, xs = np.nonzero(cov > 0.5)
    if not len(xs):
        return
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    area = rng.uniform(*OCCLUSION_AREA) * (x1 - x0 + 1) * (y1 - y0 + 1)
    ow = int(np.clip(math.sqrt(area) * rng.uniform(0.6, 1.6), 8, w))
    oh = int(np.clip(area / ow, 8, h))
    side = rng.random()
    ox = int(x0 - ow * 0.4 if side < 0.5 else x1 - ow * 0.6)
    oy = int(rng.uniform(y0, max(y0 + 1, y1 - oh)))
    if rng.random() < 0.5:  # a hand
        skin = hsv_colour(rng.uniform(15, 35), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95))
        cv2.ellipse(img, (ox + ow // 2, oy + oh // 2), (ow // 2, oh // 2), rng.uniform(-30, 30), 0, 360,
                    skin, -1, cv2.LINE_AA)
        for k in range(4):
            fx = ox + ow // 2 + (1 if side >= 0.5 else -1) * ow // 2
            cv2.line(img, (ox + ow // 2, oy + oh * (k + 1) // 5), (fx, oy + oh * (k + 1) // 5), skin,
                     max(3, oh // 7), cv2.LINE_AA)
    else:
        crgb, calpha = product_sprite(_clutter_spec(seed, rng))
        _warp_onto(img, crgb, calpha, (ox + ow / 2, oy + oh / 2), max(oh, ow) * 1.3, rng.normal(0, 20),
                   0.05, rng, 0.3)


def _camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting and camera: a light ramp, white balance, glare, blur or camera shake, downsampling, noise."""
    import cv2

    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = rng.normal(0, 1, 2)
    ramp = ((xx / w - 0.5) * d[0] + (yy / h - 0.5) * d[1]) * rng.uniform(0.1, 0.5)
    gain = 1 + rng.uniform(-QUERY_COLOUR_CAST, QUERY_COLOUR_CAST, 3).astype(np.float32)
    img = img * (rng.uniform(0.75, 1.15) + ramp)[..., None] * gain
    if rng.random() < QUERY_GLARE_PROB:
        glare = np.zeros((h, w), np.float32)
        cv2.circle(glare, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(10, w // 4)), 1.0, -1)
        glare = cv2.GaussianBlur(glare, (0, 0), 15)
        img = img + glare[..., None] * rng.uniform(60, 140)
    sigma = rng.uniform(*QUERY_BLUR_SIGMA)
    if rng.random() < 0.2:
        k = int(rng.integers(3, 10))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1),
                                (k, k))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    elif sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < 0.3:
        f = rng.uniform(0.45, 0.8)
        small = cv2.resize(img, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img = img + rng.normal(0, rng.uniform(*QUERY_NOISE_SIGMA), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int, exif_orientation: int | None = None) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels)
    kwargs: dict[str, Any] = {"quality": int(quality)}
    if exif_orientation is not None:
        # store the pixels turned so that a reader applying the tag sees them upright
        inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
        image = image.transpose(inverse[exif_orientation])
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()
