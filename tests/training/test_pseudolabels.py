"""Training signal from the database (bpcr.training.pseudolabels): categories, pairs, negatives, split, the leak guard."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bpcr.errors import BadInput
from bpcr.dataset.manifest import read_manifest, write_manifest
from bpcr.training.pseudolabels import (check_no_query_leak, description_vectors, hard_negatives, negative_mask, partners,
                               positive_pairs, pseudo_categories, split_validation)

# Three product types of four products each (rows 0-11); rows 12-13 relist row 0 in other words, row 14
# relists row 1 less closely (cosine 0.78); row 15 is Chinese, row 16 empty.
TYPES = ("matte lipstick 3.5g", "volume shampoo 250ml", "nail polish 15ml")
PRODUCTS = (("Kita", "Coral"), ("Sovi", "Rose"), ("Lecla", "Mauve"), ("Paxa", "Plum"),
            ("Irig", "Aqua"), ("Talu", "Aloe"), ("Veti", "Rice"), ("Mira", "Mint"),
            ("Glona", "Ivory"), ("Claly", "Nude"), ("Soze", "Cocoa"), ("Rabel", "Sand"))
DESCRIPTIONS = [f"{PRODUCTS[4 * t + k][0]} {TYPES[t]} {PRODUCTS[4 * t + k][1]}" for t in range(3) for k in range(4)] + [
    "KITA matte lipstick 3.5g - coral", "kita MATTE lipstick (3.5g) coral", "Sovi lipstick Rose",
    "口红 珊瑚色 268", ""]


@pytest.fixture(scope="module")
def vectors():
    return description_vectors(DESCRIPTIONS)


def test_categories_follow_the_product_type(vectors):
    x, terms = vectors
    cats = pseudo_categories(x, terms, n_categories=3, min_size=3, seed=0)
    labels = cats.labels
    assert labels[15] == -1 and labels[16] == -1  # non-English, empty: no category
    by_type = [set(labels[4 * t:4 * t + 4]) for t in range(3)]
    assert all(len(s) == 1 for s in by_type) and len(set.union(*by_type)) == 3
    assert set(labels[12:15]) == by_type[0]  # relistings join their type
    assert sorted(cats.sizes, reverse=True) == cats.sizes and sum(cats.sizes) == 15
    words = {w for top in cats.top_words for w in top[:2]}
    assert {"lipstick", "shampoo"} <= words
    again = pseudo_categories(x, terms, n_categories=3, min_size=3, seed=0)
    assert np.array_equal(again.labels, labels)


def test_small_categories_are_merged(vectors):
    x, terms = vectors
    cats = pseudo_categories(x, terms, n_categories=6, min_size=5, seed=0)
    assert all(size >= 5 for size in cats.sizes) and cats.count <= 3
    assert (cats.labels >= 0).sum() == 15
    with pytest.raises(BadInput):
        pseudo_categories(x, terms, n_categories=3, min_size=10)


def test_near_identical_descriptions_pair(vectors):
    x, _ = vectors
    pairs = positive_pairs(x, tau=0.9)
    assert pairs.tolist() == [[0, 12], [0, 13], [12, 13]]  # the same Kita lipstick, relisted twice
    loose = positive_pairs(x, tau=0.7).tolist()
    assert [1, 14] in loose and [0, 1] not in loose  # "Sovi lipstick Rose" (0.78) once the bar is lower
    assert [p.tolist() for p in partners(17, pairs)][:2] == [[12, 13], []]


def test_validation_split_keeps_groups_whole():
    pairs = np.array([[0, 1], [1, 2], [5, 6]])
    train, val = split_validation(10, pairs, share=0.3, seed=1)
    assert sorted(train.tolist() + val.tolist()) == list(range(10))
    for group in ({0, 1, 2}, {5, 6}):
        assert group <= set(train.tolist()) or group <= set(val.tolist())
    assert 3 <= len(val) <= 5
    assert split_validation(10, pairs, share=0.0)[1].tolist() == []
    with pytest.raises(BadInput):
        split_validation(10, pairs, share=1.0)


def test_hard_negatives_skip_positives_and_textual_neighbours(vectors):
    x, terms = vectors
    labels = pseudo_categories(x, terms, n_categories=3, min_size=3, seed=0).labels
    mask = negative_mask(x, labels, np.array([0, 15]), np.arange(17))
    assert not mask[0, 0] and not mask[0, 12] and not mask[0, 13]  # itself, its relistings
    assert mask[0, 4] and mask[0, 8]  # a shampoo, a nail polish
    assert not mask[0, 15] and not mask[0, 16] and not mask[1, 4]  # unknown text is nobody's negative
    # Feature space: row 12 (a positive) is nearest, then row 1 (another lipstick, text cosine 0.52 to row 0),
    # then row 4 (a shampoo), then row 8 (a nail polish).
    pool = np.array([12, 1, 4, 8])
    pool_emb = np.array([[1.0, 0.0], [0.9, 0.436], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    anchor_emb = np.array([[1.0, 0.0]], dtype=np.float32)
    got = hard_negatives(x, labels, np.array([0]), anchor_emb, pool, pool_emb, k=3)
    assert got.tolist() == [[4, 8, -1]]  # row 1: same category and cosine 0.52 >= 0.5: neither


def test_hard_negatives_with_a_loose_negative_threshold(vectors):
    x, terms = vectors
    labels = pseudo_categories(x, terms, n_categories=3, min_size=3, seed=0).labels
    pool = np.array([12, 1, 4])
    pool_emb = np.array([[1.0, 0.0], [0.9, 0.436], [0.6, 0.8]], dtype=np.float32)
    got = hard_negatives(x, labels, np.array([0]), np.array([[1.0, 0.0]], np.float32), pool, pool_emb, k=1,
                         negative_tau=0.89)
    assert got.tolist() == [[1]]  # now textually far enough: the nearest negative is another lipstick


def _image(path, colour):
    Image.new("RGB", (8, 8), colour).save(path)


@pytest.fixture
def prepared(tmp_path):
    """database.csv (n1..n3) and queries.csv (v1, v2) side by side, as bpcr prepare writes them."""
    (tmp_path / "db").mkdir()
    (tmp_path / "q").mkdir()
    db = [tmp_path / "db" / f"n{i}.png" for i in (1, 2, 3)]
    q = [tmp_path / "q" / f"v{i}.png" for i in (1, 2)]
    for k, path in enumerate(db + q):
        _image(path, (40 * k, 10, 200 - 30 * k))
    out = tmp_path / "prepared"
    out.mkdir()
    write_manifest(out / "database.csv", ["n1", "n2", "n3"], db, [8] * 3, [8] * 3, ["a", "b", "c"])
    write_manifest(out / "queries.csv", ["v1", "v2"], q, [8] * 2, [8] * 2, ["", ""])
    return tmp_path


def test_leak_guard_passes_a_clean_database(prepared):
    report = check_no_query_leak(read_manifest(prepared / "prepared" / "database.csv"))
    assert report["query_ids"] == 2 and report["query_manifest"].endswith("queries.csv")
    assert report["same_size_files_hashed"] >= 1  # equal-sized 8x8 PNGs: compared by their bytes


def test_leak_guard_refuses_query_ids_files_and_bytes(prepared):
    out = prepared / "prepared"
    db, q = prepared / "db", prepared / "q"

    def refused(ids, paths, match, **kw):
        write_manifest(out / "database.csv", ids, paths, [8] * len(ids), [8] * len(ids), [""] * len(ids))
        with pytest.raises(BadInput, match=match):
            check_no_query_leak(read_manifest(out / "database.csv"), **kw)

    refused(["n1", "v2"], [db / "n1.png", db / "n2.png"], "shares 1 ID")
    refused(["n1", "n9"], [db / "n1.png", q / "v1.png"], "is the query image file")
    (db / "n9.png").write_bytes((q / "v2.png").read_bytes())
    refused(["n1", "n9"], [db / "n1.png", db / "n9.png"], "has the bytes of query image 'v2'")
    (prepared / "gt.csv").write_text("Validation Image ID,Training Image ID\nn1,n2\n")
    refused(["n1", "n2"], [db / "n1.png", db / "n2.png"], "query ID", ground_truth=prepared / "gt.csv")
    with pytest.raises(BadInput, match="this is the query manifest"):
        check_no_query_leak(read_manifest(out / "queries.csv"), queries=out / "queries.csv")
