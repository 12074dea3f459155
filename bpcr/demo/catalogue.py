"""The demo's catalogue: difficulty knobs, vocabulary, product families and their members, listing titles.

A product is a plain ``dict`` (its *spec*) drawn from ``numpy.random.default_rng([seed, KIND, index...])``,
so every image and title of it can be rebuilt from the seed alone, in any process.
"""
from __future__ import annotations

import colorsys
import re
from typing import Any

import numpy as np

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
OCCLUSION_PROB = 0.18  # share of queries with a hand or another product in front
OCCLUSION_AREA = (0.05, 0.25)  # share of the product's box covered
QUERY_BLUR_SIGMA = (0.0, 0.6)  # defocus; the label's own softness is PRINT_SOFTNESS
QUERY_NOISE_SIGMA = (1.0, 4.0)  # sensor noise, grey levels
QUERY_COLOUR_CAST = 0.05  # max per-channel gain deviation (white balance)
QUERY_GLARE_PROB = 0.3  # a lamp's glare somewhere in the photo (the package's own gloss is in .handheld)
QUERY_JPEG_QUALITY = (40, 85)  # phone uploads are recompressed
BACKGROUND_BLUR = (0.8, 3.0)  # sigma; depth of field behind the product
# The product in the user's hand is not the listing's artwork (see .handheld): another print run, a label
# wrapped round a cylinder, softer print, gloss and stickers. Without these, shop renders and query photos
# print the very same label, and SIFT re-ranking gains far more than the +0.03-0.10 of seeds/000.
REVISION_SHARE = 0.85  # products photographed in another print run or packaging revision than listed
REVISION_LAYOUT = 0.05  # text rows, logo and graphics move by up to this share of the label
REVISION_RESTYLE = 0.35  # chance of each lettering change: brand case, typeface, stroke weight, size format
REVISION_CLAIM = 0.5  # a new claim printed on the label ("NEW LOOK", "+20% FREE")
WRAP_YAW = 0.3  # radians a cylindrical product is turned about its axis, either way
PRINT_SOFTNESS = (0.5, 0.85)  # printed detail resolved, relative to the listing's crisp artwork
GLOSS_PROB = 0.4  # a specular highlight across the package
GLOSS_STRENGTH = (0.4, 0.9)  # share of the way to white at the highlight's centre
GLOSS_WIDTH = (0.02, 0.07)  # of the package's width
STICKER_PROB = 0.3  # a price or barcode sticker on the label
STICKER_WIDTH = (0.3, 0.55)  # of the label's width
EXIF_ROTATED_SHARE = 0.1
NON_ENGLISH_SHARE = 0.25  # listings in Chinese, Korean, French or Spanish
UNNAMED_VARIANT_SHARE = 0.5  # listing titles that leave the shade or variant to the product page
MISSING_DESCRIPTION_SHARE = 0.01
EMPTY_DESCRIPTION_SHARE = 0.005
LONG_SIDE = (256, 512)

# RNG stream kinds: numpy.random.default_rng([seed, KIND, index...]).
# A query's package (print run, curvature, gloss, sticker) has its own stream, apart from the photo's pose,
# clutter and camera.
STREAM_PLAN, STREAM_FAMILY, STREAM_PRODUCT, STREAM_SHOP, STREAM_DISTRACTOR, STREAM_QUERY, STREAM_TEXT, STREAM_MESSY, STREAM_HANDHELD = range(9)


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
RESTYLED_FONT = {0: 2, 2: 0, 3: 4, 4: 3, 6: 7, 7: 6}  # a redesign keeps the typeface's family, not its strokes
CLAIMS = ("NEW", "NEW LOOK", "IMPROVED", "+20% FREE", "REFILL", "LIMITED EDITION", "BEST SELLER", "VEGAN", "NEW FORMULA")


# --- small helpers -------------------------------------------------------------
def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def weighted_pick(rng: np.random.Generator, spec: tuple[tuple, tuple]) -> Any:
    values, weights = spec
    return values[int(rng.choice(len(values), p=np.asarray(weights) / sum(weights)))]


def hsv_colour(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _scheme_colour(rng: np.random.Generator) -> list[float]:
    """An HSV triple from one of the looks shop shelves are full of."""
    h = float(rng.uniform(0, 360))
    look = pick(rng, ("pastel", "vivid", "dark", "white", "black", "metal", "vivid", "vivid", "pastel"))
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
    name = "".join(pick(rng, SYLLABLES) for _ in range(int(rng.integers(2, 4))))
    return name.capitalize() + pick(rng, BRAND_SUFFIX)


# --- products -----------------------------------------------------------------
def _art(rng: np.random.Generator) -> list[list[float]]:
    """Packaging graphics: a few bold shapes in a family palette, [kind, x, y, size, h, s, v] each."""
    hue = float(rng.uniform(0, 360))
    shapes = []
    for _ in range(int(rng.integers(ART_SHAPES[0], ART_SHAPES[1] + 1))):
        shapes.append([float(rng.integers(0, 4)), *(float(v) for v in rng.uniform(0, 1, 2)),
                       float(rng.uniform(0.15, 0.6)), hue + float(pick(rng, (0, 30, 180, 210, -30))),
                       float(rng.uniform(0.35, 0.95)), float(rng.uniform(0.45, 1.0))])
    return shapes


def _family(seed: int, family: int) -> dict:
    """Everything the members of one family share (shape, colours, layout, line)."""
    rng = seeded_rng(seed, STREAM_FAMILY, family)
    names = list(CATEGORIES)
    category = names[int(rng.choice(len(names), p=np.asarray(CATEGORY_WEIGHTS) / sum(CATEGORY_WEIGHTS)))]
    types, unit, sizes, tall, shaded = CATEGORIES[category]
    label_hsv = pick(rng, ([0.0, 0.0, 1.0], [40.0, 0.12, 0.96], [0.0, 0.0, 0.08], None, None))
    return {
        "category": category,
        "type": pick(rng, types),
        "unit": unit,
        "size": pick(rng, sizes),
        "tall": tall,
        "shaded": shaded,
        "line": f"{pick(rng, LINE_A)} {pick(rng, LINE_B)}",
        "brand": _brand(rng),
        "shape": [float(x) for x in rng.uniform(0.0, 1.0, 8)],
        "body": _scheme_colour(rng),
        "cap": _scheme_colour(rng) if rng.random() < 0.7 else None,
        "label": label_hsv if label_hsv is not None else _scheme_colour(rng),
        "accent": _scheme_colour(rng),
        "shade": [float(rng.uniform(0, 360)), float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.4, 0.9))],
        "label_box": [float(rng.uniform(0.15, 0.45)), float(rng.uniform(0.35, 0.8))],  # top, height (of body)
        "label_kind": pick(rng, ("band", "panel", "panel", "oval", "none")),
        "vertical": bool(rng.random() < 0.2),
        "pattern": pick(rng, ("none", "stripes", "dots", "diagonal", "waves", "grid", "rings", "none")),
        "pattern_on_label": bool(rng.random() < 0.5),
        "density": float(rng.uniform(6, 18)),
        "font": int(pick(rng, FONTS)),
        "italic": bool(rng.random() < 0.25),
        "thickness": int(rng.integers(1, 4)),
        "logo": pick(rng, ("ring", "diamond", "star", "leaf", "monogram", "none")),
        "glass": bool(rng.random() < 0.25),
        "top_view": category in ("compact", "palette"),
        "variant_offset": int(rng.integers(0, 1000)),
        "art": _art(rng),
        "two_tone": float(rng.uniform(0.45, 0.8)) if rng.random() < TWO_TONE_SHARE else None,
        "art_on_body": bool(rng.random() < ART_ON_BODY_SHARE),
        "gradient": _scheme_colour(rng) if rng.random() < GRADIENT_SHARE else None,
    }


def product_spec(seed: int, family: int, member: int) -> dict:
    """Member ``member`` of ``family``; member 0 is the family's base look."""
    spec = dict(_family(seed, family))
    spec["key"] = [family, member]
    rng = seeded_rng(seed, STREAM_PRODUCT, family, member)
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
            spec["logo"] = pick(rng, ("ring", "diamond", "star", "leaf", "monogram", "none"))
            spec["font"] = int(pick(rng, FONTS))
            spec["body"] = [spec["body"][0] + shift / 2, spec["body"][1], spec["body"][2]]
            if spec["cap"] is not None and rng.random() < 0.5:
                spec["cap"] = [spec["cap"][0] + shift, spec["cap"][1], spec["cap"][2]]
            if rng.random() < 0.5:
                spec["label"] = _scheme_colour(rng)
            else:
                spec["pattern"] = pick(rng, ("none", "stripes", "dots", "diagonal", "waves", "grid", "rings"))
            spec["density"] *= float(rng.uniform(0.8, 1.25))
    return spec


# --- descriptions ---------------------------------------------------------------
def _size_text(rng: np.random.Generator, value: float, unit: str) -> str:
    if unit == "ml":
        oz = f"{value / 29.5735:.1f}"
        forms = (f"{value:g}ml", f"{value:g} mL", f"{value:g} ML", f"{oz} fl oz", f"{value:g}ml/{oz}fl.oz",
                 f"{value:g} ml")
    else:
        oz = f"{value / 28.3495:.2f}"
        forms = (f"{value:g}g", f"{value:g} g", f"{value:g}G", f"{oz} oz", f"{value:g}g / {oz} oz")
    return pick(rng, forms)


def _tidy(title: str) -> str:
    """A title with an empty field dropped: no doubled commas or spaces, no empty brackets or dashes."""
    title = re.sub(r"\s*-\s*\(", " (", title.replace("()", ""))
    title = re.sub(r"\s*,(\s*,)*", ",", title)
    return re.sub(r"\s+", " ", title).strip(" ,-")


def describe_listing(spec: dict, rng: np.random.Generator, lang: str, force_comma: bool) -> str:
    """A listing title as shops write them: same facts, different order, units, casing and extras."""
    brand, line, variant = spec["brand"], spec["line"], spec["variant"]
    size = _size_text(rng, spec["size"], spec["unit"])
    if rng.random() < UNNAMED_VARIANT_SHARE:
        variant = ""
    words = TYPES[spec["type"]]
    if lang != "en":
        kind = words[LANGS.index(lang)]
        extra = pick(rng, MARKETING_XX[lang])
        forms = (f"{brand} {line} {kind} {variant} {size}", f"{extra} {brand} {kind}, {variant}, {size}",
                 f"{brand} {kind} {line} {size} {extra}")
        return _tidy(pick(rng, forms[1:2] if force_comma else forms))
    kind = words[0]
    mkt = pick(rng, MARKETING)
    with_commas = (f"{brand} {line} {kind}, {size}, {variant}", f"{mkt} {brand} {kind} {line} {variant}, {size}",
                   f"{line} {kind} by {brand}, {variant}, {size}")
    plain = (f"{brand} {line} {kind} {variant} {size}", f"{brand.upper()} {line} {kind} {size} {mkt}",
             f"{line} {kind} - {variant} ({size}) by {brand}", f"{brand} {kind} {variant}",
             f"{brand} {line} {kind.title()} {size}", f"{brand.lower()} {line.lower()} {kind} {variant.lower()}")
    return _tidy(pick(rng, with_commas if force_comma or rng.random() < 0.35 else plain))
