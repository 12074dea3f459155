"""bpcr.text.tfidf (paper 001 §2.2, eq 3-7): preprocessing, TF-IDF, the strict threshold, chunked pairs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from bpcr.errors import BadInput
from bpcr.text.tfidf import is_english, preprocess, similar_pairs, tfidf_vectors, tokenize


def test_lowercase_punctuation_and_symbols_removed_no_stemming():
    assert tokenize("L'Oréal Paris Lipsticks, 3.4 OZ — NEW!") == ["l", "oréal", "paris", "lipsticks", "3", "4", "oz", "new"]
    assert tokenize("SK-II® Facial Treatment™ ★100%★ (50ml)") == ["sk", "ii", "facial", "treatment", "100", "50ml"]
    assert tokenize("anti-aging") == tokenize("Anti Aging") == ["anti", "aging"]
    assert tokenize("Lipsticks") == ["lipsticks"]  # no stemming
    assert tokenize("Brushes brushing") == ["brushes", "brushing"]


def test_nfkc_folds_fullwidth_and_spaces_collapse():
    assert preprocess("ＳＫ－ＩＩ  \t Ｍａｓｋ ") == "sk ii mask"
    assert tokenize("") == []
    assert tokenize(" -- !! ") == []


def test_non_english_rule():
    assert is_english("Maybelline Super Stay Matte Ink Liquid Lipstick")
    assert is_english("Crème de la Mer Moisturizing Cream")  # Latin script is kept
    assert is_english("")
    assert is_english("12345 ++")
    assert not is_english("美宝莲 口红")
    assert not is_english("Крем для лица")
    assert not is_english("립스틱 틴트")
    assert not is_english("كريم الوجه")
    # 5 of 11 letters are CJK (0.45 > 0.2): dropped.
    assert not is_english("SK-II 青春露 精华 230ml")
    # 3 of 21 letters (0.14): an English title with the brand's native name is kept.
    assert is_english("Shiseido Benefiance 資生堂")
    # Exactly the threshold is kept ("more than" drops): 1 of 5 letters.
    assert is_english("abcd 口", max_non_latin=0.2)
    assert not is_english("abc 口", max_non_latin=0.2)


# ---------------------------------------------------------------- eq 3-6


def test_idf_formula_against_hand_computation():
    docs = ["red lipstick", "red mascara", "blue lipstick red"]
    x, terms = tfidf_vectors(docs)
    assert terms == ["blue", "lipstick", "mascara", "red"]
    # Eq 4 with N = 3: IDF = ln((1 + 3) / (1 + DF)) + 1.
    idf = {"blue": math.log(4 / 2) + 1, "lipstick": math.log(4 / 3) + 1, "mascara": math.log(4 / 2) + 1, "red": 1.0}
    counts = [{"red": 1, "lipstick": 1}, {"red": 1, "mascara": 1}, {"blue": 1, "lipstick": 1, "red": 1}]
    for row, tf in enumerate(counts):
        raw = np.array([tf.get(t, 0) * idf[t] for t in terms])
        np.testing.assert_allclose(x[row].toarray().ravel(), raw / np.linalg.norm(raw), rtol=1e-12)
    # Eq 6 between documents 1 and 3, by hand.
    l, r, b = idf["lipstick"], idf["red"], idf["blue"]
    by_hand = (l * l + r * r) / (math.sqrt(l * l + r * r) * math.sqrt(b * b + l * l + r * r))
    assert (x[0] @ x[2].T).toarray()[0, 0] == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.6936, abs=1e-4)


def test_raw_term_count_is_tf():
    x, terms = tfidf_vectors(["mask mask serum", "serum", "toner"])
    row = dict(zip(terms, x[0].toarray().ravel()))
    idf_mask, idf_serum = math.log(4 / 2) + 1, math.log(4 / 3) + 1
    assert row["mask"] / row["serum"] == pytest.approx(2 * idf_mask / idf_serum)


# ---------------------------------------------------------------- eq 7


def _neighbour_sets(pairs: sp.csr_matrix) -> list[set[int]]:
    return [set(pairs.indices[pairs.indptr[i] : pairs.indptr[i + 1]].tolist()) for i in range(pairs.shape[0])]


def test_threshold_is_strict_and_excludes_self():
    c = math.sqrt(1 - 0.61**2)
    x = sp.csr_matrix(np.array([[1.0, 0.0], [0.6, 0.8], [0.61, c], [0.0, 0.0]]))
    pairs = similar_pairs(x, tau=0.6)
    # cos(0, 1) = 0.6 exactly: not > tau. cos(0, 2) = 0.61. cos(1, 2) = 0.366 + 0.8 c ~ 0.9999.
    assert _neighbour_sets(pairs) == [{2}, {2}, {0, 1}, set()]
    assert pairs[0, 2] == pytest.approx(0.61, abs=1e-7)
    assert pairs.diagonal().tolist() == [0, 0, 0, 0]
    assert _neighbour_sets(similar_pairs(x, tau=0.59)) == [{1, 2}, {0, 2}, {0, 1}, set()]


def test_identical_descriptions_are_neighbours_but_not_of_themselves():
    x, _ = tfidf_vectors(["velvet matte lipstick", "velvet matte lipstick", "hair oil"])
    assert _neighbour_sets(similar_pairs(x, 0.6)) == [{1}, {0}, set()]


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.6, 0.9])
def test_chunked_equals_unchunked_equals_dense(tau):
    rng = np.random.default_rng(7)
    dense = rng.random((120, 25)) * (rng.random((120, 25)) < 0.06 * (1 + np.arange(25) % 6))
    dense[::11] = 0
    dense[5] = dense[6]  # an exact duplicate
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    dense = np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)
    x = sp.csr_matrix(dense)
    whole = similar_pairs(x, tau, chunk_rows=10**6, max_candidates=10**12)
    one_row = similar_pairs(x, tau, chunk_rows=1, max_candidates=1)
    small = similar_pairs(x, tau, chunk_rows=7, max_candidates=50)
    for other in (one_row, small):
        assert (whole != other).nnz == 0
    cos = dense @ dense.T
    np.fill_diagonal(cos, 0)
    expected = cos > tau + 1e-9
    assert np.array_equal(whole.toarray() > 0, expected)
    np.testing.assert_allclose(whole.toarray()[expected], cos[expected], rtol=1e-6)
    assert (whole != whole.T).nnz == 0


def test_bad_tau_is_bad_input():
    with pytest.raises(BadInput):
        similar_pairs(sp.csr_matrix(np.eye(2)), tau=1.0)


@pytest.mark.parametrize("tau", [0.3, 0.6, 0.8])
def test_prefix_filtering_keeps_every_pair_above_tau_on_skewed_terms(tau):
    """Terms as common as brand words (a few in most rows) give every row a prefix, of many lengths: the pairs
    the bounds keep are exactly the dense cosines above tau (a bound half as wide loses some)."""
    rng = np.random.default_rng(11)
    n, m = 700, 80
    frequency = 0.9 / (1 + np.arange(m)) ** 0.8  # Zipf-like: the first terms in most rows
    dense = rng.random((n, m)) * (rng.random((n, m)) < frequency)
    dense[100:140] = dense[60:100] * rng.uniform(0.9, 1.1, (40, m))  # near-copies: pairs above every tau
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    dense = np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)
    pairs = similar_pairs(sp.csr_matrix(dense), tau, chunk_rows=37, max_candidates=5_000)
    cos = dense @ dense.T
    np.fill_diagonal(cos, 0)
    expected = cos > tau + 1e-9
    assert expected.sum() > 2 * 40  # the near-copies and more
    assert np.array_equal(pairs.toarray() > 0, expected)
    np.testing.assert_allclose(pairs.toarray()[expected], cos[expected], rtol=1e-6)
