"""Packaging artwork of the demo's products: lettering, logos, patterns, bold graphics and the label itself.

Everything here paints onto a plain RGB array in place (or returns one, for :func:`render_label`); where on a
product it goes is :mod:`.drawing`'s business.
"""
from __future__ import annotations

import numpy as np

from bpcr.demo.catalogue import hsv_colour


def fit_text(img: np.ndarray, text: str, box: tuple[int, int, int, int], font: int, thick: int,
              colour: tuple[int, int, int]) -> None:
    """Draw ``text`` centred in ``box`` (x0, y0, x1, y1), as large as fits."""
    import cv2

    x0, y0, x1, y1 = box
    if x1 - x0 < 4 or y1 - y0 < 4 or not text:
        return
    (tw, th), base = cv2.getTextSize(text, font, 1.0, thick)
    scale = min((x1 - x0) / max(tw, 1), (y1 - y0) / max(th + base, 1))
    t = max(1, int(round(thick * min(scale, 1.5))))
    (tw, th), base = cv2.getTextSize(text, font, scale, t)
    org = (int(x0 + (x1 - x0 - tw) / 2), int(y0 + (y1 - y0 + th - base) / 2))
    cv2.putText(img, text, org, font, scale, colour, t, cv2.LINE_AA)


def draw_pattern(img: np.ndarray, kind: str, colour: tuple[int, int, int], density: float, phase: float) -> None:
    import cv2

    h, w = img.shape[:2]
    step = max(4, int(round(min(h, w) / density * 2)))
    off = int(phase * step)
    if kind == "stripes":
        for y in range(-step + off, h, step):
            cv2.rectangle(img, (0, y), (w, y + max(1, step // 3)), colour, -1)
    elif kind == "dots":
        for y in range(off // 2, h + step, step):
            for x in range((y // step % 2) * step // 2, w + step, step):
                cv2.circle(img, (x, y), max(1, step // 4), colour, -1, cv2.LINE_AA)
    elif kind == "diagonal":
        for x in range(-h + off, w + h, step):
            cv2.line(img, (x, 0), (x + h, h), colour, max(1, step // 4), cv2.LINE_AA)
    elif kind == "waves":
        xs = np.arange(0, w + 4, 3)
        for y in range(off, h + step, step):
            ys = y + np.sin(xs / step * 2.0 + phase * 6.0) * step / 3
            cv2.polylines(img, [np.stack([xs, ys], 1).astype(np.int32)], False, colour, max(1, step // 5), cv2.LINE_AA)
    elif kind == "grid":
        for v in range(off, max(h, w), step):
            cv2.line(img, (v, 0), (v, h), colour, 1)
            cv2.line(img, (0, v), (w, v), colour, 1)
    elif kind == "rings":
        for r in range(step // 2 + off, max(h, w), step):
            cv2.circle(img, (w // 2, h // 2), r, colour, max(1, step // 5), cv2.LINE_AA)


def _logo(img: np.ndarray, kind: str, centre: tuple[int, int], r: int, colour: tuple[int, int, int],
          letter: str) -> None:
    import cv2

    cx, cy = centre
    if r < 3 or kind == "none":
        return
    if kind == "ring":
        cv2.circle(img, centre, r, colour, max(1, r // 4), cv2.LINE_AA)
        cv2.circle(img, centre, max(1, r // 3), colour, -1, cv2.LINE_AA)
    elif kind == "diamond":
        pts = np.array([[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]], np.int32)
        cv2.polylines(img, [pts], True, colour, max(1, r // 5), cv2.LINE_AA)
    elif kind == "star":
        ang = np.arange(10) * np.pi / 5 - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    elif kind == "leaf":
        cv2.ellipse(img, (cx - r // 3, cy), (r // 2, r), 25, 0, 360, colour, -1, cv2.LINE_AA)
        cv2.ellipse(img, (cx + r // 3, cy), (r // 2, r), -25, 0, 360, colour, -1, cv2.LINE_AA)
    elif kind == "monogram":
        cv2.circle(img, centre, r, colour, max(1, r // 6), cv2.LINE_AA)
        fit_text(img, letter, (cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2), 4, 2, colour)


def draw_art(img: np.ndarray, art: list[list[float]]) -> None:
    """Draw packaging graphics given in relative coordinates (see :func:`.catalogue._art`)."""
    import cv2

    h, w = img.shape[:2]
    for kind, ax, ay, size, hue, sat, val in art:
        colour, r = hsv_colour(hue, sat, val), max(3, int(size * min(w, h)))
        centre = (int(ax * w), int(ay * h))
        if kind == 0:
            cv2.circle(img, centre, r, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (centre[0] - r, centre[1] - r // 2), (centre[0] + r, centre[1] + r // 2), colour, -1)
        elif kind == 2:
            pts = np.array([[centre[0], centre[1] - r], [centre[0] + r, centre[1] + r], [centre[0] - r, centre[1] + r]])
            cv2.fillPoly(img, [pts.astype(np.int32)], colour, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (0, centre[1] - r // 3), (w, centre[1] + r // 3), colour, -1)


def _contrast(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (20, 20, 24) if sum(rgb) > 380 else (245, 242, 236)


def render_label(spec: dict, w: int, h: int, background: tuple[int, int, int] | None) -> np.ndarray:
    """The label artwork (graphics, brand, logo, line, shade/variant, size) as an (h, w, 3) image.

    ``spec["print"]``, when present, is a print revision (:func:`.handheld.print_revision`): the same design with
    its rows, margins, logo, lettering and size text a little different, and perhaps a new claim.
    """
    if spec["vertical"] and h > w * 1.6:
        return np.ascontiguousarray(np.rot90(render_label({**spec, "vertical": False}, h, w, background)))
    revision = spec.get("print") or {}
    bg = background if background is not None else hsv_colour(*spec["label"])
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    ink = _contrast(bg)
    accent = hsv_colour(*spec["accent"])
    if spec["pattern"] != "none" and spec["pattern_on_label"]:
        tint = tuple(int(0.8 * c + 0.2 * a) for c, a in zip(bg, accent))
        draw_pattern(img, spec["pattern"], tint, spec["density"], spec["phase"])
    if not spec["art_on_body"] or spec["top_view"]:
        draw_art(img, spec["art"])
    brand_font = revision.get("font", spec["font"])
    font = brand_font | (16 if spec["italic"] else 0)
    m = max(2, int(w // 14 * revision.get("margin", 1.0)))
    rows = [0.0, 0.3, 0.62, 0.8, 1.0] if h > 0.6 * w else [0.0, 0.0, 0.62, 0.82, 1.0]
    if revision:
        moved = [r + d for r, d in zip(rows[1:4], revision["rows"])]
        rows = [0.0, max(0.0, moved[0]) if rows[1] > 0 else 0.0, *moved[1:], 1.0]
    y = [int(r * h) for r in rows]
    if y[1] > y[0]:
        scale, dx, dy = revision.get("logo", (1.0, 0.0, 0.0))
        _logo(img, spec["logo"], (int(w // 2 + dx * w), int((y[0] + y[1]) // 2 + dy * h)),
              int(min(w * 0.18, (y[1] - y[0]) * 0.38) * scale), accent, spec["brand"][0])
    brand = spec["brand"].split(" ")[0]
    thickness = min(4, max(1, spec["thickness"] + revision.get("thickness", 0)))
    fit_text(img, brand if revision.get("title_case") else brand.upper(), (m, y[1] + 2, w - m, y[2]), font,
              thickness, ink)
    fit_text(img, spec["line"], (m + w // 8, y[2], w - m - w // 8, y[3]), brand_font, 1, ink)
    size = f"{spec['size']:g} {spec['unit']}"
    if revision.get("size_text"):
        size = f"{spec['size']:g}{spec['unit'].upper()}" + (f" e {spec['size'] / 29.5735:.1f} FL OZ"
                                                            if spec["unit"] == "ml" else "")
    fit_text(img, f"{spec['variant']}  {size}", (m + w // 6, y[3], w - m - w // 6, y[4] - 2), 0, 1, ink)
    if revision.get("claim"):
        fit_text(img, revision["claim"], (m, int(h * 0.01), w // 2, max(int(h * 0.09), y[1] // 3)), 0, 1, accent)
    return img
