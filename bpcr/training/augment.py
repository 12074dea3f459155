"""Views of a database image for training: the clean shop view, and a simulated phone photo.

A query of the challenge is a phone photo of a product; the database holds
clean shop images. Training pairs a clean view with :func:`phone_photo`, a
view that imitates what a phone does to a product (004 §3.3 pairs user photos
with shop images; 003 §3.1 and its Fig. 4 train on "geometric transformation
and increasing interference, such as background variation, brightness
variation, noise, blurring"):

1. the product is cut from its white shop background (the near-white
   pixels connected to the image border become transparent; near-white
   enclosed by the product, a white bottle's body or a white label, stays)
   and pasted, shrunk, on a backdrop: a patch of another database image or
   a random smooth texture;
2. an occluder (a patch of that backdrop, or a flat skin/shelf-like colour)
   may cover part of it;
3. perspective, then rotation, then a random resized crop to ``size``;
4. colour jitter (brightness, contrast, saturation, hue), Gaussian blur;
5. JPEG re-compression at a random quality.

This deliberately shares nothing with the demo generator's query renderer
(:mod:`bpcr.demo`): trained on that renderer, a network would learn to undo
the generator, and the demo would overstate what training gives on real
photos. Every random choice comes from a ``torch.Generator`` seeded from
``(seed, epoch, index, role)`` (:func:`generator`), so a view never depends
on worker count, order or a resumed run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from scipy import ndimage
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from bpcr.dataset.images import ImageError, load_rgb
from bpcr.errors import BadInput

# Colours of things that cover a product in a hand-held photo: skin tones, shelf grey, fabric.
OCCLUDER_COLOURS = ((224, 172, 140), (198, 134, 100), (141, 85, 60), (120, 120, 125), (60, 62, 70), (200, 200, 190))
WHITE_CUTOFF = 235  # a pixel with every channel above this, connected to the border, is shop background
SETTINGS = {
    "paste": 0.85, "product_scale": (0.5, 0.95), "occluder": 0.5, "occluder_area": (0.04, 0.18),
    "perspective": 0.7, "distortion": 0.25, "rotate": 0.7, "degrees": 25.0,
    "crop_scale": (0.6, 1.0), "crop_ratio": (3 / 4, 4 / 3),
    "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.02,
    "blur": 0.5, "sigma": (0.3, 2.0), "jpeg": 0.9, "quality": (30, 90),
}


def load_image(path: Path) -> Image.Image:
    """A training image, RGB; BadInput naming the file when it cannot be read."""
    try:
        return load_rgb(path)
    except ImageError as exc:
        raise BadInput(path, None, f"cannot read a training image: {exc.reason}") from None


def generator(seed: int, epoch: int, index: int, role: int = 0) -> torch.Generator:
    """A torch.Generator for one view, seeded from ``(seed, epoch, index, role)`` through numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(role)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def to_tensor(image: Image.Image) -> Tensor:
    """PIL RGB -> uint8 (3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image.convert("RGB")).transpose(2, 0, 1)))


def clean_view(image: Image.Image, size: int) -> Tensor:
    """The shop view: resized to ``size x size`` exactly as ``bpcr extract`` does (bicubic, square)."""
    return to_tensor(image.resize((size, size), Image.BICUBIC, reducing_gap=3.0))


def phone_photo(image: Image.Image, size: int, gen: torch.Generator,
                backdrop: Image.Image | None = None) -> Tensor:
    """A simulated phone photo of the product in ``image``: uint8 (3, size, size).

    ``backdrop``: another database image to take the background and occluder
    from (a random texture when None, or by chance). The steps run on PIL
    images through torchvision's v2 functional API (its PIL kernels are the
    fastest on a CPU); only the random parameters come from ``gen``.
    """
    s = SETTINGS
    work = max(16, round(size * 1.25))
    canvas = _backdrop(backdrop, work, gen)
    x = _product_on(canvas, image, work, gen) if _chance(gen, s["paste"]) else \
        image.resize((work, work), Image.BICUBIC, reducing_gap=3.0)
    if _chance(gen, s["occluder"]):
        x = _occlude(x, canvas, gen)
    fill = [int(v) for v in np.asarray(x).reshape(-1, 3).mean(axis=0)]
    if _chance(gen, s["perspective"]):
        d = s["distortion"] * work / 2
        start = [[0, 0], [work - 1, 0], [work - 1, work - 1], [0, work - 1]]
        signs = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        end = [[round(px + sx * _uniform(gen, 0, d)), round(py + sy * _uniform(gen, 0, d))]
               for (px, py), (sx, sy) in zip(start, signs)]
        x = F.perspective(x, start, end, interpolation=InterpolationMode.BILINEAR, fill=fill)
    if _chance(gen, s["rotate"]):
        x = F.rotate(x, _uniform(gen, -s["degrees"], s["degrees"]), interpolation=InterpolationMode.BILINEAR, fill=fill)
    top, left, h, w = _crop_box(work, work, gen)
    x = F.resized_crop(x, top, left, h, w, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    x = F.adjust_brightness(x, _uniform(gen, 1 - s["brightness"], 1 + s["brightness"]))
    x = F.adjust_contrast(x, _uniform(gen, 1 - s["contrast"], 1 + s["contrast"]))
    x = F.adjust_saturation(x, _uniform(gen, 1 - s["saturation"], 1 + s["saturation"]))
    x = F.adjust_hue(x, _uniform(gen, -s["hue"], s["hue"]))
    if _chance(gen, s["blur"]):
        # PIL's own Gaussian blur: the same filter, 3x faster than torchvision's on a PIL image.
        x = x.filter(ImageFilter.GaussianBlur(_uniform(gen, *s["sigma"])))
    if _chance(gen, s["jpeg"]):
        x = F.jpeg(x, int(_uniform(gen, s["quality"][0], s["quality"][1] + 1))) if hasattr(F, "jpeg") else \
            _jpeg(x, int(_uniform(gen, s["quality"][0], s["quality"][1] + 1)))
    return to_tensor(x)


# ---------------------------------------------------------------- steps


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _chance(gen: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=gen)) < p


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def _backdrop(backdrop: Image.Image | None, work: int, gen: torch.Generator) -> Image.Image:
    """A work x work RGB image: a random patch of ``backdrop`` or a smooth random texture."""
    if backdrop is not None and _chance(gen, 0.7):
        bw, bh = backdrop.size
        side = max(8, round(min(bw, bh) * _uniform(gen, 0.3, 0.8)))
        x0, y0 = _randint(gen, 0, max(0, bw - side)), _randint(gen, 0, max(0, bh - side))
        return backdrop.crop((x0, y0, x0 + side, y0 + side)).resize((work, work), Image.BILINEAR)
    cells = _randint(gen, 2, 8)
    base = (torch.rand((cells, cells, 3), generator=gen) * 255).round().to(torch.uint8).numpy()
    texture = np.asarray(Image.fromarray(base).resize((work, work), Image.BICUBIC), dtype=np.float32)
    # Halfway to grey: rooms and shelves are far less saturated than uniform random colours.
    texture = 0.5 * texture + 0.5 * texture.mean(axis=2, keepdims=True)
    noise = torch.randn((work, work, 3), generator=gen).numpy() * _uniform(gen, 0, 12)
    return Image.fromarray(np.clip(texture + noise, 0, 255).round().astype(np.uint8))


def product_mask(image: Image.Image | np.ndarray) -> np.ndarray:
    """Bool (H, W): True where ``image`` is product, False on its white shop background.

    The background is the near-white (every channel above ``WHITE_CUTOFF``)
    connected to the image border, 4-connected (a diagonal gap in a thin
    outline does not leak). Near-white enclosed by the product stays: cutting
    every near-white pixel would hollow out a white bottle on white.
    """
    white = (np.asarray(image) > WHITE_CUTOFF).all(axis=2)
    labels, _ = ndimage.label(white)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return ~np.isin(labels, border[border > 0])


def _product_on(canvas: Image.Image, image: Image.Image, work: int, gen: torch.Generator) -> Image.Image:
    """The product, cut from its white background (:func:`product_mask`), pasted shrunk at a random place on ``canvas``."""
    scale = _uniform(gen, *SETTINGS["product_scale"])
    w, h = image.size
    long_side = max(8, round(work * scale))
    pw, ph = (long_side, max(1, round(long_side * h / w))) if w >= h else (max(1, round(long_side * w / h)), long_side)
    product = image.resize((pw, ph), Image.BICUBIC, reducing_gap=3.0)
    keep = product_mask(product)
    y0, x0 = _randint(gen, 0, work - ph), _randint(gen, 0, work - pw)
    out = canvas.copy()
    out.paste(product, (x0, y0), Image.fromarray(keep.astype(np.uint8) * 255))
    return out


def _occlude(x: Image.Image, canvas: Image.Image, gen: torch.Generator) -> Image.Image:
    """Cover a random rectangle (a share of the image's area) with a backdrop patch or a flat colour."""
    w, h = x.size
    area = _uniform(gen, *SETTINGS["occluder_area"]) * h * w
    aspect = _uniform(gen, 0.4, 2.5)
    oh, ow = max(1, min(h, round((area * aspect) ** 0.5))), max(1, min(w, round((area / aspect) ** 0.5)))
    y0, x0 = _randint(gen, 0, h - oh), _randint(gen, 0, w - ow)
    out = x.copy()
    box = (x0, y0, x0 + ow, y0 + oh)
    if _chance(gen, 0.5):
        out.paste(canvas.crop(box), box)
    else:
        out.paste(OCCLUDER_COLOURS[_randint(gen, 0, len(OCCLUDER_COLOURS) - 1)], box)
    return out


def _crop_box(h: int, w: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (Szegedy et al.), drawn from ``gen``: (top, left, height, width)."""
    lo, hi = SETTINGS["crop_scale"]
    r_lo, r_hi = SETTINGS["crop_ratio"]
    for _ in range(10):
        target = _uniform(gen, lo, hi) * h * w
        ratio = float(np.exp(_uniform(gen, np.log(r_lo), np.log(r_hi))))
        cw, ch = round((target * ratio) ** 0.5), round((target / ratio) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            return _randint(gen, 0, h - ch), _randint(gen, 0, w - cw), ch, cw
    return 0, 0, h, w


def _jpeg(x: Image.Image, quality: int) -> Image.Image:
    """JPEG re-compression by a PIL round trip (torchvision before 0.20 has no ``jpeg``)."""
    import io

    buf = io.BytesIO()
    x.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
