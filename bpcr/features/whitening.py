"""PCA-whitening of a feature store, saved beside it as ``pca.npz`` (never pickled).

The last, optional step of ``bpcr extract``: scikit-learn ``PCA(whiten=True)``
is learned on a store's rows (``--pca-whiten``, usually the database), or read
from another store's ``pca.npz`` and applied (``--pca-from``, the queries), and
the whitened rows are L2-normalised again. :func:`whiten_store` writes the
whitened store; the functions below it are the transform itself.
"""
from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from bpcr.errors import BadInput
from bpcr.io.store import iter_blocks, write_store_blocks
from bpcr.io.npyio import read_npz
from bpcr.io.textio import exists_as_input

WHITENING_FILE = "pca.npz"


@dataclass(frozen=True)
class Whitening:
    """PCA-whitening: x -> (x - mean) @ components.T / sqrt(explained_variance).

    mean: (D,), components: (K, D), explained_variance: (K,), all float64.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, components=self.components, explained_variance=self.explained_variance)
        return buf.getvalue()


def read_whitening(path: str | Path) -> Whitening:
    """Read ``pca.npz`` (a store folder or the file itself), checking dtypes and shapes; BadInput otherwise.

    mean (D,), components (K, D) with K >= 1 and explained_variance (K,), all
    real numbers (integer or float), finite, the variances positive.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WHITENING_FILE
    if not exists_as_input(path):
        raise BadInput(path, None, "no PCA-whitening here (learn one with --pca-whiten on the database store)")
    names = ("mean", "components", "explained_variance")
    raw = read_npz(path, names, "a PCA-whitening file (mean, components, explained_variance)")
    for name in names:
        if raw[name].dtype.kind not in "iuf":
            raise BadInput(path, None, f"{name} holds {raw[name].dtype.str} values; a PCA-whitening holds real numbers")
    mean, comps, var = (np.asarray(raw[name], dtype=np.float64) for name in names)
    if mean.ndim != 1 or comps.ndim != 2 or comps.shape[1] != mean.shape[0] or var.shape != (comps.shape[0],):
        raise BadInput(path, None, f"inconsistent shapes: mean {mean.shape}, components {comps.shape}, variance {var.shape}")
    if comps.shape[0] == 0 or comps.shape[1] == 0:
        raise BadInput(path, None, f"components has shape {comps.shape}; a whitening keeps at least one component "
                                   "of at least one dimension")
    if not (np.all(np.isfinite(comps)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var > 0)):
        raise BadInput(path, None, "non-finite values or a non-positive variance")
    return Whitening(mean, comps, var)


def whiten_store(dest: Path, ids: list[str], blocks: Iterable[np.ndarray], dim: int, dtype: str, meta: dict,
                 failed: dict[str, str], pca_from: str | Path | None, pooling: str,
                 extra_files: Mapping[str, bytes] | None = None) -> None:
    """Write the store ``dest`` whitened: learned on these rows, or read from ``pca_from`` (its ``<pooling>/``).

    ``blocks``: the store's rows, (n_i, dim) each, in order. ``dest`` gets the
    whitening as ``pca.npz`` and a meta naming where it was learned, and ``extra_files``
    (name -> bytes, e.g. ``crops.csv``) beside them.
    """
    # The whitening is learned from the store as saved (after the dtype cast),
    # so a single run and merged shards learn exactly the same one.
    raw = write_store_blocks(dest.with_name(f".{dest.name}.raw"), ids, blocks, dim, dtype, meta, failed)
    if pca_from is None:
        whitening = learn_whitening(raw.features)
        origin = "this store"
    else:
        source = Path(pca_from)
        whitening = read_whitening(source / pooling if (source / pooling).is_dir() else source)
        origin = str(source)
        if whitening.mean.shape[0] != dim:
            raise BadInput(source, None, f"whitening is for {whitening.mean.shape[0]}-d features, these have {dim}")
    data = whitening.to_bytes()
    meta = {**meta, "normalisation": "l2, pca-whiten, l2",
            "whitening": {"learned_on": origin, "sha256": hashlib.sha256(data).hexdigest(), "dim_in": dim}}
    write_store_blocks(dest, ids, (apply_whitening(b, whitening) for b in iter_blocks(raw.features, 4096)),
                       whitening.components.shape[0], dtype, meta, failed,
                       extra_files={**(extra_files or {}), WHITENING_FILE: data})
    shutil.rmtree(raw.path)


def learn_whitening(features: np.ndarray, max_dim: int | None = None) -> Whitening:
    """PCA-whitening learned on a store's rows, (N, D) -> :class:`Whitening` with K <= min(D, N-1) components.

    scikit-learn ``PCA(whiten=True)``; components whose variance is
    numerically zero (N <= D leaves some) are dropped, since whitening would
    blow them up.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    n, d = x.shape
    if n < 2:
        raise BadInput(None, None, f"PCA-whitening needs at least 2 images, the store has {n}")
    k = min(d, n - 1, max_dim or d)
    pca = PCA(n_components=k, whiten=True, svd_solver="covariance_eigh" if n > d else "full", random_state=0).fit(x)
    var = pca.explained_variance_.astype(np.float64)
    keep = var > var.max() * 1e-10
    return Whitening(pca.mean_.astype(np.float64), pca.components_[keep].astype(np.float64), var[keep])


def apply_whitening(x: np.ndarray, w: Whitening) -> np.ndarray:
    """(N, D) -> (N, K): (x - mean) @ components.T / sqrt(variance), then L2-normalised, in float64."""
    y = (np.asarray(x, dtype=np.float64) - w.mean) @ w.components.T / np.sqrt(w.explained_variance)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return (y / np.maximum(norms, 1e-12)).astype(np.float32)
