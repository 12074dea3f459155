"""Training views (bpcr.training.augment): the clean view is extract's, the phone photo is seeded and its own."""
from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
from PIL import Image

from bpcr.training import augment
from bpcr.training.augment import WHITE_CUTOFF, _jpeg, _product_on, clean_view, generator, phone_photo, product_mask
from bpcr.features.loader import _Images


@pytest.fixture(scope="module")
def product():
    """A shop image: a coloured bottle with a label on white."""
    pixels = np.full((60, 44, 3), 255, np.uint8)
    pixels[10:55, 12:32] = (30, 120, 200)
    pixels[25:40, 14:30] = (240, 200, 40)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def white_bottle():
    """A white bottle on white: a 2 px mid-grey outline, a pure white body, a small coloured label."""
    pixels = np.full((60, 44, 3), 255, np.uint8)
    pixels[8:56, 10:34] = (128, 128, 128)
    pixels[10:54, 12:32] = 255
    pixels[28:36, 16:28] = (200, 40, 40)
    return Image.fromarray(pixels)


def _old_mask(image):
    """The former rule: every pixel with all channels above WHITE_CUTOFF is background."""
    return ~(np.asarray(image) > WHITE_CUTOFF).all(axis=2)


@pytest.fixture(scope="module")
def backdrop():
    yy, xx = np.mgrid[0:50, 0:70]
    return Image.fromarray(np.stack([xx * 3, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8))


def test_clean_view_is_what_extract_sees(product, tmp_path):
    path = tmp_path / "p.png"
    product.save(path)
    _, pixels, _, _ = _Images([path], [(40, 40)], None)[0]
    assert torch.equal(clean_view(product, 40), pixels)


def test_phone_photo_is_seeded(product, backdrop):
    a = phone_photo(product, 48, generator(3, 1, 7), backdrop)
    assert a.shape == (3, 48, 48) and a.dtype == torch.uint8
    assert torch.equal(a, phone_photo(product, 48, generator(3, 1, 7), backdrop))
    views = [phone_photo(product, 48, generator(3, epoch, index), backdrop) for epoch, index in ((2, 7), (1, 8))]
    views.append(phone_photo(product, 48, generator(4, 1, 7), backdrop))
    assert all(not torch.equal(a, v) for v in views)
    assert not torch.equal(a, clean_view(product, 48))


def test_phone_photo_changes_the_scene(product):
    # Over a few seeds the white shop background is mostly replaced (pasted product, backdrop, lighting).
    clean = clean_view(product, 48).float()
    diffs = [float((phone_photo(product, 48, generator(0, 0, i)).float() - clean).abs().mean()) for i in range(6)]
    assert min(diffs) > 5.0


def test_generator_depends_on_every_part():
    draws = {tuple(torch.rand(2, generator=generator(*key)).tolist())
             for key in ((0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1))}
    assert len(draws) == 5


def test_jpeg_fallback_round_trip(product):
    out = _jpeg(product.resize((32, 32)), 40)
    assert out.size == (32, 32) and out.mode == "RGB"


def test_not_the_demo_renderer():
    # phone_photo must not use the demo generator's query renderer: no import of bpcr.demo anywhere in the module.
    tree = ast.parse(inspect.getsource(augment))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    assert "numpy" in names and "torch" in names  # the walk sees the imports ...
    assert not any(n == "bpcr.demo" or n.startswith("bpcr.demo.") or ".demo" in n for n in names)  # ... none is demo's


def test_white_bottle_body_is_kept(white_bottle):
    keep = product_mask(white_bottle)
    assert keep.shape == (60, 44) and keep.dtype == bool
    assert keep[8:56, 10:34].all()  # outline, white body and label: all product
    outside = np.ones((60, 44), bool)
    outside[8:56, 10:34] = False
    assert not keep[outside].any()  # the shop background around it: all matted
    old = _old_mask(white_bottle)
    assert not old[10:54, 12:32][np.asarray(white_bottle)[10:54, 12:32].min(axis=2) > WHITE_CUTOFF].any()
    assert old[8:56, 10:34].mean() < 0.6  # the old rule hollowed the bottle out


def test_white_bottle_survives_the_paste(white_bottle):
    # Pasted shrunk on a black canvas, the bottle keeps a white body (the old rule left the canvas showing through).
    for i in range(4):
        out = np.asarray(_product_on(Image.new("RGB", (60, 60)), white_bottle, 60, generator(0, 0, i)))
        body = (out > WHITE_CUTOFF).all(axis=2).sum()
        assert body > 0.25 * (out.max(axis=2) > 0).sum()


def test_border_white_only_matches_the_old_rule(product):
    # White only where it reaches the border (a C-shaped bottle's mouth opens to the outside): the old rule exactly.
    c_shape = np.full((50, 40, 3), 255, np.uint8)
    c_shape[5:45, 5:35] = (40, 160, 90)
    c_shape[15:35, 15:40] = 255  # the inner white runs out to the right edge
    for image in (product, Image.fromarray(c_shape), product.resize((33, 45), Image.BICUBIC)):
        assert np.array_equal(product_mask(image), _old_mask(image))
    assert not product_mask(c_shape)[20, 20]


def test_phone_photo_unchanged_without_enclosed_white(product, backdrop, monkeypatch):
    # Same draws in the same order: with no white inside the product, the views are byte-identical to the old rule's.
    keys = [(5, 0, i) for i in range(12)]
    new = [phone_photo(product, 48, generator(*k), b) for k in keys for b in (backdrop, None)]
    monkeypatch.setattr(augment, "product_mask", _old_mask)
    old = [phone_photo(product, 48, generator(*k), b) for k in keys for b in (backdrop, None)]
    assert all(torch.equal(a, b) for a, b in zip(new, old))
