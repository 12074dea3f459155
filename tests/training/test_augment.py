"""Training views (bpcr.training.augment): the clean view is extract's, the phone photo is seeded and its own."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from PIL import Image

from bpcr.training import augment
from bpcr.training.augment import _jpeg, clean_view, generator, phone_photo
from bpcr.features.loader import _Images


@pytest.fixture(scope="module")
def product():
    """A shop image: a coloured bottle with a label on white."""
    pixels = np.full((60, 44, 3), 255, np.uint8)
    pixels[10:55, 12:32] = (30, 120, 200)
    pixels[25:40, 14:30] = (240, 200, 40)
    return Image.fromarray(pixels)


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
    source = inspect.getsource(augment)
    assert "bpcr.demo" in source  # named in the docstring as what it must not use ...
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not any("demo" in line for line in imports)  # ... and never imported
