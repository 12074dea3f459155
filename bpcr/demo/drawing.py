"""Drawing the demo's products: one sprite per category, and the retail box.

A sprite is a front view on a transparent canvas, RGB (H, W, 3) uint8 with coverage (H, W) float32; it depends
only on the product's spec. Each category has its own drawer in :data:`DRAWERS`; what they share (the family's
colours, graphics, pattern, label and lighting) is applied after.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from bpcr.demo.artwork import draw_art, render_label, draw_pattern
from bpcr.demo.catalogue import hsv_colour

if TYPE_CHECKING:
    from bpcr.demo.handheld import Handheld

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


class _Canvas:
    """A product sprite being drawn: colour ``img`` (H, W, 3) uint8, coverage ``alpha`` (H, W) uint8 and the
    product's body, cap and shade colours. Tall products get a portrait canvas, flat ones a landscape one."""

    def __init__(self, spec: dict) -> None:
        self.H, self.W = (360, 170) if spec["tall"] else (230, 300)
        self.cx = self.W / 2
        self.img = np.zeros((self.H, self.W, 3), np.uint8)
        self.alpha = np.zeros((self.H, self.W), np.uint8)
        body_c = hsv_colour(*spec["body"])
        self.cap_c = hsv_colour(*spec["cap"]) if spec["cap"] is not None else tuple(int(v * 0.55) for v in body_c)
        self.shade_c = hsv_colour(*spec["shade"])
        if spec["glass"] and spec["category"] in ("bottle", "dropper", "perfume", "nail"):
            body_c = tuple(int(0.45 * v + 0.55 * 235) for v in body_c)
        self.body_c = body_c

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: tuple, radius: float = 0) -> None:
        """A filled rectangle with rounded corners of ``radius`` px, on the image and its coverage."""
        import cv2

        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        r = int(min(radius, (x1 - x0) / 2, (y1 - y0) / 2))
        for target, value in ((self.img, colour), (self.alpha, 255)):
            if r <= 1:
                cv2.rectangle(target, (x0, y0), (x1, y1), value, -1, cv2.LINE_AA)
                continue
            cv2.rectangle(target, (x0 + r, y0), (x1 - r, y1), value, -1)
            cv2.rectangle(target, (x0, y0 + r), (x1, y1 - r), value, -1)
            for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
                cv2.circle(target, (cx, cy), r, value, -1, cv2.LINE_AA)

    def poly(self, points: list, colour: tuple) -> None:
        import cv2

        pts = np.asarray(points, np.int32)
        cv2.fillPoly(self.img, [pts], colour, cv2.LINE_AA)
        cv2.fillPoly(self.alpha, [pts], 255, cv2.LINE_AA)

    def disc(self, centre: tuple[int, int], r: int, colour: tuple) -> None:
        import cv2

        cv2.circle(self.img, centre, r, colour, -1, cv2.LINE_AA)
        cv2.circle(self.alpha, centre, r, 255, -1, cv2.LINE_AA)


# Each drawer draws one category's shape from ``spec["shape"]`` (eight numbers in [0, 1]) and returns the
# box on the body that the label goes in.
def _upright(c: _Canvas, s: list[float], top_share: float, narrow: bool = False,
             square: bool = False) -> tuple[float, float, float, float, float]:
    """The body of a container standing on its base; returns its width, top, shoulder radius, neck and cap width."""
    bw = c.W * (0.55 + 0.3 * s[0]) if narrow else c.W * (0.6 + 0.38 * s[0])
    top = c.H * top_share + c.H * 0.08 * s[1]
    shoulder = bw * 0.06 * s[2] if square else bw * (0.08 + 0.4 * s[2])
    c.rect(c.cx - bw / 2, top, c.cx + bw / 2, c.H - 1, c.body_c, shoulder)
    neck_w = bw * (0.28 + 0.3 * s[3])
    return bw, top, shoulder, neck_w, min(bw, neck_w * (1.1 + 0.5 * s[4]))


def _upright_label(c: _Canvas, bw: float, top: float) -> Box:
    return (int(c.cx - bw / 2 + bw * 0.08), int(top + (c.H - top) * 0.12), int(c.cx + bw / 2 - bw * 0.08), c.H - 8)


def _bottle(c: _Canvas, spec: dict) -> Box:
    s, H, cx = spec["shape"], c.H, c.cx
    bw, top, _, neck_w, cap_w = _upright(c, s, 0.18)
    c.rect(cx - neck_w / 2, top - H * 0.05, cx + neck_w / 2, top + 4, c.body_c)
    c.rect(cx - cap_w / 2, H * 0.02, cx + cap_w / 2, top - H * 0.04, c.cap_c, cap_w * 0.5 * s[5])
    return _upright_label(c, bw, top)


def _pump(c: _Canvas, spec: dict) -> Box:
    s, H, W, cx = spec["shape"], c.H, c.W, c.cx
    bw, top, _, neck_w, _ = _upright(c, s, 0.3)
    c.rect(cx - neck_w / 2, top - H * 0.07, cx + neck_w / 2, top + 4, c.cap_c, 3)
    c.rect(cx - 4, H * 0.1, cx + 4, top - H * 0.06, (210, 210, 210))
    c.rect(cx - neck_w * 0.6, H * 0.04, cx + neck_w * 0.6 + W * 0.18, H * 0.11, c.cap_c, 5)
    return _upright_label(c, bw, top)


def _dropper(c: _Canvas, spec: dict) -> Box:
    s, H, cx = spec["shape"], c.H, c.cx
    bw, top, _, neck_w, _ = _upright(c, s, 0.4, narrow=True)
    c.rect(cx - neck_w / 2, top - H * 0.14, cx + neck_w / 2, top + 4, c.cap_c, 3)
    c.rect(cx - neck_w * 0.32, H * 0.03, cx + neck_w * 0.32, top - H * 0.12, (40, 36, 34), neck_w * 0.3)
    return _upright_label(c, bw, top)


def _perfume(c: _Canvas, spec: dict) -> Box:
    s, H, cx = spec["shape"], c.H, c.cx
    bw, top, _, neck_w, _ = _upright(c, s, 0.32, square=True)
    if spec["glass"]:
        c.rect(cx - bw / 2 + 8, top + H * 0.12, cx + bw / 2 - 8, H - 9, c.shade_c, 4)
    c.rect(cx - neck_w * 0.3, top - H * 0.06, cx + neck_w * 0.3, top + 4, (200, 200, 200))
    cw = bw * (0.35 + 0.5 * s[4])
    if s[5] < 0.4:
        c.disc((int(cx), int(top - H * 0.16)), int(min(cw / 2, H * 0.1)), c.cap_c)
    else:
        c.rect(cx - cw / 2, H * 0.04, cx + cw / 2, top - H * 0.055, c.cap_c, 3)
    return _upright_label(c, bw, top)


def _nail(c: _Canvas, spec: dict) -> Box:
    s, H, cx = spec["shape"], c.H, c.cx
    bw, top, shoulder, neck_w, _ = _upright(c, s, 0.5, narrow=True)
    c.rect(cx - bw / 2 + 5, top + 6, cx + bw / 2 - 5, H - 6, c.shade_c, shoulder * 0.8)
    c.rect(cx - neck_w * 0.55, H * 0.02, cx + neck_w * 0.55, top + 3, c.cap_c, 4)
    return _upright_label(c, bw, top)


def _spray(c: _Canvas, spec: dict) -> Box:
    s, H, cx = spec["shape"], c.H, c.cx
    bw, top, _, _, _ = _upright(c, s, 0.22)
    c.rect(cx - bw / 2, H * 0.02, cx + bw / 2, top + H * 0.06, c.cap_c, bw * 0.45)
    c.rect(cx - bw / 2, top + H * 0.04, cx + bw / 2, top + H * 0.065, (205, 205, 210))
    return _upright_label(c, bw, top)


def _stick(c: _Canvas, spec: dict) -> Box:
    s, H, cx = spec["shape"], c.H, c.cx
    bw, top, shoulder, _, _ = _upright(c, s, 0.02)
    c.rect(cx - bw / 2, top, cx + bw / 2, top + H * (0.22 + 0.1 * s[5]), c.cap_c, shoulder)
    top += H * (0.24 + 0.1 * s[5])
    return _upright_label(c, bw, top)


def _tube(c: _Canvas, spec: dict) -> Box:
    import cv2

    s, H, W, cx = spec["shape"], c.H, c.W, c.cx
    tw, bw = W * (0.82 + 0.16 * s[0]), W * (0.42 + 0.2 * s[1])
    cap_top = H * (0.82 - 0.08 * s[2])
    c.poly([[cx - tw / 2, H * 0.06], [cx + tw / 2, H * 0.06], [cx + bw / 2, cap_top], [cx - bw / 2, cap_top]], c.body_c)
    c.rect(cx - tw / 2, H * 0.02, cx + tw / 2, H * 0.08, tuple(int(v * 0.85) for v in c.body_c))
    for x in np.linspace(cx - tw / 2 + 4, cx + tw / 2 - 4, 14):
        cv2.line(c.img, (int(x), int(H * 0.025)), (int(x), int(H * 0.075)), tuple(int(v * 0.7) for v in c.body_c), 1)
    c.rect(cx - bw * 0.45, cap_top, cx + bw * 0.45, H - 1, c.cap_c, 6 * s[3])
    return (int(cx - tw * 0.36), int(H * 0.14), int(cx + tw * 0.36), int(H * 0.62))


def _lipstick(c: _Canvas, spec: dict) -> Box:
    s, H, W, cx = spec["shape"], c.H, c.W, c.cx
    bw = W * (0.5 + 0.3 * s[0])
    base_top = H * (0.45 + 0.1 * s[1])
    c.rect(cx - bw / 2, base_top, cx + bw / 2, H - 1, c.cap_c, 4)
    c.rect(cx - bw * 0.42, base_top - H * 0.1, cx + bw * 0.42, base_top + 2, (212, 175, 90) if s[2] < 0.5
           else (200, 200, 205))
    bullet_w = bw * 0.72
    c.poly([[cx - bullet_w / 2, base_top - H * 0.1], [cx + bullet_w / 2, base_top - H * 0.1],
            [cx + bullet_w / 2, H * 0.12], [cx - bullet_w / 2, H * 0.22]], c.shade_c)
    return (int(cx - bw * 0.4), int(base_top + H * 0.05), int(cx + bw * 0.4), H - 10)


def _jar(c: _Canvas, spec: dict) -> Box:
    import cv2

    s, H, W, cx = spec["shape"], c.H, c.W, c.cx
    bw = W * (0.7 + 0.25 * s[0])
    lid = H * (0.28 + 0.15 * s[1])
    c.rect(cx - bw / 2, lid - 4, cx + bw / 2, H - 1, c.body_c, 10 * s[2] + 2)
    c.rect(cx - bw / 2 - 3, H * 0.03, cx + bw / 2 + 3, lid, c.cap_c, 6)
    for x in np.linspace(cx - bw / 2, cx + bw / 2, 40):
        cv2.line(c.img, (int(x), int(H * 0.05)), (int(x), int(lid - 3)), tuple(int(v * 0.82) for v in c.cap_c), 1)
    return (int(cx - bw * 0.4), int(lid + (H - lid) * 0.12), int(cx + bw * 0.4), int(H - (H - lid) * 0.12))


def _compact(c: _Canvas, spec: dict) -> Box:
    import cv2

    s, H, W, cx = spec["shape"], c.H, c.W, c.cx
    r = int(min(H, W) * 0.48)
    if s[0] < 0.6:
        c.disc((int(cx), H // 2), r, c.cap_c)
        cv2.circle(c.img, (int(cx), H // 2), int(r * 0.86), c.body_c, -1, cv2.LINE_AA)
    else:
        c.rect(cx - r, H / 2 - r, cx + r, H / 2 + r, c.cap_c, r * 0.3)
        c.rect(cx - r * 0.86, H / 2 - r * 0.86, cx + r * 0.86, H / 2 + r * 0.86, c.body_c, r * 0.25)
    cv2.circle(c.img, (int(cx + r * 0.45), int(H / 2 + r * 0.45)), int(r * 0.2), c.shade_c, -1, cv2.LINE_AA)
    return (int(cx - r * 0.55), int(H / 2 - r * 0.5), int(cx + r * 0.55), int(H / 2 + r * 0.3))


def _palette(c: _Canvas, spec: dict) -> Box:
    import cv2

    s, H, W = spec["shape"], c.H, c.W
    c.rect(4, 8, W - 4, H - 8, c.cap_c, 10)
    rows, cols = 2 + int(s[0] * 2), 3 + int(s[1] * 3)
    gx0, gy0, gx1, gy1 = 16, int(H * 0.34), W - 16, H - 20
    pw, ph = (gx1 - gx0) / cols, (gy1 - gy0) / rows
    for i in range(rows):
        for j in range(cols):
            hue = spec["shade"][0] + (i * cols + j) * (12 + 25 * s[2])
            pan = hsv_colour(hue, spec["shade"][1] * (0.5 + 0.5 * ((i + j) % 2)), spec["shade"][2] + 0.1 * (j % 3) - 0.1)
            cv2.rectangle(c.img, (int(gx0 + j * pw + 3), int(gy0 + i * ph + 3)),
                          (int(gx0 + (j + 1) * pw - 3), int(gy0 + (i + 1) * ph - 3)), pan, -1)
    return (24, 14, W - 24, int(H * 0.3))


# category (see CATEGORIES) -> drawer
DRAWERS: dict[str, Callable[[_Canvas, dict], Box]] = {
    "bottle": _bottle, "pump": _pump, "dropper": _dropper, "tube": _tube, "jar": _jar, "compact": _compact,
    "lipstick": _lipstick, "nail": _nail, "perfume": _perfume, "palette": _palette, "spray": _spray, "stick": _stick,
}
VERTICAL_LABELS = ("lipstick",)  # the label's lettering runs along the case
NO_BAND_LABELS = ("lipstick", "tube")  # labels printed straight on, never a wrapped band


def product_sprite(spec: dict, hand: Handheld | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Front view of a product: RGB (H, W, 3) uint8 and coverage (H, W) float32 in [0, 1].

    ``hand``: the package as photographed in a hand rather than listed (curved, softer, glossy, with a
    sticker; :mod:`.handheld`).
    """
    c = _Canvas(spec)
    body = DRAWERS[spec["category"]](c, spec)
    if spec["category"] in VERTICAL_LABELS:
        spec = {**spec, "vertical": True}
    img = _decorate(c, spec, body)
    _put_label(img, c, spec, body)
    if hand is not None:
        img = hand.on_surface(img, c.alpha, body)
    # shading: a cylinder lit from one side, or a flat top lit from one corner
    xs = np.linspace(0.0, 1.0, c.W, dtype=np.float32)
    if spec["top_view"]:
        ys = np.linspace(0.0, 1.0, c.H, dtype=np.float32)
        light = 1.08 - 0.2 * (xs[None, :] + ys[:, None]) / 2
    else:
        light = (0.72 + 0.36 * np.sin(np.pi * xs) + 0.25 * np.exp(-((xs - 0.3) / 0.06) ** 2))[None, :]
    out = np.clip(img.astype(np.float32) * light[..., None], 0, 255).astype(np.uint8)
    if hand is not None:
        out = hand.on_light(out, c.alpha, spec["top_view"])
    return out, c.alpha.astype(np.float32) / 255.0


def _decorate(c: _Canvas, spec: dict, body: Box) -> np.ndarray:
    """The drawn sprite with the family's gradient, second tone, graphics and pattern on its body."""
    img, H, body_c = c.img, c.H, c.body_c
    mask = c.alpha > 0
    if spec["gradient"] is not None:
        t = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
        fade = np.asarray(body_c, np.float32) * (1 - t) + np.asarray(hsv_colour(*spec["gradient"]), np.float32) * t
        plain = np.all(img == np.asarray(body_c, np.uint8), axis=2)
        img = np.where(plain[..., None], np.broadcast_to(fade.astype(np.uint8), img.shape), img)
    if spec["two_tone"] is not None:
        lower = np.zeros_like(mask)
        lower[int(spec["two_tone"] * H):] = True
        img[lower & np.all(img == np.asarray(body_c, np.uint8), axis=2)] = hsv_colour(*spec["accent"])
    on_body = mask.copy()  # below the cap or lid, where packaging graphics go
    on_body[: max(0, int(body[1] - 0.1 * H))] = False
    if spec["art_on_body"] and not spec["top_view"]:
        layer = img.copy()
        draw_art(layer, spec["art"])
        img = np.where(on_body[..., None], layer, img)
    if spec["pattern"] != "none" and not spec["pattern_on_label"] and not spec["top_view"]:
        layer = img.copy()
        tint = tuple(int(0.65 * b + 0.35 * a) for b, a in zip(body_c, hsv_colour(*spec["accent"])))
        draw_pattern(layer, spec["pattern"], tint, spec["density"], spec["phase"])
        img = np.where(on_body[..., None], layer, img)
    return img


def _put_label(img: np.ndarray, c: _Canvas, spec: dict, body: Box) -> None:
    """Put the label on ``img`` in place: printed straight on the body, a band, a panel or an oval."""
    import cv2

    x0, y0, x1, y1 = body
    if x1 - x0 <= 8 or y1 - y0 <= 8:
        return
    if spec["label_kind"] == "none" or spec["top_view"]:
        top_c = c.body_c if not spec["top_view"] else tuple(int(v) for v in img[(y0 + y1) // 2, (x0 + x1) // 2])
        label = render_label({**spec, "pattern_on_label": False}, x1 - x0, y1 - y0, top_c)
        region = img[y0:y1, x0:x1]
        ink = np.any(label != np.asarray(top_c, np.uint8), axis=2)
        region[ink] = label[ink]
        return
    lt, lh = spec["label_box"]
    if spec["label_kind"] == "band" and spec["category"] not in NO_BAND_LABELS:
        ly0, ly1 = int(y0 + (y1 - y0) * lt * 0.5), int(y0 + (y1 - y0) * min(1.0, lt * 0.5 + lh))
        lx0, lx1 = x0 - int(0.08 * (x1 - x0)), x1 + int(0.08 * (x1 - x0))
    else:
        ly0, ly1, lx0, lx1 = y0, y1, x0, x1
    label = render_label(spec, lx1 - lx0, ly1 - ly0, None)
    if spec["label_kind"] == "oval":
        lmask = np.zeros(label.shape[:2], np.uint8)
        cv2.ellipse(lmask, ((lx1 - lx0) // 2, (ly1 - ly0) // 2), ((lx1 - lx0) // 2, (ly1 - ly0) // 2),
                    0, 0, 360, 255, -1, cv2.LINE_AA)
        region = img[ly0:ly1, lx0:lx1]
        region[lmask > 0] = label[lmask > 0]
    else:
        mask = c.alpha > 0
        img[ly0:ly1, lx0:lx1] = np.where(mask[ly0:ly1, lx0:lx1, None], label, img[ly0:ly1, lx0:lx1])


def box_sprite(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """The product's retail box: a cuboid in the family colours with the same label artwork."""
    import cv2

    H, W, d = 300, 150, 30
    img = np.zeros((H + d, W + d, 3), np.uint8)
    alpha = np.zeros((H + d, W + d), np.float32)
    c = hsv_colour(*spec["body"])
    cv2.fillPoly(img, [np.array([[0, d], [d, 0], [W + d, 0], [W, d]], np.int32)], tuple(int(v * 0.9) for v in c))
    cv2.fillPoly(img, [np.array([[W, d], [W + d, 0], [W + d, H], [W, H + d]], np.int32)],
                 tuple(int(v * 0.7) for v in c))
    img[d:, :W] = c
    img[d + 40:d + H - 40, 10:W - 10] = render_label(spec, W - 20, H - 80, None)
    cv2.fillPoly(alpha, [np.array([[0, d], [d, 0], [W + d, 0], [W + d, H], [W, H + d], [0, H + d]], np.int32)], 1.0)
    return img, alpha
