"""PCA-whitening: the pca.npz file, and learning and applying it by hand."""
from __future__ import annotations

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.features.whitening import Whitening, apply_whitening, learn_whitening, read_whitening


def test_whitening_file(tmp_path):
    w = Whitening(np.array([1.0, 2.0]), np.array([[0.0, 1.0]]), np.array([4.0]))
    (tmp_path / "pca.npz").write_bytes(w.to_bytes())
    back = read_whitening(tmp_path)
    assert back.mean.tolist() == [1.0, 2.0] and back.components.tolist() == [[0.0, 1.0]]
    assert back.explained_variance.tolist() == [4.0]
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3), components=np.zeros((1, 2)), explained_variance=np.ones(1))
    with pytest.raises(BadInput, match="inconsistent shapes"):
        read_whitening(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", mean=np.array([{"x": 1}], dtype=object), components=np.zeros((1, 1)),
             explained_variance=np.ones(1))
    with pytest.raises(BadInput, match="not a PCA-whitening file"):  # object arrays need pickle: refused
        read_whitening(tmp_path / "obj.npz")
    with pytest.raises(BadInput, match="no PCA-whitening here"):
        read_whitening(tmp_path / "nowhere")


def test_learn_and_apply_whitening_by_hand():
    # two points on a line: one component, whitened to +-1 (variance 2 with ddof=1)
    x = np.array([[1.0, 1.0], [3.0, 3.0]], dtype=np.float32)
    w = learn_whitening(x)
    assert w.components.shape == (1, 2) and np.allclose(w.mean, [2.0, 2.0]) and np.allclose(w.explained_variance, [4.0])
    y = apply_whitening(x, w)
    assert np.allclose(np.abs(y), 1.0) and y[0, 0] == -y[1, 0]
