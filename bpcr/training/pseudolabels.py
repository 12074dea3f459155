"""Training signal from the database alone: pseudo-categories, positive pairs, hard negatives, a split.

Perfect-500K has no labelled query photos, and the query ground truth is for
scoring only. ``bpcr train`` therefore learns from the database manifest
(images and descriptions) and nothing else; :func:`check_no_query_leak`
refuses a manifest that shares an ID, a file or an image's bytes with the
query set beside it or with a ground truth.

- Pseudo-categories (002 App. A.1, "Perfect-30K": 44 coarse categories counted
  from the TF-IDF keywords of the descriptions, then a classifier trained on
  them). 002 picked its categories by hand; here they are found by clustering:
  TF-IDF vectors (:mod:`bpcr.text.tfidf`, 001 eq 3-5), reduced to ``dims`` latent
  dimensions (truncated SVD, i.e. LSA: raw sparse k-means put 2/3 of the demo
  in one cluster, LSA then k-means gives product types), L2-normalised, k-means
  with ``n_categories`` clusters and a seed. A cluster smaller than
  ``min_size`` is dissolved and its members join the nearest remaining
  centroid, smallest first. Images without usable text (empty or non-English
  descriptions) get no category (-1).
- Positive pairs (004 §3.3 "positive pairs"): images whose descriptions are
  near-identical, TF-IDF cosine above ``tau`` (default 0.9, far above the
  textual index's 0.6: on the demo 0.9 pairs are relistings of one product,
  while 0.6-0.8 still joins shades of one line). Each image also pairs with an
  augmented copy of itself (:mod:`bpcr.training.augment`); that pair is made by the
  training loop.
- Hard negatives (004 §3.3 "hard negative pairs": false positives among the
  top results of the current network): for each anchor, the images of a pool
  nearest to it in the current feature space that are *negatives*: in another
  pseudo-category, or textually far (cosine below ``negative_tau``), and never
  a positive. Pairs in between are neither (a shade of the same line, or the
  same product listed in other words): no label is better than a wrong one.
  For the same reason an image without usable text is never a negative.
- Validation split (004 §3.3 forms training and validation sets of pairs):
  groups of images joined by positive pairs stay on one side, so a product
  never sits on both; a seeded ``share`` of the groups is held out.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from bpcr.errors import BadInput
from bpcr.dataset.gt import read_ground_truth
from bpcr.dataset.manifest import Manifest, read_manifest
from bpcr.text.tfidf import is_english, similar_pairs, tfidf_vectors
from bpcr.training.options import TrainOptions

DEFAULT_CATEGORIES = TrainOptions.categories  # 002 App. A.1; declared in bpcr.training.options
DEFAULT_MIN_SIZE = TrainOptions.min_category_size
DEFAULT_DIMS = 64
DEFAULT_PAIR_TAU = TrainOptions.pair_tau
DEFAULT_NEGATIVE_TAU = TrainOptions.negative_tau
QUERY_MANIFEST = "queries.csv"


@dataclass
class Categories:
    """Pseudo-categories: ``labels: (N,)`` int64 in 0..C-1 or -1; per category its size and top words."""

    labels: np.ndarray
    top_words: list[list[str]]
    sizes: list[int]

    @property
    def count(self) -> int:
        return len(self.sizes)


def description_vectors(descriptions: list[str]) -> tuple[sp.csr_matrix, list[str]]:
    """TF-IDF rows (L2-normalised; zero for empty or non-English text) and terms, as the textual index makes them."""
    return tfidf_vectors([text if is_english(text) else "" for text in descriptions])


def pseudo_categories(x: sp.csr_matrix, terms: list[str], n_categories: int = DEFAULT_CATEGORIES,
                      min_size: int = DEFAULT_MIN_SIZE, dims: int = DEFAULT_DIMS, seed: int = 0,
                      top: int = 6) -> Categories:
    """Cluster the TF-IDF rows ``x: (N, M)`` into at most ``n_categories`` categories of ``min_size`` or more.

    Deterministic for a seed. Categories are numbered by decreasing size (ties by
    their smallest row), so labels do not depend on k-means' cluster order.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    if n_categories < 2:
        raise BadInput(None, None, f"--categories must be at least 2, got {n_categories}")
    if min_size < 1:
        raise BadInput(None, None, f"the minimum category size must be at least 1, got {min_size}")
    n = x.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    texted = np.flatnonzero(np.diff(x.indptr) > 0)
    if len(texted) < max(2 * min_size, n_categories) or x.shape[1] < 3:
        raise BadInput(None, None, f"only {len(texted)} images have a usable description: too few for "
                                   f"{n_categories} pseudo-categories of at least {min_size}")
    rows = x[texted]
    k = min(dims, rows.shape[1] - 1, len(texted) - 1)
    latent = TruncatedSVD(k, algorithm="randomized", random_state=seed).fit_transform(rows)
    latent /= np.maximum(np.linalg.norm(latent, axis=1, keepdims=True), 1e-12)
    km = KMeans(n_categories, n_init=3, random_state=seed).fit(latent)
    assign = km.labels_.astype(np.int64)
    centres = km.cluster_centers_ / np.maximum(np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True), 1e-12)
    alive = np.ones(n_categories, dtype=bool)
    while True:
        sizes = np.bincount(assign, minlength=n_categories)
        small = [c for c in np.argsort(sizes, kind="stable") if alive[c] and sizes[c] < min_size]
        if not small or alive.sum() <= 1:
            break
        gone = small[0]
        alive[gone] = False
        members = assign == gone
        scores = latent[members] @ centres.T
        scores[:, ~alive] = -np.inf
        assign[members] = scores.argmax(axis=1)
    sizes = np.bincount(assign, minlength=n_categories)
    kept = [c for c in range(n_categories) if alive[c] and sizes[c] > 0]
    first_row = {c: int(np.flatnonzero(assign == c)[0]) for c in kept}
    order = sorted(kept, key=lambda c: (-sizes[c], first_row[c]))
    renumber = {c: i for i, c in enumerate(order)}
    labels[texted] = [renumber[c] for c in assign]
    terms_arr = np.asarray(terms)
    top_words = []
    for c in range(len(order)):
        mean = np.asarray(x[labels == c].mean(axis=0)).ravel()
        best = np.lexsort((np.arange(len(mean)), -mean))[:top]
        top_words.append([str(t) for t in terms_arr[best]])
    return Categories(labels, top_words, [int(v) for v in np.bincount(labels[labels >= 0], minlength=len(order))])


def positive_pairs(x: sp.csr_matrix, tau: float = DEFAULT_PAIR_TAU) -> np.ndarray:
    """Rows with near-identical descriptions: ``(P, 2)`` int64, i < j, sorted; TF-IDF cosine > ``tau``."""
    sims = sp.triu(similar_pairs(x, tau), k=1).tocoo()
    pairs = np.stack([sims.row, sims.col], axis=1).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))] if len(pairs) else pairs.reshape(0, 2)


def partners(n: int, pairs: np.ndarray) -> list[np.ndarray]:
    """For each row, its positive partners (sorted)."""
    out: list[list[int]] = [[] for _ in range(n)]
    for i, j in pairs.tolist():
        out[i].append(j)
        out[j].append(i)
    return [np.asarray(sorted(p), dtype=np.int64) for p in out]


def split_validation(n: int, pairs: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows -> (train rows, validation rows), sorted; positive-pair groups stay whole.

    About ``share`` of the rows are held out, whole groups drawn in a seeded order.
    """
    if not 0.0 <= share < 1.0:
        raise BadInput(None, None, f"the validation share must be in [0, 1), got {share}")
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else \
        sp.coo_matrix((n, n))
    _, group = connected_components(graph, directed=False)
    order = np.random.default_rng([seed, 7]).permutation(group.max() + 1 if n else 0)
    sizes = np.bincount(group)
    held, target = [], round(share * n)
    count = 0
    for g in order:
        if count >= target:
            break
        held.append(g)
        count += sizes[g]
    val = np.isin(group, held)
    return np.flatnonzero(~val), np.flatnonzero(val)


def text_cosines(x: sp.csr_matrix, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """Dense TF-IDF cosines ``(len(rows_a), len(rows_b))``."""
    return np.asarray((x[rows_a] @ x[rows_b].T).todense(), dtype=np.float64)


def negative_mask(x: sp.csr_matrix, labels: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                  negative_tau: float = DEFAULT_NEGATIVE_TAU, tau: float = DEFAULT_PAIR_TAU) -> np.ndarray:
    """``(A, B)`` bool: row_b is a negative for row_a (see the module docstring)."""
    cos = text_cosines(x, rows_a, rows_b)
    la, lb = labels[rows_a][:, None], labels[rows_b][None, :]
    other_category = (la >= 0) & (lb >= 0) & (la != lb)
    # Unknown is not far: a listing without usable text (empty, or in another script) is often a
    # relisting of a product described elsewhere in English, so it is nobody's negative.
    texted = np.diff(x.indptr) > 0
    known = texted[rows_a][:, None] & texted[rows_b][None, :]
    mask = ((cos < negative_tau) | other_category) & (cos <= tau) & known
    return mask & (rows_a[:, None] != rows_b[None, :])


def hard_negatives(x: sp.csr_matrix, labels: np.ndarray, anchors: np.ndarray, anchor_emb: np.ndarray,
                   pool: np.ndarray, pool_emb: np.ndarray, k: int = 1, negative_tau: float = DEFAULT_NEGATIVE_TAU,
                   tau: float = DEFAULT_PAIR_TAU, chunk: int = 256) -> np.ndarray:
    """004 §3.3: for each anchor, the ``k`` pool rows nearest in feature space among its negatives.

    ``anchor_emb: (A, D)``, ``pool_emb: (P, D)``: L2-normalised descriptors of
    the rows ``anchors`` and ``pool`` from the current network; negatives as in
    :func:`negative_mask`. Returns ``(A, k)`` rows of ``pool``, nearest first,
    -1 where fewer than k negatives exist (equal similarities among the k
    kept sort by row). Works ``chunk`` anchors at a time (memory ``chunk x P``).
    """
    out = np.full((len(anchors), k), -1, dtype=np.int64)
    pool_emb = pool_emb.astype(np.float32)
    k_eff = min(k, len(pool))
    if k_eff == 0:
        return out
    for lo in range(0, len(anchors), chunk):
        hi = min(lo + chunk, len(anchors))
        sims = anchor_emb[lo:hi].astype(np.float32) @ pool_emb.T
        sims[~negative_mask(x, labels, anchors[lo:hi], pool, negative_tau, tau)] = -np.inf
        top = np.argpartition(-sims, k_eff - 1, axis=1)[:, :k_eff]
        for a in range(hi - lo):
            cand = top[a]
            cand = cand[np.lexsort((pool[cand], -sims[a, cand]))]
            good = cand[np.isfinite(sims[a, cand])]
            out[lo + a, :len(good)] = pool[good]
    return out


# ---------------------------------------------------------------- the no-query-leak guard


def check_no_query_leak(manifest: Manifest, queries: str | Path | None = None,
                        ground_truth: str | Path | None = None) -> dict:
    """Refuse (BadInput) a training manifest that reaches the queries in any way.

    ``queries``: a query manifest (default: ``queries.csv`` beside the
    training manifest, when there is one). Refused: a training ID that is a
    query ID, or a query of ``ground_truth``; a training image that is a query
    image file, or holds a query image's bytes (sizes compared first, then
    sha256). Returns what was checked, for ``train.json``.
    """
    if queries is None:
        beside = manifest.path.parent / QUERY_MANIFEST
        queries = beside if beside.is_file() and beside.resolve() != manifest.path.resolve() else None
    if queries is not None and Path(queries).resolve() == manifest.path.resolve():
        raise BadInput(manifest.path, None, "this is the query manifest: train on the database manifest only")
    ids = set(manifest.ids)
    report: dict = {"query_manifest": None, "query_ids": 0, "ground_truth": None, "gt_queries": 0,
                    "same_size_files_hashed": 0}
    if ground_truth is not None:
        gt = read_ground_truth(ground_truth)
        leaked = sorted(ids.intersection(gt))
        if leaked:
            raise BadInput(manifest.path, None, f"holds {len(leaked)} query ID(s) of the ground truth {ground_truth} "
                                                f"(first {leaked[0]!r}): training may never see a query")
        report.update(ground_truth=str(ground_truth), gt_queries=len(gt))
    if queries is None:
        return report
    qman = read_manifest(queries)
    leaked = sorted(ids.intersection(qman.ids))
    if leaked:
        raise BadInput(manifest.path, None, f"shares {len(leaked)} ID(s) with the query manifest {queries} "
                                            f"(first {leaked[0]!r}): training may never see a query")
    report.update(query_manifest=str(queries), query_ids=len(qman))
    query_files = {os.path.realpath(p): i for i, p in zip(qman.ids, qman.paths)}
    by_size: dict[int, list[str]] = {}
    for path in query_files:
        try:
            by_size.setdefault(os.stat(path).st_size, []).append(path)
        except OSError:
            continue
    digests: dict[str, str] = {}
    for image_id, path in zip(manifest.ids, manifest.paths):
        real = os.path.realpath(path)
        if real in query_files:
            raise BadInput(manifest.path, None, f"image {image_id!r} is the query image file of "
                                                f"{query_files[real]!r}: training may never see a query")
        try:
            size = os.stat(real).st_size
        except OSError:
            continue
        for qpath in by_size.get(size, ()):
            report["same_size_files_hashed"] += 1
            if qpath not in digests:
                digests[qpath] = _sha256(qpath)
            if _sha256(real) == digests[qpath]:
                raise BadInput(manifest.path, None, f"image {image_id!r} has the bytes of query image "
                                                    f"{query_files[qpath]!r}: training may never see a query")
    return report


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
