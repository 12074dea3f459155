"""Drawing ``scale_catalogue``'s images: a product sprite from its family's spec, shop listings and phone photos.

Every function draws from the ``numpy.random.Generator`` it is given, in a fixed order, so an image depends
only on its seed stream; OpenCV draws and encodes (its threads are the caller's choice).
"""
from __future__ import annotations

import math

import numpy as np

# RNG stream kinds: numpy.random.default_rng([seed, KIND, ...]) (the catalogue's plan and texts use the rest).
KIND_FAMILY, KIND_DB, KIND_QUERY, KIND_BRANDS, KIND_PICK, KIND_NOISE = range(6)
DB_LONG_SIDE = (800, 1600)
DB_JPEG_QUALITY = (88, 92)
QUERY_LONG_SIDE = (1000, 1600)
QUERY_JPEG_QUALITY = (60, 85)


def _bgr(hsv: tuple[float, float, float]) -> tuple[int, int, int]:
    import cv2

    pixel = cv2.cvtColor(np.uint8([[hsv]]), cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(c) for c in pixel)


def product_sprite(spec: dict, shade: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The product upright, ``height`` px tall: BGR (h, w, 3) uint8 and its coverage (h, w) float32 in [0, 1]."""
    import cv2

    shape = spec["shape"]
    aspect = {"jar": 1.1, "compact": 1.0, "palette": 1.4, "box": 0.7}.get(shape, spec["aspect"])
    h, w = height, max(8, int(height * aspect))
    rgb = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    body = _bgr(spec["shades"][shade]["hsv"])
    cap_h = 0 if shape in ("compact", "palette", "box") else int(h * spec["cap"])
    if shape == "compact":
        cv2.circle(mask, (w // 2, h // 2), min(w, h) // 2 - 1, 255, -1, cv2.LINE_AA)
    elif shape == "tube":
        pts = np.array([[w * 0.1, cap_h], [w * 0.9, cap_h], [w * 0.98, h - 1], [w * 0.02, h - 1]], np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
    else:
        r = int(min(w, h) * (0.15 if shape in ("bottle", "jar") else 0.03))
        cv2.rectangle(mask, (r, cap_h), (w - 1 - r, h - 1), 255, -1)
        cv2.rectangle(mask, (0, cap_h + r), (w - 1, h - 1 - r), 255, -1)
        for x in (r, w - 1 - r):
            for y in (cap_h + r, h - 1 - r):
                cv2.circle(mask, (x, y), r, 255, -1, cv2.LINE_AA)
    if cap_h:
        cw = int(w * (0.5 if shape == "bottle" else 0.9))
        cv2.rectangle(mask, ((w - cw) // 2, 0), ((w + cw) // 2, cap_h + 2), 255, -1)
    rgb[:] = body
    if cap_h:
        rgb[: cap_h + 2] = spec["cap_colour"]
    if shape == "palette":
        for row in range(2):
            for col in range(3):
                hsv = spec["shades"][shade]["hsv"]
                pan = _bgr(((hsv[0] + 12 * (row * 3 + col)) % 180, hsv[1], hsv[2]))
                cv2.circle(rgb, (int(w * (0.2 + 0.3 * col)), int(h * (0.3 + 0.4 * row))), int(h * 0.14), pan, -1,
                           cv2.LINE_AA)
    else:
        top, lh = int(cap_h + (h - cap_h) * spec["label_top"]), int((h - cap_h) * spec["label_height"])
        x0, x1 = int(w * 0.12), int(w * 0.88)
        cv2.rectangle(rgb, (x0, top), (x1, top + lh), spec["label_colour"], -1)
        ink = (20, 20, 20) if sum(spec["label_colour"]) > 380 else (235, 235, 235)
        lines = [spec["brand"].upper(), spec["line"], spec["type"], spec["shades"][shade]["name"] or spec["size"]]
        for k, text in enumerate(lines):
            scale = 1.0
            (tw, th), _ = cv2.getTextSize(text, spec["font"], scale, 2)
            scale = min((x1 - x0) * 0.9 / max(tw, 1), lh / 5.5 / max(th, 1)) * (1.3 if k == 0 else 0.9)
            thick = max(1, int(scale * (2.5 if k == 0 else 1.5)))
            (tw, th), _ = cv2.getTextSize(text, spec["font"], scale, thick)
            y = top + int(lh * (0.25 + 0.22 * k)) + th // 2
            cv2.putText(rgb, text, ((w - tw) // 2, y), spec["font"], scale, ink, thick, cv2.LINE_AA)
        centre, radius = (w // 2, top - int(h * 0.08)), max(2, int(w * 0.12))
        if spec["logo"] == 0:
            cv2.circle(rgb, centre, radius, spec["logo_colour"], -1, cv2.LINE_AA)
        elif spec["logo"] == 1:
            tri = np.array([[centre[0], centre[1] - radius], [centre[0] + radius, centre[1] + radius],
                            [centre[0] - radius, centre[1] + radius]], np.int32)
            cv2.fillPoly(rgb, [tri], spec["logo_colour"], cv2.LINE_AA)
        elif spec["logo"] == 2:
            cv2.rectangle(rgb, (centre[0] - radius, centre[1] - radius // 2), (centre[0] + radius, centre[1] + radius // 2),
                          spec["logo_colour"], -1)
        for k in range(spec["stripes"]):
            y = int(h - (h - cap_h) * (0.08 + 0.06 * k))
            cv2.line(rgb, (0, y), (w - 1, y), spec["logo_colour"], max(1, h // 80), cv2.LINE_AA)
    # Cylinder shading across the width, brighter on the left where the lamp is.
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    light = (0.75 + 0.3 * np.cos((x + 0.3) * 1.3)).clip(0.55, 1.08)
    rgb = (rgb * light[None, :, None]).clip(0, 255).astype(np.uint8)
    return rgb, mask.astype(np.float32) / 255.0


def _background(rng: np.random.Generator, h: int, w: int, busy: bool) -> np.ndarray:
    import cv2

    kind = rng.choice(("scene", "scene", "gradient")) if busy else rng.choice(("white", "white", "white", "grey", "gradient", "studio"))
    if kind == "white":
        return np.full((h, w, 3), int(rng.integers(244, 256)), np.uint8)
    if kind == "grey":
        return np.full((h, w, 3), int(rng.integers(200, 240)), np.uint8)
    corners = rng.integers(120 if kind == "studio" else 40, 256, (2, 2, 3)).astype(np.uint8)
    canvas = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "scene":  # a table, a shelf, other things: blurred shapes behind the product
        for _ in range(int(rng.integers(6, 16))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                axes = (int(rng.integers(w // 20, w // 4)), int(rng.integers(h // 20, h // 4)))
                cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
            else:
                cv2.rectangle(canvas, centre, (centre[0] + int(rng.integers(w // 10, w // 2)),
                                               centre[1] + int(rng.integers(h // 10, h // 2))), colour, -1)
        canvas = cv2.GaussianBlur(canvas, (0, 0), float(rng.uniform(2.0, 8.0)))
    return canvas


def _paste(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Blend a sprite onto ``canvas`` with its top-left corner at (x, y), clipped to the canvas."""
    import cv2

    h, w = alpha.shape
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    a = np.ascontiguousarray(alpha[y0 - y : y1 - y, x0 - x : x1 - x])
    fg = np.ascontiguousarray(rgb[y0 - y : y1 - y, x0 - x : x1 - x])
    canvas[y0:y1, x0:x1] = cv2.blendLinear(fg, np.ascontiguousarray(canvas[y0:y1, x0:x1]), a, 1.0 - a)


NOISE_SIDE = 1800  # covers the largest image, at an offset below NOISE_SIDE - 1600
_NOISE: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}


def _add_noise(image: np.ndarray, rng: np.random.Generator, seed: int, sigma: float) -> np.ndarray:
    """Sensor-like noise of standard deviation ``sigma`` (one of a few levels) from a per-seed field at a random
    offset, added with saturation: drawing fresh noise for every pixel would cost more than the rest."""
    import cv2

    if (seed, sigma) not in _NOISE:
        field = np.random.default_rng([seed, KIND_NOISE, int(sigma * 10)]).standard_normal(
            (NOISE_SIDE, NOISE_SIDE, 3), dtype=np.float32) * sigma
        _NOISE[(seed, sigma)] = (field.clip(0, 255).astype(np.uint8), (-field).clip(0, 255).astype(np.uint8))
    up, down = _NOISE[(seed, sigma)]
    h, w = image.shape[:2]
    oy, ox = int(rng.integers(0, NOISE_SIDE - h + 1)), int(rng.integers(0, NOISE_SIDE - w + 1))
    image = cv2.add(image, up[oy : oy + h, ox : ox + w])
    return cv2.subtract(image, down[oy : oy + h, ox : ox + w])


def _size(rng: np.random.Generator, long_side: tuple[int, int], aspects: tuple[float, ...]) -> tuple[int, int]:
    long = int(rng.integers(long_side[0], long_side[1] + 1))
    aspect = float(rng.choice(aspects))  # width / height
    return (long, int(long / aspect)) if aspect >= 1 else (int(long * aspect), long)


def shop_jpeg(seed: int, i: int, spec: dict, shade: int, view: int) -> bytes:
    """Database image ``i``: a shop listing of one shade of a family."""
    import cv2

    rng = np.random.default_rng([seed, KIND_DB, i])
    w, h = _size(rng, DB_LONG_SIDE, (1.0, 1.0, 1.0, 0.75, 1.333))
    canvas = _background(rng, h, w, busy=False)
    closeup = view > 0 and rng.random() < 0.15
    extent = min(h, w) * (float(rng.uniform(1.3, 1.8)) if closeup else float(rng.uniform(0.55, 0.9)))
    rgb, alpha = product_sprite(spec, shade, int(extent))
    sh, sw = alpha.shape
    cx = w / 2 + rng.uniform(-0.1, 0.1) * w
    cy = h / 2 + rng.uniform(-0.08, 0.08) * h
    _paste(canvas, rgb, alpha, int(cx - sw / 2), int(cy - sh / 2))
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.6)
    canvas = _add_noise(canvas, rng, seed, float(rng.choice((1.0, 1.5, 2.5))))
    quality = int(rng.integers(DB_JPEG_QUALITY[0], DB_JPEG_QUALITY[1] + 1))
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def query_jpeg(seed: int, n: int, q: int, spec: dict, shade: int) -> bytes:
    """Query ``q`` of the catalogue of ``n`` images: a phone photo of the product in clutter."""
    import cv2

    rng = np.random.default_rng([seed, KIND_QUERY, n, q])
    w, h = _size(rng, QUERY_LONG_SIDE, (0.75, 1.333, 1.0))
    canvas = _background(rng, h, w, busy=True)
    extent = min(h, w) * float(rng.uniform(0.6, 0.9))
    rgb, alpha = product_sprite(spec, shade, int(extent))
    sh, sw = alpha.shape
    src = np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]])
    angle = math.radians(float(rng.uniform(-12, 12)))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = np.array([w / 2 + rng.uniform(-0.12, 0.12) * w, h / 2 + rng.uniform(-0.1, 0.1) * h])
    dst = (src - [sw / 2, sh / 2]) @ rot.T + centre + rng.uniform(-1, 1, (4, 2)) * 0.06 * extent
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    fg = cv2.warpPerspective(rgb, m, (w, h), flags=cv2.INTER_LINEAR)
    cover = cv2.warpPerspective(alpha, m, (w, h), flags=cv2.INTER_LINEAR)
    canvas = cv2.blendLinear(fg, canvas, cover, 1.0 - cover)
    gain = 1 + rng.uniform(-0.08, 0.08, 3)
    lut = (np.arange(256, dtype=np.float64)[:, None] * gain).clip(0, 255).astype(np.uint8).reshape(1, 256, 3)
    canvas = cv2.LUT(canvas, lut)  # a white-balance error, per channel
    crop = float(rng.uniform(0.8, 1.0))
    ch, cw = int(h * crop), int(w * crop)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    canvas = np.ascontiguousarray(canvas[y0 : y0 + ch, x0 : x0 + cw])
    canvas = cv2.GaussianBlur(canvas, (0, 0), float(rng.uniform(0.5, 1.5)))
    canvas = _add_noise(canvas, rng, seed, float(rng.choice((3.0, 4.5, 6.0))))
    quality = int(rng.integers(QUERY_JPEG_QUALITY[0], QUERY_JPEG_QUALITY[1] + 1))
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
