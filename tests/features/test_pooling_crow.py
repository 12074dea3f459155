"""bpcr.features.pooling.crow: a case by hand, then properties, then the authors' numpy algorithm as a cross-check,
then `bpcr extract --pooling crow` on generated images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bpcr.errors import BadInput
from bpcr.features.pooling import DEFAULT_PARAMS, POOLINGS, check_params, crow, pooling_names

torch.set_num_threads(1)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def close(a, b, tol=1e-6) -> None:
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=tol), (a, b)


# K = 2, H = W = 2. Channel 0 has one zero, channel 1 two.
#   x_0 = [[4, 0], [1, 1]]    x_1 = [[0, 2], [1, 0]]
X22 = torch.stack([t([4, 0], [1, 1]), t([0, 2], [1, 0])]).unsqueeze(0)


def test_crow_by_hand():
    # Spatial weights (§4.1), a = b = 2:
    #   S = x_0 + x_1 = [[4, 2], [2, 1]];  ||S||_2 = sqrt(16 + 4 + 4 + 1) = 5
    #   alpha = sqrt(S / 5) = [[2, sqrt 2], [sqrt 2, 1]] / sqrt 5
    # Channel weights (§4.2):
    #   Q_0 = 3/4 (three of four positions non-zero), Q_1 = 2/4;  sum Q = 5/4
    #   beta_0 = log((5/4) / (3/4)) = log(5/3),  beta_1 = log((5/4) / (1/2)) = log(5/2)
    # Weighted sums, times sqrt 5:
    #   channel 0: 2*4 + sqrt2*0 + sqrt2*1 + 1*1 = 9 + sqrt 2
    #   channel 1: 2*0 + sqrt2*2 + sqrt2*1 + 1*0 = 3 sqrt 2
    # f = (log(5/3) (9 + sqrt 2), log(5/2) 3 sqrt 2) / sqrt 5 = (5.3199, 3.8875) / sqrt 5, then L2-normalised
    # (the 1/sqrt 5 cancels): (0.80740, 0.59001).
    f = t([math.log(5 / 3) * (9 + math.sqrt(2)), math.log(5 / 2) * 3 * math.sqrt(2)])
    close(crow(X22), f / f.norm())
    close(crow(X22), t([0.807404, 0.590012]), tol=1e-5)
    # a = 1, b = 1 by hand: alpha = S / sum S = [[4, 2], [2, 1]] / 9;
    # channel sums (4*4 + 2*0 + 2*1 + 1*1) / 9 = 19/9 and (4*0 + 2*2 + 2*1 + 1*0) / 9 = 6/9
    g = t([math.log(5 / 3) * 19, math.log(5 / 2) * 6])
    close(crow(X22, a=1.0, b=1.0), g / g.norm())


def test_crow_all_zero_channel():
    # A third channel of zeros: Q_2 = 0, so sum Q, S, alpha, beta_0 and beta_1 are unchanged (crow.py: beta_2 = 0;
    # the paper's eps form would give beta_2 = log((3 eps + 5/4) / eps), times a sum of 0). f_2 = 0.
    x = torch.cat([X22, torch.zeros(1, 1, 2, 2)], dim=1)
    out = crow(x)
    assert out[0, 2] == 0
    close(out[:, :2], crow(X22))
    assert torch.isfinite(out).all()


def test_crow_degenerate_maps():
    # No positive value at all: the zero vector, not crow.py's 0/0.
    assert torch.equal(crow(torch.zeros(2, 3, 4, 5)), torch.zeros(2, 3))
    # Negative values are clamped at 0 first: they neither weigh a position nor count as a non-zero response.
    y = X22.clone()
    y[0, 1, 1, 1] = -5.0
    y[0, 0, 0, 1] = -1.0
    close(crow(y), crow(X22))
    assert torch.equal(crow(-X22), torch.zeros(1, 2))
    # A 1 x 1 map: alpha = 1 and every channel with a positive response has Q = 1.
    x = t([3.0], [0.0], [4.0]).view(1, 3, 1, 1)
    beta = math.log(2.0)  # sum Q = 2, Q_k = 1
    close(crow(x), t([3 * beta, 0, 4 * beta]) / (5 * beta))
    with pytest.raises(ValueError):
        crow(X22, a=0.0)
    with pytest.raises(ValueError):
        crow(X22, b=-1.0)


# ---------------------------------------------------------------- properties

def test_crow_unit_norm_batch_independence_and_scale_invariance():
    g = torch.Generator().manual_seed(11)
    x = torch.relu(torch.randn(4, 16, 7, 9, generator=g))
    x[1] = x[1] * 1e4
    x[2] = x[2] * 1e-3
    out = crow(x)
    assert out.shape == (4, 16) and out.dtype == torch.float32
    close(out.norm(dim=1), torch.ones(4), tol=1e-6)
    for b in range(4):
        assert torch.allclose(out[b:b + 1], crow(x[b:b + 1]), rtol=1e-6, atol=0)
    close(crow(7.5 * x), out, tol=1e-6)
    # Large a neither overflows nor underflows (S is divided by its maximum first).
    assert torch.isfinite(crow(x * 1e3, a=60.0)).all()
    close(crow(x * 1e3, a=60.0).norm(dim=1), torch.ones(4), tol=1e-6)
    # float64 in, float64 out; half in, float32 out.
    assert crow(x.double()).dtype == torch.float64 and crow(x.half()).dtype == torch.float32


def test_crow_differentiable():
    g = torch.Generator().manual_seed(12)
    # Strictly positive, so Q (a count) is constant near x and the gradient is alpha's and the norm's.
    x = (torch.rand(2, 3, 3, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: crow(v), (x,))
    # With zero responses, all-zero positions and an all-zero image, the gradient stays finite.
    y = torch.relu(torch.randn(3, 5, 4, 4, generator=g))
    y[:, :, 0, 0] = 0.0
    y[2] = 0.0
    y.requires_grad_()
    crow(y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


# ---------------------------------------------------------------- cross-check with the authors' algorithm

def _crow_reference(x: np.ndarray, a: float = 2.0, b: float = 2.0) -> np.ndarray:
    """The algorithm of ``yahoo/crow``'s crow.py, transcribed image by image in numpy: (B, K, H, W) -> (B, K).

    Spatial weights: S = channel sum, divided by its L-a norm, to the power 1/b. Channel weights: the share of
    non-zero responses per channel, kept in float32 as crow.py keeps it; log(sum / share), 0 for an empty channel.
    Then the weighted sum over positions, times the channel weights, and L2 normalisation.
    """
    out = []
    for image in x:
        k, h, w = image.shape
        s = image.sum(axis=0)
        alpha = (s / np.power(np.power(s, a).sum(), 1.0 / a)) ** (1.0 / b)
        share = np.array([np.count_nonzero(image[c]) / float(h * w) for c in range(k)], dtype=np.float32)
        total = share.sum()
        beta = np.array([np.log(total / q) if q > 0 else 0.0 for q in share], dtype=np.float32)
        f = (image * alpha).sum(axis=(1, 2)) * beta
        out.append(f / np.linalg.norm(f))
    return np.stack(out)


@pytest.mark.parametrize("shape", [(3, 32, 7, 7), (2, 64, 5, 9), (4, 8, 1, 6)])
def test_crow_matches_the_reference_algorithm(shape):
    g = torch.Generator().manual_seed(13)
    x = torch.relu(torch.randn(*shape, generator=g))  # about half the responses are exactly 0
    x[0, : shape[1] // 4] = 0.0  # and a quarter of one image's channels are empty
    want = _crow_reference(x.double().numpy())
    close(crow(x), want, tol=1e-6)
    close(crow(x.double()), want, tol=1e-6)
    want_a3 = _crow_reference(x.double().numpy(), a=3.0, b=1.0)
    close(crow(x, a=3.0, b=1.0), want_a3, tol=1e-6)


# ---------------------------------------------------------------- registry, config and `bpcr extract`

def test_crow_is_registered():
    assert POOLINGS["crow"] is crow and "crow" in pooling_names()
    assert DEFAULT_PARAMS["crow"] == {"a": 2.0, "b": 2.0} == check_params("crow")
    got = check_params("crow", {"a": 3, "b": 1})
    assert got == {"a": 3.0, "b": 1.0} and all(isinstance(v, float) for v in got.values())
    for params in ({"a": 0}, {"b": -1}, {"a": "2"}, {"p": 3}):
        with pytest.raises(BadInput):
            check_params("crow", params, source="config.toml")


def test_crow_is_a_choice_of_the_cli_and_the_config(tmp_path):
    from bpcr.cli import options as cli_options
    from bpcr.features.options import POOLING_NAMES, pooling_choices
    from bpcr.pipeline.config import validate_config

    assert "crow" in POOLING_NAMES and "crow" in pooling_choices() and "crow" in cli_options.POOLINGS
    config = {"prepare": {"demo": True},
              "extract": [{"name": "e", "backbone": "b", "poolings": ["gem", "crow"],
                           "pooling_params": {"crow": {"a": 2, "b": 2}}}]}
    validate_config(tmp_path / "c.toml", config)


@pytest.mark.slow
def test_extract_accepts_crow(tmp_path, cli):
    from bpcr.dataset.manifest import write_manifest
    from bpcr.io.store import open_store
    from tests.helpers.extraction import write_images

    (tmp_path / "images").mkdir()
    ids, paths, widths, heights = write_images(tmp_path / "images", 4)
    write_manifest(tmp_path / "db.csv", ids, paths, widths, heights, [""] * len(ids))
    result = cli("extract", tmp_path / "db.csv", "--pooling", "crow", "--param", "crow.b=1", "--size", "64",
                 "--batch-size", "2", "--workers", "0", "--threads", "1", "--dtype", "float32",
                 "--out", tmp_path / "out")
    assert result.code == 0, result.err
    store = open_store(tmp_path / "out" / "crow")
    assert store.ids == ids and store.meta["pooling"] == "crow"
    assert store.meta["pooling_params"] == {"a": 2.0, "b": 1.0}
    features = np.asarray(store.features, dtype=np.float32)
    assert features.shape == (4, 1280) and np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
