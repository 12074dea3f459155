"""The combination of several feature stores' rows (:mod:`bpcr.features.combine` is the stage that writes it):
the transform, what it learns on the database, and ``combination.npz``, its parameters.

For S stores' rows matched by ID:

    y   = [w_1 x_1 / |x_1|, ..., w_S x_S / |x_S|]        each input L2-normalised here, then weighted
    y   = (y - mu) / sigma                                 z-norm: per dimension, mu and sigma of the database
    y   = P (y - m)  [/ sqrt(lambda)]                      PCA: K components of the database [whitened]
    y   = y / |y|                                          always

Each input is L2-normalised again although stores already are (float16 rounding leaves |x| = 1 +- 1e-3, and a
store's meta may say otherwise); a zero row stays zero. ``sigma`` is the population standard deviation
(``ddof=0``, as scikit-learn's StandardScaler), and a dimension constant over the database (sigma < 1e-12, e.g.
a ReLU channel never active) is divided by 1: it is 0 after centring for every database row. The PCA is
scikit-learn's ``PCA(n_components=K, whiten=..., random_state=seed)``, so a row projects as its ``transform``
does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.io.npyio import npz_bytes, read_npz
from bpcr.io.textio import exists_as_input

PARAMS_FILE = "combination.npz"
CONSTANT = 1e-12  # a database standard deviation below this: the dimension is constant, divided by 1
_ARRAYS = ("weights", "dims", "znorm_mean", "znorm_std", "pca_mean", "pca_components", "pca_explained_variance",
           "pca_whiten")


@dataclass(frozen=True)
class Combination:
    """The parameters of a combination (module docstring), float64 and int64.

    ``weights (S,)``, ``dims (S,)`` each input's dimension (D = their sum); ``znorm_mean``, ``znorm_std`` (D,) or
    None; ``pca_mean (D,)``, ``pca_components (K, D)``, ``pca_explained_variance (K,)`` or None; ``pca_whiten``.
    """

    weights: np.ndarray
    dims: np.ndarray
    znorm_mean: np.ndarray | None = None
    znorm_std: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    pca_explained_variance: np.ndarray | None = None
    pca_whiten: bool = False

    @property
    def dim_in(self) -> int:
        return int(self.dims.sum())

    @property
    def dim_out(self) -> int:
        return self.dim_in if self.pca_components is None else int(self.pca_components.shape[0])

    def to_bytes(self) -> bytes:
        """``combination.npz``: every array always present (an unused step's are empty), fixed timestamps, so the
        same parameters always have the same bytes and sha256."""
        d = self.dim_in
        empty = np.zeros(0)
        return npz_bytes({
            "weights": np.asarray(self.weights, dtype=np.float64), "dims": np.asarray(self.dims, dtype=np.int64),
            "znorm_mean": empty if self.znorm_mean is None else self.znorm_mean,
            "znorm_std": empty if self.znorm_std is None else self.znorm_std,
            "pca_mean": empty if self.pca_mean is None else self.pca_mean,
            "pca_components": np.zeros((0, d)) if self.pca_components is None else self.pca_components,
            "pca_explained_variance": empty if self.pca_explained_variance is None else self.pca_explained_variance,
            "pca_whiten": np.asarray(int(self.pca_whiten), dtype=np.int64)})


# ---------------------------------------------------------------- the transform


def concatenate(parts: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``parts``: (n, D_s) rows of each store, matched row by row -> (n, sum D_s) float64, each part
    L2-normalised row-wise (a zero row stays zero) and multiplied by its weight."""
    out = []
    for x, w in zip(parts, weights):
        x = np.asarray(x, dtype=np.float64)
        out.append(float(w) * x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    return np.hstack(out)


def apply_combination(parts: Sequence[np.ndarray], c: Combination) -> np.ndarray:
    """(n, D_s) rows of each store -> (n, K) combined rows (module docstring), float64 inside, float32 out."""
    y = concatenate(parts, c.weights)
    if c.znorm_mean is not None:
        y = (y - c.znorm_mean) / c.znorm_std
    if c.pca_components is not None:
        y = (y - c.pca_mean) @ c.pca_components.T
        if c.pca_whiten:
            y /= np.sqrt(c.pca_explained_variance)
    return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def znorm_stats(blocks: Iterator[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-dimension mean and population standard deviation of rows arriving in blocks (Chan et al.'s pairwise
    update, in float64); a constant dimension's deviation is 1 (module docstring). Returns (mean, std, the number
    of constant dimensions)."""
    n, mean, m2 = 0, None, None
    for block in blocks:
        block = np.asarray(block, dtype=np.float64)
        nb = block.shape[0]
        if nb == 0:
            continue
        mb = block.mean(axis=0)
        m2b = ((block - mb) ** 2).sum(axis=0)
        if mean is None:
            n, mean, m2 = nb, mb, m2b
            continue
        delta = mb - mean
        total = n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta ** 2 * (n * nb / total)
        n = total
    if mean is None or n < 2:
        raise BadInput(None, None, f"z-normalisation needs at least 2 database rows, got {n}")
    std = np.sqrt(m2 / n)
    constant = std < CONSTANT
    std[constant] = 1.0
    return mean, std, int(constant.sum())


def learn_pca(z: np.ndarray, k: int, whiten: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray, float]:
    """scikit-learn's ``PCA(n_components=k, whiten=whiten, random_state=seed)`` on ``z: (N, D)``; returns its
    mean (D,), components (k, D), explained variance (k,) and the share of the variance the k components keep."""
    from sklearn.decomposition import PCA

    n, d = z.shape
    if k > min(n, d):
        raise BadInput(None, None, f"--pca {k}: at most min(rows, dimensions) = min({n}, {d}) components")
    pca = PCA(n_components=k, whiten=whiten, random_state=seed).fit(np.asarray(z, dtype=np.float64))
    var = pca.explained_variance_.astype(np.float64)
    if whiten and not np.all(var > var.max() * 1e-10):
        kept = int(np.sum(var > var.max() * 1e-10))
        raise BadInput(None, None, f"--pca-whiten {k}: only {kept} components have variance; whitening the others "
                                   "divides by zero (keep fewer)")
    return (pca.mean_.astype(np.float64), pca.components_.astype(np.float64), var,
            float(pca.explained_variance_ratio_.sum()))


# ---------------------------------------------------------------- the parameters file


def read_combination(path: str | Path) -> Combination:
    """Read ``combination.npz`` (a store folder or the file itself), checking dtypes, shapes and values; BadInput
    (one line naming the file) otherwise.

    weights (S,) finite, >= 0, not all 0; dims (S,) integers >= 1 summing to D; znorm_mean and znorm_std both (D,)
    (std > 0) or both empty; pca_components (K, D) with 0 <= K <= D, pca_mean (D,) and pca_explained_variance (K,)
    when K >= 1 (empty otherwise); pca_whiten one integer, 0 or 1 (0 without PCA, and then every variance > 0).
    """
    path = Path(path)
    if path.is_dir():
        path = path / PARAMS_FILE
    if not exists_as_input(path):
        raise BadInput(path, None, "no combination here (learn one with `bpcr combine DATABASE_STORE ... --out DIR`)")
    raw = read_npz(path, _ARRAYS, f"a combination file ({', '.join(_ARRAYS)})")

    def bad(reason: str) -> BadInput:
        return BadInput(path, None, reason)

    for name in _ARRAYS:
        if raw[name].dtype.kind not in ("iu" if name in ("dims", "pca_whiten") else "iuf"):
            kind = "integers" if name in ("dims", "pca_whiten") else "real numbers"
            raise bad(f"{name} holds {raw[name].dtype.str} values; a combination holds {kind} there")
    a = {name: np.asarray(raw[name], dtype=np.int64 if name in ("dims", "pca_whiten") else np.float64)
         for name in _ARRAYS}
    weights, dims = a["weights"], a["dims"]
    if weights.ndim != 1 or weights.shape[0] == 0 or dims.shape != weights.shape:
        raise bad(f"inconsistent shapes: weights {weights.shape}, dims {dims.shape} (expected both (S,), S >= 1)")
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and np.any(weights > 0)):
        raise bad(f"weights {weights.tolist()}: each must be finite and >= 0, not all 0")
    if not np.all(dims >= 1):
        raise bad(f"dims {dims.tolist()}: each input has at least one dimension")
    d = int(dims.sum())
    for name in _ARRAYS[2:7]:
        if not np.all(np.isfinite(a[name])):
            raise bad(f"{name} holds NaN or infinity")
    mean, std = a["znorm_mean"], a["znorm_std"]
    if not ((mean.shape == std.shape == (d,)) or (mean.shape == std.shape == (0,))):
        raise bad(f"inconsistent shapes: znorm_mean {mean.shape}, znorm_std {std.shape} (expected both ({d},) or "
                  "both empty)")
    if not np.all(std > 0):
        raise bad("znorm_std holds a standard deviation <= 0")
    comps, pmean, var = a["pca_components"], a["pca_mean"], a["pca_explained_variance"]
    k = comps.shape[0] if comps.ndim == 2 else -1
    if comps.ndim != 2 or comps.shape[1] != d or k > d:
        raise bad(f"pca_components has shape {comps.shape}; expected (K, {d}) with K <= {d}")
    if pmean.shape != ((d,) if k else (0,)) or var.shape != (k,):
        raise bad(f"inconsistent shapes: pca_mean {pmean.shape}, pca_explained_variance {var.shape} for {k} "
                  "components")
    whiten = a["pca_whiten"]
    if whiten.shape != () or int(whiten) not in (0, 1) or (int(whiten) and not k):
        raise bad(f"pca_whiten must be one integer, 0 or 1 (0 without PCA), found {whiten.tolist()!r}")
    if int(whiten) and not np.all(var > 0):
        raise bad("pca_explained_variance holds a variance <= 0, which whitening divides by")
    return Combination(weights, dims, mean if d == mean.shape[0] else None, std if d == std.shape[0] else None,
                       pmean if k else None, comps if k else None, var if k else None, bool(int(whiten)))
