"""Training signal from the database (bpcr.training.pseudolabels): categories, pairs, negatives, split, the leak guard."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bpcr.errors import BadInput
from bpcr.dataset.manifest import read_manifest, write_manifest
from bpcr.training import pseudolabels as pl
from bpcr.training.leakguard import check_no_query_leak
from bpcr.training.pseudolabels import (description_vectors, hard_negatives, negative_mask, partners,
                               positive_pairs, pseudo_categories, split_validation, text_cosines)

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



# Hard negatives by every rule (mine_negatives). A shop of 400 fillers ("Fil000x Deep Repair contour palette 9g":
# 8 lines x 8 kinds x 5 sizes, so line, kind and size words are common and only the Fil names are rare) and the
# listings below. Pseudo-categories are set by hand: what matters is that the relistings got another one.
LINES = ("Deep Repair", "Silk Touch", "Pure Glow", "Vital Whip", "Fresh Shine", "Aqua Veil", "Soft Lift", "Hydra Calm")
KINDS = ("contour palette", "shampoo", "face cream", "nail polish", "serum", "lipstick", "hairspray", "toner")
SIZES = ("9g", "250ml", "50ml", "12ml", "30ml")
ANCHOR, FRENCH, SPANISH, OTHER, TWIN, ALIKE, SAME_BRAND, BLANK, SAME_TYPE = range(9)
LISTINGS = [
    "Zemira Deep Repair contour palette 9g",  # the anchor
    "Zemira Deep Repair palette de contouring poudre compacte 9 g nouveau authentique",  # the same, in French
    "nuevo Zemira paleta de contorno Deep Repair 9 g original",  # the same, in Spanish
    "Kaloro Silk Touch shampoo 250ml",  # a genuinely different product
    "Belanta Pure Glow face cream 50ml",  # another product whose image is a near-duplicate of the anchor's
    "Velora Deep Repair contour palette 9g",  # another brand's look-alike, worded like the anchor
    "Zemira Fresh Shine nail polish 12ml",  # the anchor's brand, another product
    "",  # no text
    "Nomi Vital Whip contour palette 9g",  # the anchor's pseudo-category
]
SHOP_LABELS = [0, 1, 6, 2, 3, 4, 5, -1, 0]
FILLERS = [f"Fil{i:03d}x {LINES[(i // 8) % 8]} {KINDS[i % 8]} {SIZES[i % 5]}" for i in range(400)]
FAR = [len(LISTINGS) + i for i in (9, 10, 11, 12, 13, 14)]  # fillers sharing neither line nor kind with the anchor
LOOK_ALIKE = len(LISTINGS)  # "Fil000x Deep Repair contour palette 9g"


@pytest.fixture(scope="module")
def shop():
    x, terms = description_vectors(LISTINGS + FILLERS)
    labels = np.array(SHOP_LABELS + [10 + i % 8 for i in range(len(FILLERS))], dtype=np.int64)
    return x, terms, labels


def _around(cosines):
    """An anchor descriptor and one pool descriptor per cosine to it (unit vectors, otherwise orthogonal)."""
    c = np.asarray(cosines, dtype=np.float64)
    pool = np.zeros((len(c), len(c) + 1))
    pool[:, 0] = c
    pool[np.arange(len(c)), np.arange(1, len(c) + 1)] = np.sqrt(1.0 - c * c)
    anchor = np.zeros((1, len(c) + 1))
    anchor[0, 0] = 1.0
    return anchor.astype(np.float32), pool.astype(np.float32)


def _mine(shop, pool, cosines, **kw):
    x, _, labels = shop
    anchor_emb, pool_emb = _around(cosines)
    return pl.mine_negatives(x, labels, np.array([ANCHOR]), anchor_emb, np.asarray(pool), pool_emb, **kw)


def test_distinctive_terms_are_the_rare_ones(shop):
    x, terms, _ = shop
    chosen = {t for t, keep in zip(terms, pl.distinctive_terms(x)) if keep}
    assert {"zemira", "kaloro", "velora", "fil123x"} <= chosen  # brands: 1-4 of 408 listings, cap floor(4.08)
    assert not chosen & {"deep", "repair", "contour", "palette", "shampoo", "9g", "250ml"}  # 50-80 each
    assert "zemira" not in {t for t, keep in zip(terms, pl.distinctive_terms(x, brand_share=0.005)) if keep}


def test_a_relisting_in_another_language_is_never_a_negative(shop):
    x, _, labels = shop
    relistings = [FRENCH, SPANISH]
    assert (text_cosines(x, np.array([ANCHOR]), np.array(relistings)) < 0.5).all()
    assert labels[FRENCH] != labels[ANCHOR] and labels[SPANISH] != labels[ANCHOR]
    # Visually the relistings are nearest (below the near-duplicate bar), the other product next.
    pool = [FRENCH, SPANISH, OTHER, *FAR]
    cosines = [0.88, 0.86, 0.8, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45]
    anchor_emb, pool_emb = _around(cosines)
    old = hard_negatives(x, labels, np.array([ANCHOR]), anchor_emb, np.array(pool), pool_emb, k=1)
    assert old.tolist() == [[FRENCH]]  # the earlier rule: another category, so a negative
    assert pl.negative_rules(x, labels, np.array([ANCHOR]), np.array(pool))[0].tolist() == [2, 2] + [0] * 7
    assert _mine(shop, pool, cosines, rng=None)[0].tolist() == [OTHER]
    for skip in range(3):
        for top in range(1, 5):
            for seed in range(20):
                got, _ = _mine(shop, pool, cosines, skip=skip, top=top, rng=np.random.default_rng(seed))
                assert got[0] not in relistings and got[0] >= 0


def test_a_near_duplicate_image_is_never_a_negative(shop):
    x, _, labels = shop
    pool = [TWIN, OTHER, *FAR]
    cosines = [0.95, 0.8, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45]
    anchor_emb, pool_emb = _around(cosines)
    assert hard_negatives(x, labels, np.array([ANCHOR]), anchor_emb, np.array(pool), pool_emb).tolist() == [[TWIN]]
    sims = (anchor_emb @ pool_emb.T).astype(np.float64)
    assert pl.negative_rules(x, labels, np.array([ANCHOR]), np.array(pool), sims)[0, 0] == 3  # rule c alone
    assert pl.negative_rules(x, labels, np.array([ANCHOR]), np.array(pool))[0, 0] == 0  # text says "another product"
    assert _mine(shop, pool, cosines)[0].tolist() == [OTHER]
    for seed in range(20):
        for top in (1, 3, 6):
            assert _mine(shop, pool, cosines, top=top, rng=np.random.default_rng(seed))[0][0] != TWIN
    assert _mine(shop, pool, cosines, image_tau=0.96)[0].tolist() == [TWIN]  # below a higher bar: a negative


def test_skip_and_top_pick_among_the_ranked_negatives(shop):
    n1, n2, n3, n4, n5 = FAR[:5]
    pool = [SAME_TYPE, n5, n1, n3, n2, n4]  # SAME_TYPE is nearest but never a negative
    cosines = [0.97, 0.4, 0.8, 0.6, 0.7, 0.5]
    first = lambda **kw: _mine(shop, pool, cosines, **kw)[0][0]
    assert first(skip=0, top=1) == n1 and first(skip=0, top=4) == n1  # no generator: the first after the skipped
    assert first(skip=2, top=3) == n3 and first(skip=4, top=1) == n5
    got, counts = _mine(shop, pool, cosines, skip=5, top=1)
    assert got.tolist() == [-1] and counts["none"] == 1  # only 5 negatives: all skipped
    drawn = lambda skip, top: {_mine(shop, pool, cosines, skip=skip, top=top, rng=np.random.default_rng(s))[0][0]
                               for s in range(60)}
    assert drawn(1, 2) == {n2, n3}  # negatives ranked 2 and 3
    assert drawn(3, 10) == {n4, n5}  # only two exist past the third
    assert drawn(0, 1) == {n1}
    # Equal cosines: the smaller row ranks first, wherever it sits in the pool.
    assert _mine(shop, [n2, n1], [0.7, 0.7], top=1)[0].tolist() == [n1]
    assert _mine(shop, [n2, n1], [0.7, 0.7], skip=1, top=1)[0].tolist() == [n2]


def test_counts_attribute_each_pair_to_its_first_failing_rule(shop):
    x, _, labels = shop
    f1, f2 = FAR[:2]
    # Nearest first: rule that fails first (and the others that fail too).
    pool = [SAME_TYPE,   # a (b no, c yes)
            FRENCH,      # b (c yes)
            TWIN,        # c
            ALIKE,       # d: text cosine 0.55
            OTHER,       # negative 1
            SAME_BRAND,  # b
            BLANK,       # a (no label), d (no text)
            f1,          # negative 2
            SPANISH,     # b
            f2,          # negative 3
            LOOK_ALIKE,  # d: another filler worded like the anchor
            ANCHOR]      # itself: never a candidate
    cosines = [0.97, 0.95, 0.93, 0.88, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.3, 1.0]
    anchor_emb, pool_emb = _around(cosines)
    sims = (anchor_emb @ pool_emb.T).astype(np.float64)
    codes = pl.negative_rules(x, labels, np.array([ANCHOR]), np.array(pool), sims)
    assert codes[0].tolist() == [1, 2, 3, 4, 0, 2, 1, 0, 2, 0, 4, 1]
    # A second anchor without text: nobody's negative and left out of the counts.
    anchors = np.array([ANCHOR, BLANK])
    anchor_emb = np.concatenate([anchor_emb, pool_emb[6:7]])
    got, counts = pl.mine_negatives(x, labels, anchors, anchor_emb, np.array(pool), pool_emb, skip=0, top=2)
    assert got.tolist() == [OTHER, -1]
    assert counts == {"candidates": 8, "category": 2, "brand": 2, "image": 1, "text": 1, "negatives": 2,
                      "none": 1, "no_text": 1}
    _, counts = pl.mine_negatives(x, labels, anchors, anchor_emb, np.array(pool), pool_emb, skip=1, top=2)
    assert counts == {"candidates": 10, "category": 2, "brand": 3, "image": 1, "text": 1, "negatives": 3,
                      "none": 1, "no_text": 1}
    _, counts = pl.mine_negatives(x, labels, anchors, anchor_emb, np.array(pool), pool_emb, skip=3, top=5)
    assert counts == {"candidates": 11, "category": 2, "brand": 3, "image": 1, "text": 2, "negatives": 3,
                      "none": 2, "no_text": 1}  # fewer than skip + top negatives: walked to the end
    assert list(pl.RULES) == ["category", "brand", "image", "text"]


def _reference(x, labels, anchors, anchor_emb, pool, pool_emb, skip, top):
    """mine_negatives written out pair by pair: each anchor's ranked negatives, and the counts of its walk."""
    sims = anchor_emb.astype(np.float32) @ pool_emb.astype(np.float32).T
    codes = pl.negative_rules(x, labels, anchors, pool, sims)
    ranked_all, counts = [], {"candidates": 0, **{r: 0 for r in pl.RULES}, "negatives": 0}
    for a in range(len(anchors)):
        order = sorted((j for j in range(len(pool)) if pool[j] != anchors[a]), key=lambda j: (-sims[a, j], pool[j]))
        ranked, walk = [], []
        for j in order:
            walk.append(j)
            if codes[a, j] == 0:
                ranked.append(int(pool[j]))
                if len(ranked) == skip + top:
                    break
        ranked_all.append(ranked[skip:])
        if labels[anchors[a]] >= 0:
            counts["candidates"] += len(walk)
            for j in walk:
                counts[(["negatives"] + list(pl.RULES))[codes[a, j]]] += 1
    return ranked_all, counts


def test_mining_is_a_function_of_the_generator_seed(shop):
    x, _, labels = shop
    gen = np.random.default_rng(3)
    anchors = np.concatenate([np.arange(9), gen.choice(np.arange(9, len(labels)), 40, replace=False)])
    pool = gen.permutation(np.concatenate([np.arange(9), gen.choice(np.arange(9, len(labels)), 150, replace=False)]))
    emb = gen.standard_normal((len(labels), 6)).astype(np.float32)
    emb[::7] = emb[1::7][:len(emb[::7])]  # some equal descriptors: ties broken by row
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    args = (x, labels, anchors, emb[anchors], pool, emb[pool])
    for skip, top in ((0, 1), (1, 3), (2, 5)):
        runs = [pl.mine_negatives(*args, skip=skip, top=top, rng=np.random.default_rng(11), chunk=c)
                for c in (256, 7, 7)]
        assert all(np.array_equal(runs[0][0], r[0]) and runs[0][1] == r[1] for r in runs[1:])
        ranked, counts = _reference(*args, skip, top)
        assert {k: runs[0][1][k] for k in counts} == counts
        assert all((g == -1 and not r) or g in r for g, r in zip(runs[0][0].tolist(), ranked))
        plain, _ = pl.mine_negatives(*args, skip=skip, top=top)
        assert plain.tolist() == [r[0] if r else -1 for r in ranked]
        if top > 1:
            other = [pl.mine_negatives(*args, skip=skip, top=top, rng=np.random.default_rng(s))[0] for s in range(5)]
            assert any(not np.array_equal(o, runs[0][0]) for o in other)  # the seed matters
    with pytest.raises(BadInput):
        pl.mine_negatives(*args, skip=-1)
    with pytest.raises(BadInput):
        pl.mine_negatives(*args, top=0)


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
