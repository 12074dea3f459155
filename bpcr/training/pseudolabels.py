"""Training signal from the database alone: pseudo-categories, positive pairs, hard negatives, a split.

Perfect-500K has no labelled query photos, and the query ground truth is for
scoring only. ``bpcr train`` therefore learns from the database manifest
(images and descriptions) and nothing else; :func:`bpcr.training.leakguard.check_no_query_leak`
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
  top results of the current network), :func:`mine_negatives`: for each
  anchor, a pool image near it in the current feature space that is a
  *negative*. A wrong negative (the same product, relisted) teaches the
  network to push apart exactly what retrieval must bring together, and the
  nearest images are where relistings sit, so a pair is a negative only if
  every rule below holds; a pair that fails one is no pair at all (no label
  is better than a wrong one). :func:`negative_rules` applies them, in this
  order, and names the first that fails:

  a. ``category``: both listings have a pseudo-category and they differ.
     Guards against the same product type: a shade, a sibling, a relisting in
     other words of one product all sit in one category.
  b. ``brand``: the descriptions share no *distinctive* term, a term found in
     at most ``brand_share`` (1%) of the described listings, i.e. a term of
     high IDF (:func:`distinctive_terms`). Brand and product-line names are
     such terms, and they are spelt the same in every language, while
     generic words (types, sizes, marketing, units, "paris", "lab") are far
     more common. Guards against a relisting in French or Spanish (its type
     words differ, so it lands in another category with a low cosine, and
     the brand still gives it away) and against a sibling listing that omits
     the shade; a shared shade code ("Ruby 580") counts too. On the
     demo's 2,912 described listings a brand word occurs in 3 (median, at
     most 25), a line word ("silk", "essence") in 60-230, a type word in up
     to 330, so 1% (29) takes the brands and leaves the generic words.
     Brands that make several product types lose those cross-type
     negatives: the price of never calling a relisting a negative.
  c. ``image``: the descriptors' cosine is below ``image_tau`` (0.9). Guards
     against near-duplicate images whatever their text says: a relisting
     whose text is wrong, empty of the brand, or in an unusual spelling.
     With the untrained ImageNet EfficientNet-Lite0 GeM descriptors of the
     demo, 22% of same-product image pairs and 11% of same-family pairs
     score 0.9 or more against 0.005% of unrelated pairs (their 99.9th
     percentile is 0.85); training pulls relistings closer and pushes the
     rest apart, so the bar stays safe as the network improves.
  d. ``text``: both listings have usable text, and their TF-IDF cosine is
     below ``negative_tau`` (0.5) and at most ``tau`` (the positive pairs'
     0.9). Guards against near-identical descriptions (positives are never
     negatives) and listings too alike in words to call different; an image
     without usable text (empty, or in another script) is often a relisting
     of a product described elsewhere in English, so it is nobody's negative.

  Among an anchor's negatives, ranked by descriptor cosine, the ``skip``
  nearest are passed over (the likeliest to be a relisting that slipped
  through) and one of the next ``top`` is taken: the first, or a seeded
  draw, so an anchor meets several hard negatives over the epochs. On the
  demo (384 anchors, a pool of 768, untrained Lite0 GeM descriptors, three
  epochs' draws) the earlier rule's nearest negative was the anchor's own
  product for 124 of 1,081 anchors; these rules mine none, and
  rule b alone removes all 124 (rule d alone 80, c 52, a 11). What the
  nearest negative still shares with its anchor, for 92 anchors, is the
  catalogue family: a look-alike of another brand, the hardest true
  negative. Drawing from ``top`` 4 keeps 50 of them at ``skip`` 0 and 8 at
  ``skip`` 2, so ``skip`` defaults to 0 and is there for data whose
  relistings the rules miss; ``top`` 4 varies an anchor's negative from
  epoch to epoch.
  :func:`negative_mask` and :func:`hard_negatives` are the earlier, looser
  rule (another category *or* a cosine below ``negative_tau``), kept for
  callers not yet moved.
- Validation split (004 §3.3 forms training and validation sets of pairs):
  groups of images joined by positive pairs stay on one side, so a product
  never sits on both; a seeded ``share`` of the groups is held out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from bpcr.errors import BadInput
from bpcr.text.tfidf import is_english, similar_pairs, tfidf_vectors
from bpcr.training.options import TrainOptions

DEFAULT_CATEGORIES = TrainOptions.categories  # 002 App. A.1; declared in bpcr.training.options
DEFAULT_MIN_SIZE = TrainOptions.min_category_size
DEFAULT_DIMS = 64
DEFAULT_PAIR_TAU = TrainOptions.pair_tau
DEFAULT_NEGATIVE_TAU = TrainOptions.negative_tau
DEFAULT_BRAND_SHARE = 0.01  # distinctive terms: in at most this share of the described listings (rule b)
DEFAULT_IMAGE_TAU = 0.9  # descriptor cosine from which two images are near-duplicates (rule c)
DEFAULT_SKIP = 0  # nearest negatives passed over (see the module docstring)
DEFAULT_TOP = 4  # negatives, after those, one is taken from
RULES = ("category", "brand", "image", "text")  # negative_rules' codes 1..4, in the order they are applied


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


def distinctive_terms(x: sp.csr_matrix, brand_share: float = DEFAULT_BRAND_SHARE) -> np.ndarray:
    """``(M,)`` bool: the terms of ``x: (N, M)`` distinctive enough to name a brand or a product line (rule b).

    A term is distinctive when at most ``max(2, floor(brand_share * D))`` of
    the D rows with text hold it: a term of high IDF (IDF = ln((1+D)/(1+DF)) + 1,
    :mod:`bpcr.text.tfidf`), so on the demo 1% (DF <= 29) is IDF >= 5.6.
    The floor of 2 lets a term that two listings alone share count even in a
    tiny set. Language does not enter: brand and line names are the same words
    in every language.
    """
    if not 0.0 <= brand_share <= 1.0:
        raise BadInput(None, None, f"the distinctive-term share must be in [0, 1], got {brand_share}")
    x = sp.csr_matrix(x)
    df = np.bincount(x.indices[x.data != 0], minlength=x.shape[1])
    described = int((np.diff(x.indptr) > 0).sum())
    return (df >= 1) & (df <= max(2, int(np.floor(brand_share * described + 1e-9))))


def negative_rules(x: sp.csr_matrix, labels: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                   image_sims: np.ndarray | None = None, *, distinctive: np.ndarray | None = None,
                   image_tau: float = DEFAULT_IMAGE_TAU, negative_tau: float = DEFAULT_NEGATIVE_TAU,
                   tau: float = DEFAULT_PAIR_TAU) -> np.ndarray:
    """``(A, B)`` int8: 0 where row_b is a negative for row_a, else the first rule that fails (1-based in ``RULES``).

    The rules of the module docstring, applied in order: 1 ``category`` (not
    both labelled with different pseudo-categories; a row with itself always
    fails here), 2 ``brand`` (a shared term of ``distinctive``, default
    :func:`distinctive_terms` of ``x``), 3 ``image`` (``image_sims: (A, B)``,
    the descriptors' cosines, at or above ``image_tau``; None skips this rule),
    4 ``text`` (either row without text, or TF-IDF cosine at or above
    ``negative_tau``, or above ``tau``). ``labels: (N,)`` pseudo-categories, -1 for none.
    """
    x = sp.csr_matrix(x)
    if image_sims is not None and np.shape(image_sims) != (len(rows_a), len(rows_b)):
        raise BadInput(None, None, f"image_sims has shape {np.shape(image_sims)}, not {(len(rows_a), len(rows_b))}")
    return _rule_codes(x, _term_sets(x, distinctive), labels, np.asarray(rows_a, dtype=np.int64),
                       np.asarray(rows_b, dtype=np.int64), image_sims, image_tau, negative_tau, tau)


def _term_sets(x: sp.csr_matrix, distinctive: np.ndarray | None) -> sp.csr_matrix:
    """``(N, K)`` 0/1 rows: which of the K distinctive terms each row holds."""
    keep = np.flatnonzero(distinctive_terms(x) if distinctive is None else distinctive)
    return (x[:, keep] != 0).astype(np.float64).tocsr()


def _rule_codes(x: sp.csr_matrix, words: sp.csr_matrix, labels: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                image_sims: np.ndarray | None, image_tau: float, negative_tau: float, tau: float) -> np.ndarray:
    """:func:`negative_rules` on prepared inputs; each rule overwrites the later ones' codes."""
    la, lb = labels[rows_a][:, None], labels[rows_b][None, :]
    codes = np.zeros((len(rows_a), len(rows_b)), dtype=np.int8)
    texted = np.diff(x.indptr) > 0
    cos = text_cosines(x, rows_a, rows_b)
    codes[~(texted[rows_a][:, None] & texted[rows_b][None, :]) | (cos >= negative_tau) | (cos > tau)] = 4
    if image_sims is not None:
        codes[np.asarray(image_sims) >= image_tau] = 3
    shared = (words[rows_a] @ words[rows_b].T).tocoo()
    codes[shared.row, shared.col] = 2  # a product of 0/1 rows: every stored entry counts a shared term
    codes[~((la >= 0) & (lb >= 0) & (la != lb))] = 1
    return codes


def mine_negatives(x: sp.csr_matrix, labels: np.ndarray, anchors: np.ndarray, anchor_emb: np.ndarray,
                   pool: np.ndarray, pool_emb: np.ndarray, *, rng: np.random.Generator | None = None,
                   skip: int = DEFAULT_SKIP, top: int = DEFAULT_TOP, image_tau: float = DEFAULT_IMAGE_TAU,
                   negative_tau: float = DEFAULT_NEGATIVE_TAU, tau: float = DEFAULT_PAIR_TAU,
                   distinctive: np.ndarray | None = None, chunk: int = 256) -> tuple[np.ndarray, dict[str, int]]:
    """004 §3.3: one hard negative per anchor from ``pool``, by the rules of the module docstring.

    ``x: (N, M)`` TF-IDF rows and ``labels: (N,)`` pseudo-categories (-1 for
    none) of every row; ``anchors: (A,)`` and ``pool: (P,)`` rows (the pool may
    hold the anchors: an anchor is never its own candidate); ``anchor_emb:
    (A, D)`` and ``pool_emb: (P, D)`` their L2-normalised descriptors from the
    current network. ``distinctive``: rule b's terms (default
    :func:`distinctive_terms` of ``x``; pass it to spare the count per call).

    Each anchor ranks the other pool rows by descriptor cosine (nearest first,
    equal cosines by row) and walks down the ranking; a row that fails a rule
    (:func:`negative_rules`) is passed over. Of the negatives met, the first
    ``skip`` are passed over too, and the anchor's negative is one of the next
    ``top``: the first of them when ``rng`` is None, else a uniform draw among
    those that exist (``rng.random(A)`` is drawn once per call, whatever is
    found, so a seeded generator makes the result a function of the seed).
    Rule c reads the same cosines, ``anchor_emb @ pool_emb.T``, against
    ``image_tau``. Returns

    - ``negatives: (A,)`` int64 rows of ``pool``, -1 where an anchor has at most
      ``skip`` negatives in the pool;
    - ``counts``: over all anchors, the candidate pairs walked past before the
      walk stopped (at the ``skip + top``-th negative, or at the end of the pool):
      ``candidates`` in all, of which ``category``, ``brand``, ``image`` and
      ``text`` failed that rule first (each pair counted once, under the first
      rule that fails, in that order) and ``negatives`` passed, so candidates =
      category + brand + image + text + negatives. An anchor without a
      pseudo-category or text can have no negative; its walk would cover the
      whole pool under ``category`` and drown the rest, so it is left out and
      counted in ``no_text`` instead. ``none``: anchors left without a negative
      (those included).

    Works ``chunk`` anchors at a time (memory a few ``chunk x P`` arrays).
    """
    anchors, pool = np.asarray(anchors, dtype=np.int64), np.asarray(pool, dtype=np.int64)
    if skip < 0 or top < 1:
        raise BadInput(None, None, f"mining needs skip >= 0 and top >= 1, got skip={skip}, top={top}")
    if len(anchor_emb) != len(anchors) or len(pool_emb) != len(pool):
        raise BadInput(None, None, f"{len(anchors)} anchors with {len(anchor_emb)} descriptors, "
                                   f"{len(pool)} pool rows with {len(pool_emb)}")
    x = sp.csr_matrix(x)
    words = _term_sets(x, distinctive)
    draws = rng.random(len(anchors)) if rng is not None else None
    counts = {"candidates": 0, **{rule: 0 for rule in RULES}, "negatives": 0, "none": 0, "no_text": 0}
    texted = np.diff(x.indptr) > 0
    hopeless = (labels[anchors] < 0) | ~texted[anchors]
    out = np.full(len(anchors), -1, dtype=np.int64)
    # Pool columns in row order: a stable sort by cosine then breaks ties by row.
    by_row = np.argsort(pool, kind="stable")
    pool, pool_emb = pool[by_row], np.asarray(pool_emb, dtype=np.float32)[by_row]
    need = skip + top
    for lo in range(0, len(anchors) if len(pool) else 0, chunk):
        hi = min(lo + chunk, len(anchors))
        rows = anchors[lo:hi]
        sims = np.asarray(anchor_emb[lo:hi], dtype=np.float32) @ pool_emb.T
        codes = _rule_codes(x, words, labels, rows, pool, sims, image_tau, negative_tau, tau)
        itself = rows[:, None] == pool[None, :]
        scores = np.where((codes == 0) & ~itself, sims, -np.inf)
        ranked, found = _nearest(scores, need)
        _count_walk(counts, sims, codes, ranked, found == need, np.maximum(found - 1, 0),
                    ~itself & ~hopeless[lo:hi, None])
        avail = found - skip
        for a in np.flatnonzero(avail > 0):
            pick = skip if draws is None else skip + min(int(draws[lo + a] * avail[a]), avail[a] - 1)
            out[lo + a] = pool[ranked[a, pick]]
    counts["none"] = int((out < 0).sum())
    counts["no_text"] = int(hopeless.sum())
    return out, counts


def _count_walk(counts: dict[str, int], sims: np.ndarray, codes: np.ndarray, ranked: np.ndarray, full: np.ndarray,
                last_found: np.ndarray, counted: np.ndarray) -> None:
    """Add one chunk's walk to ``counts`` (:func:`mine_negatives`): every pool row ranked ahead of the last
    negative taken, equal cosines by row (all of them where fewer than asked were found), under the first rule
    it failed or as a negative. ``sims``, ``codes``, ``counted``: (B, P); ``ranked``: (B, k) pool columns of the
    negatives met, ``full``: (B,) whether all k were, ``last_found``: (B,) the position of the last one."""
    last = ranked[np.arange(len(ranked)), last_found]
    s_last = np.where(full, sims[np.arange(len(ranked)), last], -np.inf)[:, None]
    cols = np.arange(sims.shape[1])
    walked = (sims > s_last) | ((sims == s_last) & (cols[None, :] <= last[:, None])) | ~full[:, None]
    walked &= counted
    counts["candidates"] += int(walked.sum())
    for code, rule in enumerate(RULES, start=1):
        counts[rule] += int((walked & (codes == code)).sum())
    counts["negatives"] += int((walked & (codes == 0)).sum())


def _nearest(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores: (R, P)``, the columns of its ``k`` largest finite scores, largest first, equal scores
    by column: ``(R, k)`` (padded with 0) and how many each row has (``(R,)``, at most k)."""
    r, p = scores.shape
    finite = np.isfinite(scores)
    if k < p:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]
        above = scores > kth
        tied = (scores == kth) & finite
        room = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    else:
        chosen = finite
    found = chosen.sum(axis=1)
    row, col = np.nonzero(chosen)  # row-major: each row's columns ascending
    slot = np.arange(len(row)) - np.repeat(np.cumsum(found) - found, found)
    cols = np.zeros((r, max(k, 1)), dtype=np.int64)
    vals = np.full((r, max(k, 1)), -np.inf)
    cols[row, slot] = col
    vals[row, slot] = scores[row, col]
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)[:, :k], found
