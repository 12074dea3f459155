"""bpcr.features.saliency: OpenCV saliency maps and their resizing to feature maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bpcr.errors import BadInput
from bpcr.features.saliency import SALIENCY_METHODS, mask_for_features, saliency_map


def square_image() -> np.ndarray:
    """A bright 32 x 32 square in the middle of a flat dark 96 x 128 background."""
    img = np.full((96, 128, 3), 40, dtype=np.uint8)
    img[32:64, 48:80] = (230, 200, 180)
    return img


@pytest.mark.parametrize("method", sorted(SALIENCY_METHODS))
def test_range_shape_and_determinism(method):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    s = saliency_map(img, method)
    assert s.shape == (37, 53) and s.dtype == np.float32
    assert s.min() == 0.0 and s.max() == 1.0  # min-max normalised per image
    assert np.array_equal(s, saliency_map(img, method))


@pytest.mark.parametrize("method", sorted(SALIENCY_METHODS))
@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_image_keeps_everything(method, value):
    s = saliency_map(np.full((20, 30, 3), value, dtype=np.uint8), method)
    assert s.shape == (20, 30) and not np.isnan(s).any()
    assert np.array_equal(s, np.ones((20, 30), dtype=np.float32))


@pytest.mark.parametrize("method", sorted(SALIENCY_METHODS))
def test_bright_square_is_salient(method):
    s = saliency_map(square_image(), method)
    around_square = s[28:68, 44:84].mean()  # the square and a 4-pixel rim (spectral residual peaks on edges)
    far_background = np.concatenate([s[:16].ravel(), s[-16:].ravel()]).mean()
    assert around_square > 3 * far_background


def test_bad_arguments():
    with pytest.raises(BadInput):
        saliency_map(square_image(), "ldf")
    with pytest.raises(ValueError):
        saliency_map(square_image()[:, :, 0], "spectral")
    with pytest.raises(ValueError):
        saliency_map(square_image().astype(np.float32), "spectral")


def test_mask_for_features_by_hand():
    # 4 x 4 map whose top-left quadrant is 1: halving each side averages each 2 x 2 quadrant.
    sal = np.zeros((1, 4, 4), dtype=np.float32)
    sal[0, :2, :2] = 1.0
    m = mask_for_features(sal, (2, 2))
    assert m.dtype == torch.float32 and m.shape == (1, 2, 2)
    assert torch.allclose(m, torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
    # a half-filled quadrant averages to 0.5
    sal[0, 2:, 2] = 1.0
    assert mask_for_features(sal, (2, 2))[0, 1, 1].item() == pytest.approx(0.5)


def test_mask_for_features_shapes_and_range():
    rng = np.random.default_rng(1)
    batch = rng.random((3, 50, 70)).astype(np.float32)
    m = mask_for_features(batch, (7, 9))
    assert m.shape == (3, 7, 9) and float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    # numpy and torch inputs agree; each map is resized on its own
    assert torch.equal(m, mask_for_features(torch.from_numpy(batch), (7, 9)))
    assert torch.equal(m[1:2], mask_for_features(batch[1:2], (7, 9)))
    # a single map is accepted; same size is the identity; all ones stays all ones
    assert mask_for_features(batch[0], (7, 9)).shape == (1, 7, 9)
    assert torch.equal(mask_for_features(batch, (50, 70)), torch.from_numpy(batch))
    assert torch.equal(mask_for_features(np.ones((2, 224, 224), np.float32), (7, 7)), torch.ones(2, 7, 7))
    # enlarging is bilinear: a constant map stays constant
    assert torch.allclose(mask_for_features(np.full((1, 2, 2), 0.25), (5, 4)), torch.full((1, 5, 4), 0.25))
    with pytest.raises(ValueError):
        mask_for_features(np.ones((2, 3, 4, 5)), (2, 2))


def test_square_survives_as_a_feature_mask():
    s = saliency_map(square_image(), "fine")
    m = mask_for_features(s[None], (3, 4))[0]
    # the square covers the middle of the 3 x 4 grid
    assert m[1, 1:3].min() > m[0].max() and m[1, 1:3].min() > m[2].max()
