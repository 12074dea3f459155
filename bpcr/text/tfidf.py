"""Text kernels of the textual index: preprocessing, TF-IDF and similar pairs.

Paper ``001_5e68fe888a05688c.txt`` §2.2, eq 3-7: each description is
preprocessed (non-English dropped, lowercase, punctuation and symbols removed,
tokenised, no stemming), turned into a TF-IDF vector (eq 3-5), and pairs with
cosine similarity (eq 6) strictly above ``tau`` are found (eq 7) without ever
forming an N x N matrix. :mod:`bpcr.text.index` stores the result as an index.

Decisions the paper leaves open:

- Non-English rule: a description is non-English when more than
  ``max_non_latin`` (default 0.2) of its letters are outside the Latin script
  (CJK, Hangul, kana, Cyrillic, Arabic, Thai, ...), counted after NFKC
  normalisation. Latin-script languages (French, Spanish, German) are *not*
  detected: English listings are full of French product names ("Eau de
  Parfum", "Crème de la Mer"), so any stopword rule would drop them too.
- Punctuation and symbols are every character of Unicode category P* or S*;
  each becomes a space, so "SK-II" gives "sk ii" and "anti-aging" matches
  "anti aging". Tokens are the whitespace-separated pieces, single characters
  and numbers included (shade "01" and size "50ml" are product identity).
- TF is the raw count; N in eq 4 is the number of kept (English, non-empty)
  descriptions; dropped or empty descriptions have no neighbours.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from bpcr.errors import BadInput
from bpcr.text.options import TextIndexOptions

# Bump when preprocessing changes, so a stored index built the old way is rebuilt.
PREPROCESSING = "PS-to-space-nfkc-lower-split/1"
# The defaults are declared once, in bpcr.text.options.TextIndexOptions.
DEFAULT_TAU = TextIndexOptions.tau
DEFAULT_MAX_NON_LATIN = TextIndexOptions.max_non_latin
DEFAULT_MAX_CANDIDATES = TextIndexOptions.max_candidates  # candidate pairs held at once (about 12 bytes each)
DEFAULT_CHUNK_ROWS = TextIndexOptions.chunk_rows
_PAIR_BATCH = 400_000
# Margins keep float rounding on the side of "more candidates".
_EPS = 1e-9
# A cosine within this of tau counts as equal to tau and is excluded (eq 7 is
# strict): otherwise a pair whose cosine is exactly tau on paper would pass or
# fail with the float summation order.
TIE_TOLERANCE = 1e-9


# ---------------------------------------------------------------- preprocessing


class _PunctuationToSpace(dict):
    """A ``str.translate`` table: P* and S* characters become a space, others stay."""

    def __missing__(self, codepoint: int) -> int:
        value = 32 if unicodedata.category(chr(codepoint))[0] in "PS" else codepoint
        self[codepoint] = value
        return value


_TO_SPACE = _PunctuationToSpace()


@lru_cache(maxsize=65536)
def _is_latin_letter(ch: str) -> bool:
    return "LATIN" in unicodedata.name(ch, "")


def is_english(text: str, max_non_latin: float = DEFAULT_MAX_NON_LATIN) -> bool:
    """True unless more than ``max_non_latin`` of the letters are outside the Latin script.

    A text without letters (empty, digits only) counts as English; it is then
    kept or found empty by the tokeniser.
    """
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return True
    letters = non_latin = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            if not _is_latin_letter(ch):
                non_latin += 1
    return letters == 0 or non_latin <= max_non_latin * letters


def preprocess(text: str) -> str:
    """Punctuation/symbols to spaces, NFKC, lowercase, spaces collapsed.

    Symbols go before NFKC too, or "™" would become the letters "TM".
    """
    text = unicodedata.normalize("NFKC", text.translate(_TO_SPACE)).lower().translate(_TO_SPACE)
    return " ".join(text.split())


def tokenize(text: str) -> list[str]:
    """The terms of one description (no stemming: "lipsticks" stays "lipsticks")."""
    return preprocess(text).split()


def _terms_as_given(terms: list[str]) -> list[str]:
    return terms


def tfidf_vectors(texts: list[str]) -> tuple[sp.csr_matrix, list[str]]:
    """TF-IDF vectors of eq 3-5, L2-normalised rows. Returns ``X: (len(texts), M)`` and the M terms.

    scikit-learn's ``TfidfVectorizer(smooth_idf=True, sublinear_tf=False)``
    computes exactly IDF = ln((1+N)/(1+DF)) + 1 (eq 4) with raw-count TF; the
    terms are ours (:func:`tokenize`). N counts the texts with at least one
    term: an empty description is no document and gets a zero row.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    tokens = [tokenize(text) for text in texts]
    documents = [terms for terms in tokens if terms]
    if not documents:
        return sp.csr_matrix((len(texts), 0), dtype=np.float64), []
    vectorizer = TfidfVectorizer(
        analyzer=_terms_as_given, smooth_idf=True, sublinear_tf=False, norm="l2", use_idf=True, dtype=np.float64
    )
    vectorizer.fit(documents)
    x = sp.csr_matrix(vectorizer.transform(tokens), dtype=np.float64)
    x.sort_indices()
    return x, [str(t) for t in vectorizer.get_feature_names_out()]


# ---------------------------------------------------------------- eq 7


def row_of_entry(indptr: np.ndarray) -> np.ndarray:
    """The row of every stored entry of a CSR matrix with this ``indptr``."""
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))


def similar_pairs(
    x: sp.csr_matrix,
    tau: float = DEFAULT_TAU,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> sp.csr_matrix:
    """Eq 7: every pair (i, j), i != j, with cosine(x_i, x_j) > tau, as a symmetric CSR (N, N) of float32 cosines.

    ``x: (N, M)`` has L2-normalised (or zero) rows. Never forms a dense N x N
    matrix: it works in row chunks of ``X[chunk] @ P.T`` (prefix filtering, as
    in all-pairs similarity search). With terms ordered most common first,
    ``P`` is ``X`` without each row's leading (most common) terms whose weights
    have norm <= tau: if x shares no term with y_P, x.y = x.y_S <= ||y_S|| <= tau
    (Cauchy-Schwarz), so every passing pair is a nonzero of ``X @ P.T``, and
    words like "ml" or "new" no longer turn each chunk into N columns as in a
    plain ``X[chunk] @ X.T``.
    Candidates are then pruned by that same bound and decided by their exact
    float64 cosine; one within ``TIE_TOLERANCE`` of tau counts as equal to it.
    """
    if not 0.0 <= tau < 1.0:
        raise BadInput(None, None, f"tau must be in [0, 1), got {tau}")
    n = x.shape[0]
    x = sp.csr_matrix(x, dtype=np.float64)
    if x.nnz == 0 or n < 2:
        return sp.csr_matrix((n, n), dtype=np.float32)
    x = _common_terms_first(x)
    rows = row_of_entry(x.indptr)
    squares = x.data * x.data
    total = np.cumsum(squares)
    before_row = np.concatenate(([0.0], total))[x.indptr[:-1]]
    within_row = total - np.repeat(before_row, np.diff(x.indptr))
    dropped = within_row <= tau * tau - _EPS
    dropped_norm = np.sqrt(np.bincount(rows, weights=squares * dropped, minlength=n))
    kept = ~dropped
    p = sp.csr_matrix(
        (x.data[kept], x.indices[kept], np.concatenate(([0], np.cumsum(np.bincount(rows[kept], minlength=n))))),
        shape=x.shape,
    )
    # Cumulative squared norms addressable by (row, column), for the bounds.
    n_cols = np.int64(x.shape[1])
    keys = rows * n_cols + x.indices
    last_dropped = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_dropped, rows[dropped], x.indices[dropped].astype(np.int64))
    postings = np.bincount(p.indices, minlength=x.shape[1])
    work = np.bincount(rows, weights=postings[x.indices], minlength=n)

    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    found_s: list[np.ndarray] = []
    for start, stop in _chunks(work, chunk_rows, max_candidates):
        # Each pair once (j > i), mirrored below; columns before the chunk are never formed.
        partial = sp.coo_matrix(x[start:stop] @ p[start:].T)
        ii = partial.row.astype(np.int64) + start
        jj = partial.col.astype(np.int64) + start
        # x.y = x.y_P + x.y_S and x.y_S <= ||x over y_S's columns|| * ||y_S||.
        keep = (jj > ii) & (partial.data + dropped_norm[jj] > tau - _EPS)
        ii, jj, part = ii[keep], jj[keep], partial.data[keep]
        pos = np.searchsorted(keys, ii * n_cols + last_dropped[jj], side="right") - 1
        reach = np.where(pos >= x.indptr[ii], within_row[np.maximum(pos, 0)], 0.0)
        keep = part + np.sqrt(reach) * dropped_norm[jj] > tau - _EPS
        ii, jj = ii[keep], jj[keep]
        for b in range(0, len(ii), _PAIR_BATCH):
            bi, bj = ii[b : b + _PAIR_BATCH], jj[b : b + _PAIR_BATCH]
            exact = np.asarray(x[bi].multiply(x[bj]).sum(axis=1)).ravel()
            hit = exact > tau + TIE_TOLERANCE
            found_i.append(bi[hit])
            found_j.append(bj[hit])
            found_s.append(exact[hit])
    i_all = np.concatenate(found_i) if found_i else np.empty(0, np.int64)
    j_all = np.concatenate(found_j) if found_j else np.empty(0, np.int64)
    s_all = np.concatenate(found_s) if found_s else np.empty(0, np.float64)
    sims = sp.coo_matrix(
        (np.concatenate((s_all, s_all)).astype(np.float32), (np.concatenate((i_all, j_all)), np.concatenate((j_all, i_all)))),
        shape=(n, n),
    )
    out = sp.csr_matrix(sims)
    out.sort_indices()
    return out


def _common_terms_first(x: sp.csr_matrix) -> sp.csr_matrix:
    """``x`` with its columns ordered most common first (ties by column), so each row's entries run common -> rare."""
    df = np.bincount(x.indices, minlength=x.shape[1])
    order = np.lexsort((np.arange(x.shape[1]), -df))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    # Copies: sorting in place must never reorder the caller's arrays.
    ranked = sp.csr_matrix((x.data.copy(), rank[x.indices], x.indptr.copy()), shape=x.shape)
    ranked.sort_indices()
    return ranked


def _chunks(work: np.ndarray, chunk_rows: int, max_candidates: int) -> Iterator[tuple[int, int]]:
    """Row ranges ``(start, stop)`` of at most ``chunk_rows`` rows whose candidate ``work`` sums to at most
    ``max_candidates`` (a row over it alone is a range of its own)."""
    n, start = len(work), 0
    while start < n:
        stop = start + 1
        budget = work[start]
        while stop < n and stop - start < chunk_rows and budget + work[stop] <= max_candidates:
            budget += work[stop]
            stop += 1
        yield start, stop
        start = stop
