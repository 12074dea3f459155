"""A deterministic synthetic miniature of Perfect-500K (the bundled demo data).

Model of the task. Products come in *families* that share a shape, a colour
scheme, a label layout, a pattern and a product line (a lipstick range, a serum
line); the members of a family differ in brand text, shade or variant. A few
hundred *target* products each get 1-6 clean shop images (plain or studio
background, varied angle, scale and crop) and are the subject of at most one
query photo each. The database is padded with distractor images of other
products: a quarter of them siblings of a target (hard negatives that mostly
fine detail -- text, logo, hue -- tells apart), the rest products of unrelated
families. Query photos put the product in clutter with perspective, rotation,
occlusion, lighting, colour casts, blur, noise and low JPEG quality; about one
in ten is stored EXIF-rotated like a phone photo. Every database image has a
shop-style description (brand, line, type, shade, size) that varies between
listings of one product, a few in Chinese, Korean, French or Spanish. A handful
of deliberately broken or unusual files (zero bytes, truncated, PNG behind a
``.jpg`` name, CMYK, 16-bit, palette, grayscale, a decompression bomb) are
always distractors, never relevant.

Every file depends only on ``seed`` and its own index: image ``i`` of kind ``k``
draws from ``numpy.random.default_rng([seed, k, i])``, so the worker count and
scheduling never change a byte. The difficulty knobs below were set so that a
plain global descriptor (ImageNet EfficientNet-Lite0, MAC or GeM, 224 px)
reaches a mAP@7 like published global descriptors on the real data, with the
right product usually in its top 100 (room for re-ranking and textual
refinement to show what they add).
"""
from __future__ import annotations

import colorsys
import csv
import io
import math
import multiprocessing
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadInput
from .fileio import atomic_path, write_text_atomic
from .gt import write_ground_truth

# --- difficulty knobs ------------------------------------------------------------
# Calibrated with ImageNet EfficientNet-Lite0 at 224 px, MAC / GeM, cosine, on the
# default size: mAP@7 0.22 / 0.23 (seed 0) and 0.27 / 0.28 (seed 1), the right
# product among the top 100 for ~93% of queries; a third of the wrong top-7 slots go
# to family siblings, each ~200x likelier to land there than an unrelated image.
# Published global descriptors on the real Perfect-500K score 0.22-0.33 (seeds/000
# Tables 1-4); SIFT re-ranking adds 0.03-0.10 there.
TARGETS_PER_FAMILY = ((1, 2, 3), (0.7, 0.2, 0.1))  # some targets are each other's hard negatives
SHOP_IMAGES_PER_PRODUCT = ((1, 2, 3, 4, 5, 6), (0.2, 0.25, 0.2, 0.15, 0.1, 0.1))  # challenge: 1-6 relevant
DISTRACTOR_IMAGES_PER_PRODUCT = (1, 4)  # distractor products have several listings too
HARD_NEGATIVE_SHARE = 0.25  # of distractor images, siblings of a target; more and global descriptors drown
SAME_BRAND_SIBLING_SHARE = 0.5  # shade variants of one brand vs. look-alikes of other brands
SIBLING_HUE_SHIFT = (20.0, 60.0)  # degrees; siblings stay close in colour but not interchangeable
ART_SHAPES = (2, 6)  # bold packaging graphics: what makes unrelated products differ at a glance
ART_ON_BODY_SHARE = 0.6  # graphics across the whole body, not only on the label
TWO_TONE_SHARE = 0.35  # bodies in two colours, another cue that tells families apart
GRADIENT_SHARE = 0.35  # bodies fading from one colour to another
SHOP_SCALE = (0.6, 0.95)  # product's longer side / image's shorter side in shop images
SHOP_CLOSEUP_PROB = 0.1  # listings often include a zoomed label shot
SHOP_WITH_BOX_PROB = 0.12  # product shown beside its box
QUERY_SCALE = (0.65, 0.95)  # product's longer side / image side along it; smaller and clutter dominates
QUERY_ROTATION = 12.0  # degrees, in-plane; hand-held phones are rarely level
QUERY_PERSPECTIVE = 0.05  # corner jitter as a share of the product's size
CLUTTER_OBJECTS = (0, 1)  # other products beside the target; each costs global descriptors ~0.02 mAP
OCCLUSION_PROB = 0.25  # share of queries with a hand or another product in front
OCCLUSION_AREA = (0.05, 0.25)  # share of the product's box covered
QUERY_BLUR_SIGMA = (0.0, 1.0)  # defocus; stronger erases the label text that SIFT needs
QUERY_NOISE_SIGMA = (1.0, 4.0)  # sensor noise, grey levels
QUERY_COLOUR_CAST = 0.1  # max per-channel gain deviation (white balance)
QUERY_JPEG_QUALITY = (40, 85)  # phone uploads are recompressed
BACKGROUND_BLUR = (0.8, 3.0)  # sigma; depth of field behind the product
EXIF_ROTATED_SHARE = 0.1
NON_ENGLISH_SHARE = 0.07  # listings in Chinese, Korean, French or Spanish
MISSING_DESCRIPTION_SHARE = 0.01
EMPTY_DESCRIPTION_SHARE = 0.005
LONG_SIDE = (256, 512)

# RNG stream kinds: numpy.random.default_rng([seed, KIND, index...]).
_PLAN, _FAMILY, _PRODUCT, _SHOP, _DISTRACTOR, _QUERY, _TEXT, _MESSY = range(8)

# name -> (extension, usable after careful decoding)
MESSY_KINDS = {
    "zero_byte": (".jpg", False),
    "truncated_jpeg": (".jpg", False),
    "png_named_jpg": (".jpg", True),
    "cmyk_jpeg": (".jpg", True),
    "gray16_png": (".png", True),
    "palette_png": (".png", True),
    "gray_jpeg": (".jpg", True),
    "rgba_png": (".png", True),
    "exif_rotated_jpeg": (".jpg", True),
    "decompression_bomb": (".png", False),
}
BOMB_SIDE = 15000  # 225 Mpx: beyond PIL's default bomb error limit (2 x 89.5 Mpx)


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate_demo` wrote."""

    out: Path
    database_dir: Path
    queries_dir: Path
    descriptions_csv: Path
    ground_truth_csv: Path
    seed: int
    n_products: int  # target products (each with shop images; at most one query each)
    n_database: int  # database files, messy ones included
    n_target_images: int  # database images relevant to some query
    n_distractor_images: int  # the rest, messy ones included
    n_hard_negative_images: int  # distractor images of a target's family sibling
    n_queries: int
    exif_rotated_queries: tuple[str, ...]
    messy: dict[str, str] = field(default_factory=dict)  # database ID -> MESSY_KINDS name
    unusable: tuple[str, ...] = ()  # messy IDs that a careful reader must reject
    missing_descriptions: tuple[str, ...] = ()
    bytes_on_disk: int = 0
    seconds: float = 0.0


# --- vocabulary ---------------------------------------------------------------
# type key -> (English, Chinese, Korean, French, Spanish)
TYPES = {
    "toner": ("toner", "爽肤水", "토너", "lotion tonique", "tónico"),
    "cleanser": ("foaming cleanser", "洁面乳", "클렌저", "nettoyant moussant", "limpiador"),
    "shampoo": ("shampoo", "洗发水", "샴푸", "shampooing", "champú"),
    "body_wash": ("body wash", "沐浴露", "바디워시", "gel douche", "gel de ducha"),
    "micellar": ("micellar water", "卸妆水", "클렌징 워터", "eau micellaire", "agua micelar"),
    "foundation": ("liquid foundation", "粉底液", "파운데이션", "fond de teint", "base de maquillaje"),
    "serum": ("serum", "精华液", "세럼", "sérum", "sérum"),
    "body_lotion": ("body lotion", "身体乳", "바디로션", "lait corporel", "loción corporal"),
    "face_oil": ("face oil", "面部精华油", "페이스 오일", "huile visage", "aceite facial"),
    "ampoule": ("ampoule", "安瓶精华", "앰플", "ampoule", "ampolla"),
    "hand_cream": ("hand cream", "护手霜", "핸드크림", "crème mains", "crema de manos"),
    "sunscreen": ("sunscreen SPF50", "防晒霜", "선크림", "crème solaire SPF50", "protector solar SPF50"),
    "bb_cream": ("BB cream", "BB霜", "비비크림", "BB crème", "crema BB"),
    "face_cream": ("face cream", "面霜", "크림", "crème visage", "crema facial"),
    "eye_cream": ("eye cream", "眼霜", "아이크림", "crème contour des yeux", "contorno de ojos"),
    "hair_mask": ("hair mask", "发膜", "헤어 마스크", "masque capillaire", "mascarilla capilar"),
    "powder": ("pressed powder", "粉饼", "팩트", "poudre compacte", "polvo compacto"),
    "cushion": ("cushion foundation", "气垫粉底", "쿠션 파운데이션", "fond de teint cushion", "base cushion"),
    "blush": ("blush", "腮红", "블러셔", "blush", "rubor"),
    "lipstick": ("lipstick", "口红", "립스틱", "rouge à lèvres", "labial"),
    "lip_balm": ("lip balm", "润唇膏", "립밤", "baume à lèvres", "bálsamo labial"),
    "nail": ("nail polish", "指甲油", "네일 폴리시", "vernis à ongles", "esmalte de uñas"),
    "edp": ("eau de parfum", "香水", "오드퍼퓸", "eau de parfum", "eau de parfum"),
    "eyeshadow": ("eyeshadow palette", "眼影盘", "아이섀도우 팔레트", "palette de fards à paupières", "paleta de sombras"),
    "contour": ("contour palette", "修容盘", "컨투어 팔레트", "palette contouring", "paleta de contorno"),
    "hairspray": ("hairspray", "定型喷雾", "헤어스프레이", "laque", "laca"),
    "deo_spray": ("deodorant spray", "止汗喷雾", "데오드란트 스프레이", "déodorant spray", "desodorante en spray"),
    "deo_stick": ("deodorant stick", "止汗膏", "데오드란트 스틱", "déodorant stick", "desodorante en barra"),
}
LANGS = ("en", "zh", "ko", "fr", "es")

# category -> (type keys, unit, sizes, tall sprite?, shade-named variants?)
CATEGORIES = {
    "bottle": (("toner", "cleanser", "shampoo", "body_wash", "micellar"), "ml", (100, 150, 200, 250, 400), True, False),
    "pump": (("foundation", "serum", "body_lotion", "cleanser"), "ml", (30, 50, 100, 200, 300), True, False),
    "dropper": (("serum", "face_oil", "ampoule"), "ml", (15, 20, 30, 50), True, False),
    "tube": (("hand_cream", "sunscreen", "bb_cream", "cleanser"), "ml", (30, 50, 75, 100, 150), True, False),
    "jar": (("face_cream", "eye_cream", "hair_mask"), "ml", (15, 30, 50, 200), False, False),
    "compact": (("powder", "cushion", "blush"), "g", (8, 10, 12, 15), False, True),
    "lipstick": (("lipstick", "lip_balm"), "g", (3, 3.5, 4), True, True),
    "nail": (("nail",), "ml", (8, 10, 12, 15), True, True),
    "perfume": (("edp",), "ml", (30, 50, 75, 100), True, False),
    "palette": (("eyeshadow", "contour"), "g", (6, 9, 12, 18), False, True),
    "spray": (("hairspray", "deo_spray"), "ml", (150, 200, 250, 300), True, False),
    "stick": (("deo_stick", "lip_balm"), "g", (4, 40, 50, 75), True, False),
}
CATEGORY_WEIGHTS = (0.13, 0.12, 0.08, 0.1, 0.1, 0.08, 0.09, 0.06, 0.07, 0.06, 0.06, 0.05)

SYLLABLES = ("lu", "mi", "ra", "ve", "el", "so", "na", "ki", "ta", "or", "bel", "cla", "dia", "fle", "glo",
             "iri", "jo", "ka", "le", "mo", "nu", "pa", "qui", "ro", "sa", "ti", "vi", "xa", "ze", "ly", "an", "ys")
BRAND_SUFFIX = ("", "", "", "", " Paris", " Lab", " Beauty", " Cosmetics", " Skin", " & Co", " Seoul", " NYC")
LINE_A = ("Hydra", "Velvet", "Pure", "Glow", "Silk", "Radiant", "Aqua", "Matte", "Luminous", "Vital", "Derma",
          "Bio", "Ultra", "Soft", "Nude", "Rose", "Youth", "Deep", "Fresh", "Crystal", "Cica", "Peptide")
LINE_B = ("Boost", "Matte", "Radiance", "Balance", "Repair", "Bloom", "Essence", "Perfect", "Care", "Touch", "Lift",
          "Shine", "Veil", "Dew", "Whip", "Renew", "Calm", "Shield", "Bright", "Silk")
SHADES = ("Rose", "Nude", "Coral", "Ruby", "Berry", "Mocha", "Ivory", "Beige", "Sand", "Honey", "Peach", "Plum",
          "Cherry", "Mauve", "Caramel", "Porcelain", "Amber", "Fuchsia", "Crimson", "Blush", "Taupe", "Cocoa")
VARIANTS = ("Original", "Sensitive", "Fragrance Free", "Lavender", "Green Tea", "Vitamin C", "Hyaluronic", "Rose",
            "Oil Control", "Moisture", "Brightening", "Anti-Aging", "Citrus", "Aloe", "Charcoal", "Ceramide")
MARKETING = ("NEW", "best seller", "long-lasting", "hydrating", "gift set", "limited edition", "100% authentic",
             "free shipping", "travel size", "dermatologist tested", "cruelty free", "vegan", "hot sale", "2 pack")
MARKETING_XX = {"zh": ("新品", "正品", "热卖"), "ko": ("정품", "신상", "무료배송"), "fr": ("nouveau", "authentique"),
                "es": ("nuevo", "original")}
FONTS = (0, 2, 3, 4, 6, 7)  # cv2 Hershey: simplex, duplex, complex, triplex, script simplex, script complex


# --- small helpers -------------------------------------------------------------
def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _weighted(rng: np.random.Generator, spec: tuple[tuple, tuple]) -> Any:
    values, weights = spec
    return values[int(rng.choice(len(values), p=np.asarray(weights) / sum(weights)))]


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _scheme_colour(rng: np.random.Generator) -> list[float]:
    """An HSV triple from one of the looks shop shelves are full of."""
    h = float(rng.uniform(0, 360))
    look = _pick(rng, ("pastel", "vivid", "dark", "white", "black", "metal", "vivid", "vivid", "pastel"))
    if look == "pastel":
        return [h, float(rng.uniform(0.15, 0.4)), float(rng.uniform(0.85, 1.0))]
    if look == "vivid":
        return [h, float(rng.uniform(0.55, 0.95)), float(rng.uniform(0.55, 0.95))]
    if look == "dark":
        return [h, float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.12, 0.35))]
    if look == "white":
        return [h, float(rng.uniform(0.0, 0.06)), float(rng.uniform(0.92, 1.0))]
    if look == "black":
        return [h, 0.0, float(rng.uniform(0.04, 0.12))]
    return [float(rng.choice([45.0, 30.0, 0.0])), float(rng.uniform(0.0, 0.45)), float(rng.uniform(0.6, 0.85))]


def _brand(rng: np.random.Generator) -> str:
    name = "".join(_pick(rng, SYLLABLES) for _ in range(int(rng.integers(2, 4))))
    return name.capitalize() + _pick(rng, BRAND_SUFFIX)


# --- products -----------------------------------------------------------------
def _art(rng: np.random.Generator) -> list[list[float]]:
    """Packaging graphics: a few bold shapes in a family palette, [kind, x, y, size, h, s, v] each."""
    hue = float(rng.uniform(0, 360))
    shapes = []
    for _ in range(int(rng.integers(ART_SHAPES[0], ART_SHAPES[1] + 1))):
        shapes.append([float(rng.integers(0, 4)), *(float(v) for v in rng.uniform(0, 1, 2)),
                       float(rng.uniform(0.15, 0.6)), hue + float(_pick(rng, (0, 30, 180, 210, -30))),
                       float(rng.uniform(0.35, 0.95)), float(rng.uniform(0.45, 1.0))])
    return shapes


def _family(seed: int, family: int) -> dict:
    """Everything the members of one family share (shape, colours, layout, line)."""
    rng = _rng(seed, _FAMILY, family)
    names = list(CATEGORIES)
    category = names[int(rng.choice(len(names), p=np.asarray(CATEGORY_WEIGHTS) / sum(CATEGORY_WEIGHTS)))]
    types, unit, sizes, tall, shaded = CATEGORIES[category]
    label_hsv = _pick(rng, ([0.0, 0.0, 1.0], [40.0, 0.12, 0.96], [0.0, 0.0, 0.08], None, None))
    return {
        "category": category,
        "type": _pick(rng, types),
        "unit": unit,
        "size": _pick(rng, sizes),
        "tall": tall,
        "shaded": shaded,
        "line": f"{_pick(rng, LINE_A)} {_pick(rng, LINE_B)}",
        "brand": _brand(rng),
        "shape": [float(x) for x in rng.uniform(0.0, 1.0, 8)],
        "body": _scheme_colour(rng),
        "cap": _scheme_colour(rng) if rng.random() < 0.7 else None,
        "label": label_hsv if label_hsv is not None else _scheme_colour(rng),
        "accent": _scheme_colour(rng),
        "shade": [float(rng.uniform(0, 360)), float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.4, 0.9))],
        "label_box": [float(rng.uniform(0.15, 0.45)), float(rng.uniform(0.35, 0.8))],  # top, height (of body)
        "label_kind": _pick(rng, ("band", "panel", "panel", "oval", "none")),
        "vertical": bool(rng.random() < 0.2),
        "pattern": _pick(rng, ("none", "stripes", "dots", "diagonal", "waves", "grid", "rings", "none")),
        "pattern_on_label": bool(rng.random() < 0.5),
        "density": float(rng.uniform(6, 18)),
        "font": int(_pick(rng, FONTS)),
        "italic": bool(rng.random() < 0.25),
        "thickness": int(rng.integers(1, 4)),
        "logo": _pick(rng, ("ring", "diamond", "star", "leaf", "monogram", "none")),
        "glass": bool(rng.random() < 0.25),
        "top_view": category in ("compact", "palette"),
        "variant_offset": int(rng.integers(0, 1000)),
        "art": _art(rng),
        "two_tone": float(rng.uniform(0.45, 0.8)) if rng.random() < TWO_TONE_SHARE else None,
        "art_on_body": bool(rng.random() < ART_ON_BODY_SHARE),
        "gradient": _scheme_colour(rng) if rng.random() < GRADIENT_SHARE else None,
    }


def _product(seed: int, family: int, member: int) -> dict:
    """Member ``member`` of ``family``; member 0 is the family's base look."""
    spec = dict(_family(seed, family))
    spec["key"] = [family, member]
    rng = _rng(seed, _PRODUCT, family, member)
    # consecutive names from a family offset: no two members of a family share a shade or variant name
    names = SHADES if spec["shaded"] else VARIANTS
    spec["variant"] = names[(spec["variant_offset"] + member) % len(names)]
    if spec["shaded"]:
        spec["variant"] += f" {int(rng.integers(1, 60)) * 10 + int(rng.integers(0, 10)):03d}"
    spec["phase"] = float(rng.uniform(0, 1))
    if member > 0:
        shift = float(rng.uniform(*SIBLING_HUE_SHIFT)) * (1 if rng.random() < 0.5 else -1)
        if rng.random() < SAME_BRAND_SIBLING_SHARE:
            # a shade variant: same brand and layout, a different colour where the shade shows
            spec["shade"] = [float(rng.uniform(0, 360)), float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.4, 0.9))]
            spec["body"] = [spec["body"][0] + shift, spec["body"][1], spec["body"][2]]
            spec["art"] = [[*a[:4], a[4] + shift / 2, *a[5:]] for a in spec["art"]]
        else:
            # a look-alike of another brand: new name, logo and type face, near-identical colours
            spec["brand"] = _brand(rng)
            spec["logo"] = _pick(rng, ("ring", "diamond", "star", "leaf", "monogram", "none"))
            spec["font"] = int(_pick(rng, FONTS))
            spec["body"] = [spec["body"][0] + shift / 2, spec["body"][1], spec["body"][2]]
            if spec["cap"] is not None and rng.random() < 0.5:
                spec["cap"] = [spec["cap"][0] + shift, spec["cap"][1], spec["cap"][2]]
            if rng.random() < 0.5:
                spec["label"] = _scheme_colour(rng)
            else:
                spec["pattern"] = _pick(rng, ("none", "stripes", "dots", "diagonal", "waves", "grid", "rings"))
            spec["density"] *= float(rng.uniform(0.8, 1.25))
    return spec


# --- drawing --------------------------------------------------------------------
def _fit_text(img: np.ndarray, text: str, box: tuple[int, int, int, int], font: int, thick: int,
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


def _pattern(img: np.ndarray, kind: str, colour: tuple[int, int, int], density: float, phase: float) -> None:
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
        _fit_text(img, letter, (cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2), 4, 2, colour)


def _draw_art(img: np.ndarray, art: list[list[float]]) -> None:
    """Draw packaging graphics given in relative coordinates (see :func:`_art`)."""
    import cv2

    h, w = img.shape[:2]
    for kind, ax, ay, size, hue, sat, val in art:
        colour, r = _hsv(hue, sat, val), max(3, int(size * min(w, h)))
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


def _label(spec: dict, w: int, h: int, background: tuple[int, int, int] | None) -> np.ndarray:
    """The label artwork (graphics, brand, logo, line, shade/variant, size) as an (h, w, 3) image."""
    if spec["vertical"] and h > w * 1.6:
        return np.ascontiguousarray(np.rot90(_label({**spec, "vertical": False}, h, w, background)))
    bg = background if background is not None else _hsv(*spec["label"])
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    ink = _contrast(bg)
    accent = _hsv(*spec["accent"])
    if spec["pattern"] != "none" and spec["pattern_on_label"]:
        tint = tuple(int(0.8 * c + 0.2 * a) for c, a in zip(bg, accent))
        _pattern(img, spec["pattern"], tint, spec["density"], spec["phase"])
    if not spec["art_on_body"] or spec["top_view"]:
        _draw_art(img, spec["art"])
    font = spec["font"] | (16 if spec["italic"] else 0)
    m = max(2, w // 14)
    rows = [0.0, 0.3, 0.62, 0.8, 1.0] if h > 0.6 * w else [0.0, 0.0, 0.62, 0.82, 1.0]
    y = [int(r * h) for r in rows]
    if y[1] > y[0]:
        _logo(img, spec["logo"], (w // 2, (y[0] + y[1]) // 2), int(min(w * 0.18, (y[1] - y[0]) * 0.38)), accent,
              spec["brand"][0])
    _fit_text(img, spec["brand"].split(" ")[0].upper(), (m, y[1] + 2, w - m, y[2]), font, spec["thickness"], ink)
    _fit_text(img, spec["line"], (m + w // 8, y[2], w - m - w // 8, y[3]), spec["font"], 1, ink)
    size = f"{spec['size']:g} {spec['unit']}"
    _fit_text(img, f"{spec['variant']}  {size}", (m + w // 6, y[3], w - m - w // 6, y[4] - 2), 0, 1, ink)
    return img


def _sprite(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Front view of a product: RGB (H, W, 3) uint8 and coverage (H, W) float32 in [0, 1]."""
    import cv2

    tall = spec["tall"]
    H, W = (360, 170) if tall else (230, 300)
    s = spec["shape"]
    img = np.zeros((H, W, 3), np.uint8)
    alpha = np.zeros((H, W), np.uint8)
    body_c = _hsv(*spec["body"])
    cap_c = _hsv(*spec["cap"]) if spec["cap"] is not None else tuple(int(c * 0.55) for c in body_c)
    shade_c = _hsv(*spec["shade"])
    if spec["glass"] and spec["category"] in ("bottle", "dropper", "perfume", "nail"):
        body_c = tuple(int(0.45 * c + 0.55 * 235) for c in body_c)

    def rect(x0, y0, x1, y1, colour, radius=0):
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        r = int(min(radius, (x1 - x0) / 2, (y1 - y0) / 2))
        for target, value in ((img, colour), (alpha, 255)):
            if r <= 1:
                cv2.rectangle(target, (x0, y0), (x1, y1), value, -1, cv2.LINE_AA)
                continue
            cv2.rectangle(target, (x0 + r, y0), (x1 - r, y1), value, -1)
            cv2.rectangle(target, (x0, y0 + r), (x1, y1 - r), value, -1)
            for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
                cv2.circle(target, (cx, cy), r, value, -1, cv2.LINE_AA)

    def poly(points, colour):
        pts = np.asarray(points, np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        cv2.fillPoly(alpha, [pts], 255, cv2.LINE_AA)

    cx = W / 2
    cat = spec["category"]
    body = (0, 0, W, H)  # label area box on the body (x0, y0, x1, y1)
    if cat in ("bottle", "pump", "dropper", "perfume", "nail", "spray", "stick"):
        bw = W * (0.6 + 0.38 * s[0]) if cat not in ("dropper", "nail") else W * (0.55 + 0.3 * s[0])
        top = H * {"bottle": 0.18, "pump": 0.3, "dropper": 0.4, "perfume": 0.32, "nail": 0.5,
                   "spray": 0.22, "stick": 0.02}[cat] + H * 0.08 * s[1]
        shoulder = bw * (0.08 + 0.4 * s[2]) if cat != "perfume" else bw * 0.06 * s[2]
        rect(cx - bw / 2, top, cx + bw / 2, H - 1, body_c, shoulder)
        if cat == "perfume" and spec["glass"]:
            rect(cx - bw / 2 + 8, top + H * 0.12, cx + bw / 2 - 8, H - 9, shade_c, 4)
        if cat == "nail":
            rect(cx - bw / 2 + 5, top + 6, cx + bw / 2 - 5, H - 6, shade_c, shoulder * 0.8)
        neck_w = bw * (0.28 + 0.3 * s[3])
        cap_w = min(bw, neck_w * (1.1 + 0.5 * s[4]))
        if cat == "bottle":
            rect(cx - neck_w / 2, top - H * 0.05, cx + neck_w / 2, top + 4, body_c)
            rect(cx - cap_w / 2, H * 0.02, cx + cap_w / 2, top - H * 0.04, cap_c, cap_w * 0.5 * s[5])
        elif cat == "pump":
            rect(cx - neck_w / 2, top - H * 0.07, cx + neck_w / 2, top + 4, cap_c, 3)
            rect(cx - 4, H * 0.1, cx + 4, top - H * 0.06, (210, 210, 210))
            rect(cx - neck_w * 0.6, H * 0.04, cx + neck_w * 0.6 + W * 0.18, H * 0.11, cap_c, 5)
        elif cat == "dropper":
            rect(cx - neck_w / 2, top - H * 0.14, cx + neck_w / 2, top + 4, cap_c, 3)
            rect(cx - neck_w * 0.32, H * 0.03, cx + neck_w * 0.32, top - H * 0.12, (40, 36, 34), neck_w * 0.3)
        elif cat == "perfume":
            rect(cx - neck_w * 0.3, top - H * 0.06, cx + neck_w * 0.3, top + 4, (200, 200, 200))
            cw = bw * (0.35 + 0.5 * s[4])
            if s[5] < 0.4:
                cv2.circle(img, (int(cx), int(top - H * 0.16)), int(min(cw / 2, H * 0.1)), cap_c, -1, cv2.LINE_AA)
                cv2.circle(alpha, (int(cx), int(top - H * 0.16)), int(min(cw / 2, H * 0.1)), 255, -1, cv2.LINE_AA)
            else:
                rect(cx - cw / 2, H * 0.04, cx + cw / 2, top - H * 0.055, cap_c, 3)
        elif cat == "nail":
            rect(cx - neck_w * 0.55, H * 0.02, cx + neck_w * 0.55, top + 3, cap_c, 4)
        elif cat == "spray":
            rect(cx - bw / 2, H * 0.02, cx + bw / 2, top + H * 0.06, cap_c, bw * 0.45)
            rect(cx - bw / 2, top + H * 0.04, cx + bw / 2, top + H * 0.065, (205, 205, 210))
        elif cat == "stick":
            rect(cx - bw / 2, top, cx + bw / 2, top + H * (0.22 + 0.1 * s[5]), cap_c, shoulder)
            top += H * (0.24 + 0.1 * s[5])
        body = (int(cx - bw / 2 + bw * 0.08), int(top + (H - top) * 0.12), int(cx + bw / 2 - bw * 0.08), H - 8)
    elif cat == "tube":
        tw, bw = W * (0.82 + 0.16 * s[0]), W * (0.42 + 0.2 * s[1])
        cap_top = H * (0.82 - 0.08 * s[2])
        poly([[cx - tw / 2, H * 0.06], [cx + tw / 2, H * 0.06], [cx + bw / 2, cap_top], [cx - bw / 2, cap_top]], body_c)
        rect(cx - tw / 2, H * 0.02, cx + tw / 2, H * 0.08, tuple(int(c * 0.85) for c in body_c))
        for x in np.linspace(cx - tw / 2 + 4, cx + tw / 2 - 4, 14):
            cv2.line(img, (int(x), int(H * 0.025)), (int(x), int(H * 0.075)), tuple(int(c * 0.7) for c in body_c), 1)
        rect(cx - bw * 0.45, cap_top, cx + bw * 0.45, H - 1, cap_c, 6 * s[3])
        body = (int(cx - tw * 0.36), int(H * 0.14), int(cx + tw * 0.36), int(H * 0.62))
    elif cat == "lipstick":
        bw = W * (0.5 + 0.3 * s[0])
        base_top = H * (0.45 + 0.1 * s[1])
        rect(cx - bw / 2, base_top, cx + bw / 2, H - 1, cap_c, 4)
        rect(cx - bw * 0.42, base_top - H * 0.1, cx + bw * 0.42, base_top + 2, (212, 175, 90) if s[2] < 0.5
             else (200, 200, 205))
        bullet_w = bw * 0.72
        poly([[cx - bullet_w / 2, base_top - H * 0.1], [cx + bullet_w / 2, base_top - H * 0.1],
              [cx + bullet_w / 2, H * 0.12], [cx - bullet_w / 2, H * 0.22]], shade_c)
        body = (int(cx - bw * 0.4), int(base_top + H * 0.05), int(cx + bw * 0.4), H - 10)
        spec = {**spec, "vertical": True}
    elif cat == "jar":
        bw = W * (0.7 + 0.25 * s[0])
        lid = H * (0.28 + 0.15 * s[1])
        rect(cx - bw / 2, lid - 4, cx + bw / 2, H - 1, body_c, 10 * s[2] + 2)
        rect(cx - bw / 2 - 3, H * 0.03, cx + bw / 2 + 3, lid, cap_c, 6)
        for x in np.linspace(cx - bw / 2, cx + bw / 2, 40):
            cv2.line(img, (int(x), int(H * 0.05)), (int(x), int(lid - 3)), tuple(int(c * 0.82) for c in cap_c), 1)
        body = (int(cx - bw * 0.4), int(lid + (H - lid) * 0.12), int(cx + bw * 0.4), int(H - (H - lid) * 0.12))
    elif cat == "compact":
        r = int(min(H, W) * 0.48)
        if s[0] < 0.6:
            cv2.circle(img, (int(cx), H // 2), r, cap_c, -1, cv2.LINE_AA)
            cv2.circle(alpha, (int(cx), H // 2), r, 255, -1, cv2.LINE_AA)
            cv2.circle(img, (int(cx), H // 2), int(r * 0.86), body_c, -1, cv2.LINE_AA)
        else:
            rect(cx - r, H / 2 - r, cx + r, H / 2 + r, cap_c, r * 0.3)
            rect(cx - r * 0.86, H / 2 - r * 0.86, cx + r * 0.86, H / 2 + r * 0.86, body_c, r * 0.25)
        cv2.circle(img, (int(cx + r * 0.45), int(H / 2 + r * 0.45)), int(r * 0.2), shade_c, -1, cv2.LINE_AA)
        body = (int(cx - r * 0.55), int(H / 2 - r * 0.5), int(cx + r * 0.55), int(H / 2 + r * 0.3))
    else:  # palette
        rect(4, 8, W - 4, H - 8, cap_c, 10)
        rows, cols = 2 + int(s[0] * 2), 3 + int(s[1] * 3)
        gx0, gy0, gx1, gy1 = 16, int(H * 0.34), W - 16, H - 20
        pw, ph = (gx1 - gx0) / cols, (gy1 - gy0) / rows
        for i in range(rows):
            for j in range(cols):
                hue = spec["shade"][0] + (i * cols + j) * (12 + 25 * s[2])
                c = _hsv(hue, spec["shade"][1] * (0.5 + 0.5 * ((i + j) % 2)), spec["shade"][2] + 0.1 * (j % 3) - 0.1)
                cv2.rectangle(img, (int(gx0 + j * pw + 3), int(gy0 + i * ph + 3)),
                              (int(gx0 + (j + 1) * pw - 3), int(gy0 + (i + 1) * ph - 3)), c, -1)
        body = (24, 14, W - 24, int(H * 0.3))

    mask = alpha > 0
    if spec["gradient"] is not None:
        t = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
        fade = np.asarray(body_c, np.float32) * (1 - t) + np.asarray(_hsv(*spec["gradient"]), np.float32) * t
        plain = np.all(img == np.asarray(body_c, np.uint8), axis=2)
        img = np.where(plain[..., None], np.broadcast_to(fade.astype(np.uint8), img.shape), img)
    if spec["two_tone"] is not None:
        lower = np.zeros_like(mask)
        lower[int(spec["two_tone"] * H):] = True
        img[lower & np.all(img == np.asarray(body_c, np.uint8), axis=2)] = _hsv(*spec["accent"])
    on_body = mask.copy()  # below the cap or lid, where packaging graphics go
    on_body[: max(0, int(body[1] - 0.1 * H))] = False
    if spec["art_on_body"] and not spec["top_view"]:
        layer = img.copy()
        _draw_art(layer, spec["art"])
        img = np.where(on_body[..., None], layer, img)
    if spec["pattern"] != "none" and not spec["pattern_on_label"] and not spec["top_view"]:
        layer = img.copy()
        tint = tuple(int(0.65 * c + 0.35 * a) for c, a in zip(body_c, _hsv(*spec["accent"])))
        _pattern(layer, spec["pattern"], tint, spec["density"], spec["phase"])
        img = np.where(on_body[..., None], layer, img)
    x0, y0, x1, y1 = body
    if x1 - x0 > 8 and y1 - y0 > 8:
        if spec["label_kind"] == "none" or spec["top_view"]:
            top_c = body_c if not spec["top_view"] else tuple(int(c) for c in img[(y0 + y1) // 2, (x0 + x1) // 2])
            label = _label({**spec, "pattern_on_label": False}, x1 - x0, y1 - y0, top_c)
            region = img[y0:y1, x0:x1]
            ink = np.any(label != np.asarray(top_c, np.uint8), axis=2)
            region[ink] = label[ink]
        else:
            lt, lh = spec["label_box"]
            if spec["label_kind"] == "band" and cat not in ("lipstick", "tube"):
                ly0, ly1 = int(y0 + (y1 - y0) * lt * 0.5), int(y0 + (y1 - y0) * min(1.0, lt * 0.5 + lh))
                lx0, lx1 = x0 - int(0.08 * (x1 - x0)), x1 + int(0.08 * (x1 - x0))
            else:
                ly0, ly1, lx0, lx1 = y0, y1, x0, x1
            label = _label(spec, lx1 - lx0, ly1 - ly0, None)
            if spec["label_kind"] == "oval":
                lmask = np.zeros(label.shape[:2], np.uint8)
                cv2.ellipse(lmask, ((lx1 - lx0) // 2, (ly1 - ly0) // 2), ((lx1 - lx0) // 2, (ly1 - ly0) // 2),
                            0, 0, 360, 255, -1, cv2.LINE_AA)
                region = img[ly0:ly1, lx0:lx1]
                region[lmask > 0] = label[lmask > 0]
            else:
                img[ly0:ly1, lx0:lx1] = np.where(mask[ly0:ly1, lx0:lx1, None], label, img[ly0:ly1, lx0:lx1])
    # shading: a cylinder lit from one side, or a flat top lit from one corner
    xs = np.linspace(0.0, 1.0, W, dtype=np.float32)
    if spec["top_view"]:
        ys = np.linspace(0.0, 1.0, H, dtype=np.float32)
        light = 1.08 - 0.2 * (xs[None, :] + ys[:, None]) / 2
    else:
        light = (0.72 + 0.36 * np.sin(np.pi * xs) + 0.25 * np.exp(-((xs - 0.3) / 0.06) ** 2))[None, :]
    out = np.clip(img.astype(np.float32) * light[..., None], 0, 255).astype(np.uint8)
    return out, alpha.astype(np.float32) / 255.0


def _box_sprite(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """The product's retail box: a cuboid in the family colours with the same label artwork."""
    import cv2

    H, W, d = 300, 150, 30
    img = np.zeros((H + d, W + d, 3), np.uint8)
    alpha = np.zeros((H + d, W + d), np.float32)
    c = _hsv(*spec["body"])
    cv2.fillPoly(img, [np.array([[0, d], [d, 0], [W + d, 0], [W, d]], np.int32)], tuple(int(v * 0.9) for v in c))
    cv2.fillPoly(img, [np.array([[W, d], [W + d, 0], [W + d, H], [W, H + d]], np.int32)],
                 tuple(int(v * 0.7) for v in c))
    img[d:, :W] = c
    img[d + 40:d + H - 40, 10:W - 10] = _label(spec, W - 20, H - 80, None)
    cv2.fillPoly(alpha, [np.array([[0, d], [d, 0], [W + d, 0], [W + d, H], [W, H + d], [0, H + d]], np.int32)], 1.0)
    return img, alpha


# --- composing images ---------------------------------------------------------
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
    aspect = _pick(rng, aspects)  # width / height
    return (long, max(LONG_SIDE[0] // 2, int(long / aspect))) if aspect >= 1 else (max(LONG_SIDE[0] // 2, int(long * aspect)), long)


def _shop_image(spec: dict, rng: np.random.Generator) -> np.ndarray:
    """A clean listing photo: plain, grey or studio-gradient background, mild pose change."""
    w, h = _size(rng, (1.0, 1.0, 0.75, 1.333), (300, LONG_SIDE[1]))
    kind = _pick(rng, ("white", "white", "white", "grey", "gradient", "studio", "studio", "tint"))
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
        bg = np.ones((h, w, 3), np.float32) * np.array(_hsv(rng.uniform(0, 360), 0.12, 0.97), np.float32)
    rgb, alpha = _sprite(spec)
    closeup = rng.random() < SHOP_CLOSEUP_PROB
    height = min(h, w) * (rng.uniform(1.3, 1.8) if closeup else rng.uniform(*SHOP_SCALE))
    if rng.random() < SHOP_WITH_BOX_PROB and not closeup:
        brgb, balpha = _box_sprite(spec)
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

    kind = _pick(rng, ("blotch", "wood", "tiles", "fabric", "shapes"))
    base = np.array(_hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.4, 0.95)), np.float32)
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
    return _product(seed, 10_000_000 + int(rng.integers(0, 1_000_000)), 0)


def _query_image(spec: dict, seed: int, rng: np.random.Generator) -> np.ndarray:
    """A user photo: clutter, pose, occlusion, lighting, colour cast, blur, noise."""
    import cv2

    # phones are held the way the product stands: portrait for bottles, landscape for palettes
    w, h = _size(rng, (0.75, 0.75, 1.0) if spec["tall"] else (1.333, 1.333, 1.0), (320, LONG_SIDE[1]))
    img = _texture(rng, h, w)
    for _ in range(int(rng.integers(CLUTTER_OBJECTS[0], CLUTTER_OBJECTS[1] + 1))):
        crgb, calpha = _sprite(_clutter_spec(seed, rng))
        x = _pick(rng, (rng.uniform(-0.05, 0.25), rng.uniform(0.75, 1.05)))  # around the product, not on it
        _warp_onto(img, crgb, calpha, (w * x, h * rng.uniform(0.1, 0.9)), min(h, w) * rng.uniform(0.3, 0.7),
                   rng.normal(0, 15), 0.05, rng, 0.3)
    rgb, alpha = _sprite(spec)
    height = (h if spec["tall"] else w) * rng.uniform(*QUERY_SCALE)
    centre = (w * rng.uniform(0.3, 0.7), h * rng.uniform(0.35, 0.65))
    cov = _warp_onto(img, rgb, alpha, centre, height, rng.uniform(-QUERY_ROTATION, QUERY_ROTATION),
                     QUERY_PERSPECTIVE * rng.uniform(0.2, 1.0), rng, rng.uniform(0.0, 0.4))
    if rng.random() < OCCLUSION_PROB:
        ys, xs = np.nonzero(cov > 0.5)
        if len(xs):
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            area = rng.uniform(*OCCLUSION_AREA) * (x1 - x0 + 1) * (y1 - y0 + 1)
            ow = int(np.clip(math.sqrt(area) * rng.uniform(0.6, 1.6), 8, w))
            oh = int(np.clip(area / ow, 8, h))
            side = rng.random()
            ox = int(x0 - ow * 0.4 if side < 0.5 else x1 - ow * 0.6)
            oy = int(rng.uniform(y0, max(y0 + 1, y1 - oh)))
            if rng.random() < 0.5:  # a hand
                skin = _hsv(rng.uniform(15, 35), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95))
                cv2.ellipse(img, (ox + ow // 2, oy + oh // 2), (ow // 2, oh // 2), rng.uniform(-30, 30), 0, 360,
                            skin, -1, cv2.LINE_AA)
                for k in range(4):
                    fx = ox + ow // 2 + (1 if side >= 0.5 else -1) * ow // 2
                    cv2.line(img, (ox + ow // 2, oy + oh * (k + 1) // 5), (fx, oy + oh * (k + 1) // 5), skin,
                             max(3, oh // 7), cv2.LINE_AA)
            else:
                crgb, calpha = _sprite(_clutter_spec(seed, rng))
                _warp_onto(img, crgb, calpha, (ox + ow / 2, oy + oh / 2), max(oh, ow) * 1.3, rng.normal(0, 20),
                           0.05, rng, 0.3)
    # lighting and camera
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = rng.normal(0, 1, 2)
    ramp = ((xx / w - 0.5) * d[0] + (yy / h - 0.5) * d[1]) * rng.uniform(0.1, 0.5)
    gain = 1 + rng.uniform(-QUERY_COLOUR_CAST, QUERY_COLOUR_CAST, 3).astype(np.float32)
    img = img * (rng.uniform(0.75, 1.15) + ramp)[..., None] * gain
    if rng.random() < 0.3:  # glare
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


# --- encoding -----------------------------------------------------------------
def _jpeg(pixels: np.ndarray, quality: int, exif_orientation: int | None = None) -> bytes:
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


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _bomb_png(side: int) -> bytes:
    """A valid 1-bit PNG of side x side pixels that deflates to a few tens of KB."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _messy_bytes(kind: str, spec: dict, rng: np.random.Generator) -> bytes:
    from PIL import Image

    if kind == "zero_byte":
        return b""
    if kind == "decompression_bomb":
        return _bomb_png(BOMB_SIDE)
    pixels = _shop_image(spec, rng)
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if kind == "truncated_jpeg":
        full = _jpeg(pixels, 90)
        return full[: int(len(full) * rng.uniform(0.3, 0.6))]
    if kind == "exif_rotated_jpeg":
        return _jpeg(pixels, 90, 6)
    if kind == "cmyk_jpeg":
        image.convert("CMYK").save(buffer, "JPEG", quality=90)
    elif kind == "gray_jpeg":
        image.convert("L").save(buffer, "JPEG", quality=90)
    elif kind == "png_named_jpg":
        image.save(buffer, "PNG")
    elif kind == "gray16_png":
        gray = np.asarray(image.convert("L"), np.uint16) * 257
        Image.fromarray(gray).save(buffer, "PNG")
    elif kind == "palette_png":
        image.quantize(64, dither=Image.Dither.NONE).save(buffer, "PNG")
    elif kind == "rgba_png":
        rgb, alpha = _sprite(spec)
        Image.fromarray(np.dstack([rgb, (alpha * 255).astype(np.uint8)])).save(buffer, "PNG")
    else:
        raise ValueError(f"unknown messy kind {kind!r}")
    return buffer.getvalue()


def _render(task: tuple) -> int:
    """Render and write one file; returns its size in bytes. Depends only on the task tuple."""
    kind, seed, index, path, spec, extra = task
    if kind == "shop" or kind == "distractor":
        rng = _rng(seed, _SHOP if kind == "shop" else _DISTRACTOR, index)
        data = _jpeg(_shop_image(spec, rng), int(rng.integers(82, 96)))
    elif kind == "query":
        rng = _rng(seed, _QUERY, index)
        pixels = _query_image(spec, seed, rng)
        data = _jpeg(pixels, int(rng.integers(QUERY_JPEG_QUALITY[0], QUERY_JPEG_QUALITY[1] + 1)), extra)
    else:
        data = _messy_bytes(extra, spec, _rng(seed, _MESSY, index))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism; nested threads only contend


# --- descriptions ---------------------------------------------------------------
def _size_text(rng: np.random.Generator, value: float, unit: str) -> str:
    if unit == "ml":
        oz = f"{value / 29.5735:.1f}"
        forms = (f"{value:g}ml", f"{value:g} mL", f"{value:g} ML", f"{oz} fl oz", f"{value:g}ml/{oz}fl.oz",
                 f"{value:g} ml")
    else:
        oz = f"{value / 28.3495:.2f}"
        forms = (f"{value:g}g", f"{value:g} g", f"{value:g}G", f"{oz} oz", f"{value:g}g / {oz} oz")
    return _pick(rng, forms)


def _describe(spec: dict, rng: np.random.Generator, lang: str, force_comma: bool) -> str:
    """A listing title as shops write them: same facts, different order, units, casing and extras."""
    brand, line, variant = spec["brand"], spec["line"], spec["variant"]
    size = _size_text(rng, spec["size"], spec["unit"])
    words = TYPES[spec["type"]]
    if lang != "en":
        kind = words[LANGS.index(lang)]
        extra = _pick(rng, MARKETING_XX[lang])
        forms = (f"{brand} {line} {kind} {variant} {size}", f"{extra} {brand} {kind}, {variant}, {size}",
                 f"{brand} {kind} {line} {size} {extra}")
        return _pick(rng, forms[1:2] if force_comma else forms)
    kind = words[0]
    mkt = _pick(rng, MARKETING)
    with_commas = (f"{brand} {line} {kind}, {size}, {variant}", f"{mkt} {brand} {kind} {line} {variant}, {size}",
                   f"{line} {kind} by {brand}, {variant}, {size}")
    plain = (f"{brand} {line} {kind} {variant} {size}", f"{brand.upper()} {line} {kind} {size} {mkt}",
             f"{line} {kind} - {variant} ({size}) by {brand}", f"{brand} {kind} {variant}",
             f"{brand} {line} {kind.title()} {size}", f"{brand.lower()} {line.lower()} {kind} {variant.lower()}")
    return _pick(rng, with_commas if force_comma or rng.random() < 0.35 else plain)


# --- the plan -------------------------------------------------------------------
@dataclass
class _Image:
    role: str  # "shop", "distractor", "messy"
    product: tuple[int, int]  # (family, member)
    messy: str | None = None
    sibling: bool = False


def _plan(seed: int, n_products: int, n_distractors: int, n_queries: int) -> tuple[list, list]:
    """Which products exist and which images show them; no pixels yet."""
    rng = _rng(seed, _PLAN)
    images: list[_Image] = []
    targets: list[tuple[int, int]] = []
    target_families: list[int] = []
    family = 0
    while len(targets) < n_products:
        k = min(_weighted(rng, TARGETS_PER_FAMILY), n_products - len(targets))
        targets.extend((family, m) for m in range(k))
        target_families.append(family)
        family += 1
    for product in targets:
        images.extend(_Image("shop", product) for _ in range(_weighted(rng, SHOP_IMAGES_PER_PRODUCT)))
    messy = list(MESSY_KINDS)[: max(0, min(len(MESSY_KINDS), n_distractors // 2))]
    regular = n_distractors - len(messy)
    n_hard = int(round(regular * HARD_NEGATIVE_SHARE)) if target_families else 0
    members = {f: sum(1 for t in targets if t[0] == f) for f in target_families}
    order = [target_families[i] for i in rng.permutation(len(target_families))] if target_families else []
    hard = siblings = 0
    while hard < n_hard:
        f = order[siblings] if siblings < len(order) else _pick(rng, order)  # every target family first
        siblings += 1
        product = (f, members[f])
        members[f] += 1
        for _ in range(min(int(rng.integers(DISTRACTOR_IMAGES_PER_PRODUCT[0], DISTRACTOR_IMAGES_PER_PRODUCT[1] + 1)),
                           n_hard - hard)):
            images.append(_Image("distractor", product, sibling=True))
            hard += 1
    placed = 0
    while placed < regular - n_hard:
        size = int(rng.integers(1, 4))
        for m in range(size):
            for _ in range(int(rng.integers(DISTRACTOR_IMAGES_PER_PRODUCT[0], DISTRACTOR_IMAGES_PER_PRODUCT[1] + 1))):
                if placed < regular - n_hard:
                    images.append(_Image("distractor", (family, m)))
                    placed += 1
        family += 1
    for kind in messy:
        images.append(_Image("messy", (family, 0), messy=kind))
        family += 1
    if n_queries > 0 and not targets:
        raise BadInput(None, None, "the demo needs at least one product to have queries")
    picks = [targets[i] for i in rng.permutation(len(targets))[: min(n_queries, len(targets))]]
    while len(picks) < n_queries:
        picks.append(_pick(rng, targets))
    return images, picks


def generate_demo(out: Path, seed: int = 0, n_products: int = 200, n_distractors: int = 2500,
                  n_queries: int = 100, workers: int | None = None) -> DemoSummary:
    """Write the demo dataset under ``out`` (database/, queries/, descriptions.csv, ground_truth.csv).

    Files depend only on the arguments other than ``workers``: the same seed gives byte-identical files.
    ``out`` may be new, empty, or hold an earlier generation with the same seed and sizes (rewritten in place);
    anything else in ``out/database`` or ``out/queries`` is refused rather than mixed in.
    """
    started = time.perf_counter()
    if seed < 0 or n_products < 0 or n_distractors < 0 or n_queries < 0:
        raise BadInput(None, None, "demo seed and sizes must be non-negative")
    out = Path(out)
    images, picks = _plan(seed, n_products, n_distractors, n_queries)
    rng = _rng(seed, _PLAN, 1)
    db_numbers = rng.choice(10_000_000, size=len(images), replace=False)
    db_order = rng.permutation(len(images))  # IDs in a shuffled order, so ID ranges reveal nothing
    db_ids = [f"n{int(db_numbers[db_order[i]]):07d}" for i in range(len(images))]
    query_ids = [f"v{int(n):06d}" for n in rng.choice(1_000_000, size=n_queries, replace=False)]
    n_rotated = min(n_queries, max(1, int(round(n_queries * EXIF_ROTATED_SHARE)))) if n_queries else 0
    rotated = {int(i): int(_pick(rng, (6, 6, 8, 8, 3))) for i in rng.permutation(n_queries)[:n_rotated]}

    database_dir, queries_dir = out / "database", out / "queries"
    names = {f"{db_ids[i]}{MESSY_KINDS[im.messy][0] if im.messy else '.jpg'}" for i, im in enumerate(images)}
    query_names = {f"{q}.jpg" for q in query_ids}
    for folder, expected in ((database_dir, names), (queries_dir, query_names)):
        if folder.is_dir():
            stale = sorted(p.name for p in folder.iterdir() if p.name not in expected and not p.name.startswith("."))
            if stale:
                raise BadInput(folder / stale[0], None, "folder holds files of another dataset; "
                                                        "generate the demo into an empty folder")
        folder.mkdir(parents=True, exist_ok=True)

    specs: dict[tuple[int, int], dict] = {}

    def spec_of(key: tuple[int, int]) -> dict:
        if key not in specs:
            specs[key] = _product(seed, *key)
        return specs[key]

    tasks = []
    for i, im in enumerate(images):
        ext = MESSY_KINDS[im.messy][0] if im.messy else ".jpg"
        kind = {"shop": "shop", "distractor": "distractor", "messy": "messy"}[im.role]
        tasks.append((kind, seed, i, str(database_dir / f"{db_ids[i]}{ext}"), spec_of(im.product), im.messy))
    for i, product in enumerate(picks):
        tasks.append(("query", seed, i, str(queries_dir / f"{query_ids[i]}.jpg"), spec_of(product), rotated.get(i)))

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(workers or available, 32))
    if workers == 1 or len(tasks) < 8:
        sizes = [_render(t) for t in tasks]
    else:
        # spawn, not fork: the caller may already hold threads (torch, BLAS) that fork would copy mid-lock
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            sizes = list(pool.imap(_render, tasks, chunksize=8))

    # descriptions: one row per database image except a few, sorted by ID
    text_rng = _rng(seed, _TEXT)
    n_db = len(images)
    n_lang = max(1, int(round(n_db * NON_ENGLISH_SHARE))) if n_db >= 10 else 0
    n_missing = max(1, int(round(n_db * MISSING_DESCRIPTION_SHARE))) if n_db >= 10 else 0
    n_empty = int(round(n_db * EMPTY_DESCRIPTION_SHARE))
    # messy files keep their descriptions so that a reader can tell "unreadable" from "unlisted"
    chosen = [int(i) for i in text_rng.permutation(n_db) if images[int(i)].messy is None]
    foreign = {i: LANGS[1 + rank % (len(LANGS) - 1)] for rank, i in enumerate(chosen[:n_lang])}
    missing = {int(i) for i in chosen[n_lang:n_lang + n_missing]}
    empty = {int(i) for i in chosen[n_lang + n_missing:n_lang + n_missing + n_empty]}
    comma = chosen[-1] if chosen else -1
    rows = []
    for i, im in enumerate(images):
        if i in missing:
            continue
        r = _rng(seed, _TEXT, i)
        lang = foreign.get(i, "en")
        rows.append((db_ids[i], "" if i in empty else _describe(spec_of(im.product), r, lang, i == comma)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "description"])
    writer.writerows(sorted(rows))
    write_text_atomic(out / "descriptions.csv", buffer.getvalue())

    relevant: dict[tuple[int, int], list[str]] = {}
    for i, im in enumerate(images):
        if im.role == "shop":
            relevant.setdefault(im.product, []).append(db_ids[i])
    gt = {query_ids[i]: sorted(relevant[p]) for i, p in enumerate(picks)}
    if gt:
        with atomic_path(out / "ground_truth.csv") as tmp:
            write_ground_truth(tmp, gt)

    messy_ids = {db_ids[i]: im.messy for i, im in enumerate(images) if im.messy}
    on_disk = sum(sizes) + sum(p.stat().st_size for p in (out / "descriptions.csv", out / "ground_truth.csv")
                               if p.exists())
    return DemoSummary(
        out=out, database_dir=database_dir, queries_dir=queries_dir, descriptions_csv=out / "descriptions.csv",
        ground_truth_csv=out / "ground_truth.csv", seed=seed, n_products=n_products, n_database=n_db,
        n_target_images=sum(im.role == "shop" for im in images),
        n_distractor_images=sum(im.role != "shop" for im in images),
        n_hard_negative_images=sum(im.sibling for im in images), n_queries=n_queries,
        exif_rotated_queries=tuple(sorted(query_ids[i] for i in rotated)),
        messy=dict(sorted(messy_ids.items())),
        unusable=tuple(sorted(i for i, k in messy_ids.items() if not MESSY_KINDS[k][1])),
        missing_descriptions=tuple(sorted(db_ids[i] for i in missing)),
        bytes_on_disk=on_disk, seconds=time.perf_counter() - started,
    )
