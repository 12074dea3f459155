"""Learned whitening (Lw, Radenovic et al. TPAMI 2018): by hand, against a literal transcription of cirtorch's
whitenlearn, its effect on pairs, its file, and the stage that learns it from the database's positive pairs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.io.store import open_store, write_store
from bpcr.training.whiten import (LW_FILE, RIDGE, LearnedWhitening, apply_lw, learn_lw, npz_bytes,
                                  read_learned_whitening, whiten)
from bpcr.training.whiten_options import WhitenOptions
from tests.helpers.whitening import make_world, vectors, word


# ---------------------------------------------------------------- by hand


def test_learned_whitening_by_hand():
    # pairs (x0, x1) and (x2, x3): differences (2, 0) and (0, 1), so S = diag(2, 0.5), P1 = diag(1/sqrt 2, sqrt 2);
    # m = mean(x0, x2) = (1, 1.5); P1 (x - m) = (0, -a), (-sqrt 2, -a), (0, a), (0, -a) with a = sqrt(2)/2, so
    # D = [[0.5, 0.25], [0.25, 0.5]]: eigenvalues 0.75 along (1, 1)/sqrt 2, 0.25 along (1, -1)/sqrt 2, and
    # P = V^T P1 = [[0.5, 1], [0.5, -1]].
    x = np.array([[1.0, 1.0], [-1.0, 1.0], [1.0, 2.0], [1.0, 1.0]])
    lw, record = learn_lw(x, np.array([[0, 1], [2, 3]]))
    assert np.allclose(lw.m, [1.0, 1.5])
    assert np.allclose(lw.P, [[0.5, 1.0], [0.5, -1.0]])
    assert lw.dims == 2 and record == {"pairs": 2, "S_rank": 2, "ridge": 0.0, "ridge_why": None}
    # x0 - m = (0, -0.5) -> (-0.5, 0.5) -> normalised
    assert np.allclose(apply_lw(x[:1], lw), [[-np.sqrt(0.5), np.sqrt(0.5)]])
    one, _ = learn_lw(x, np.array([[0, 1], [2, 3]]), dims=1)
    assert np.allclose(apply_lw(x, one), [[-1.0], [-1.0], [1.0], [-1.0]])  # 0.5 (x - 1) + (y - 1.5), its sign


def test_a_singular_S_gets_the_ridge_and_says_so():
    # Both differences lie along the first axis: S = diag(2.5, 0), rank 1; ridge = RIDGE x trace(S) / D.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.5, 1.0], [-0.5, 1.0], [0.0, 3.0]])
    lw, record = learn_lw(x, np.array([[0, 1], [2, 3]]))
    assert record["S_rank"] == 1 and record["ridge"] == pytest.approx(RIDGE * 2.5 / 2)
    assert "singular (rank 1 of 2)" in record["ridge_why"]
    assert np.all(np.isfinite(lw.P))
    # the direction no pair difference spans is scaled up most, so it comes first
    assert abs(lw.P[0, 1]) > 100 * abs(lw.P[0, 0])
    with pytest.raises(BadInput, match="identical"):
        learn_lw(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), np.array([[0, 1], [2, 3]]))


def test_too_few_pairs_or_too_many_dims_are_refused():
    x = np.eye(3)
    with pytest.raises(BadInput, match="at least 2 positive pairs, got 1"):
        learn_lw(x, np.array([[0, 1]]))
    with pytest.raises(BadInput, match="--dims 4"):
        learn_lw(x, np.array([[0, 1], [1, 2]]), dims=4)


# ---------------------------------------------------------------- against cirtorch


def cirtorch_whitenlearn(X, qidxs, pidxs):
    """cirtorch/utils/whiten.py whitenlearn, transcribed literally (X: D x N columns)."""
    m = X[:, qidxs].mean(axis=1, keepdims=True)
    df = X[:, qidxs] - X[:, pidxs]
    S = np.dot(df, df.T) / df.shape[1]
    P = np.linalg.inv(np.linalg.cholesky(S))
    df = np.dot(P, X - m)
    D = np.dot(df, df.T)
    eigval, eigvec = np.linalg.eig(D)
    order = eigval.argsort()[::-1]
    eigvec = eigvec[:, order]
    P = np.dot(eigvec.T, P)
    return m, P


def cirtorch_whitenapply(X, m, P, dimensions=None):
    if not dimensions:
        dimensions = P.shape[0]
    X = np.dot(P[:dimensions, :], X - m)
    return X / (np.linalg.norm(X, ord=2, axis=0, keepdims=True) + 1e-6)


@pytest.mark.parametrize("seed,dims", [(0, None), (1, 3), (2, 1)])
def test_equals_a_transcription_of_cirtorch(seed, dims):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 5)) * [3.0, 1.0, 0.5, 2.0, 0.2]
    pairs = rng.choice(60, size=(25, 2), replace=True)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    lw, record = learn_lw(x, pairs, dims)
    assert record["ridge"] == 0.0
    m, P = cirtorch_whitenlearn(x.T, pairs[:, 0], pairs[:, 1])
    assert np.allclose(lw.m, m.ravel())
    signs = np.sign(np.sum(lw.P * P, axis=1))  # an eigenvector's sign is free: compare row by row up to it
    assert np.allclose(lw.P, P * signs[:, None], atol=1e-9)
    ours = apply_lw(x, lw)
    theirs = cirtorch_whitenapply(x.T, m, P, dims).T
    # cirtorch adds 1e-6 to the norm (ours floors it at 1e-12): equal to about 1e-6 / |y|
    assert np.allclose(ours, theirs * signs[:ours.shape[1]], atol=1e-4)


def test_the_same_data_give_the_same_bytes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6))
    pairs = np.stack([np.arange(0, 20), np.arange(20, 40)], axis=1)
    a, _ = learn_lw(x, pairs)
    b, _ = learn_lw(x.copy(), pairs.copy())
    assert a.to_bytes() == b.to_bytes()
    # each eigenvector's largest entry is positive: a deterministic sign
    v = a.P @ np.linalg.inv(learn_lw(x, pairs)[0].P)
    assert np.allclose(v, np.eye(6), atol=1e-8)


# ---------------------------------------------------------------- what it is for


def test_pairs_come_closer_after_learned_whitening():
    # Products share a direction; every image has a large nuisance on 4 dimensions. Learned on the pairs of 150
    # products, applied to 150 others: their pairs' mean cosine rises, and rises above the non-pairs'.
    rng = np.random.default_rng(0)
    products = rng.normal(size=(300, 24))
    a, b = vectors(rng, products, 2.0, 0.3), vectors(rng, products, 2.0, 0.3)
    train = np.arange(150)
    x = np.concatenate([a[train], b[train]])
    lw, _ = learn_lw(x, np.stack([np.arange(150), np.arange(150, 300)], axis=1), dims=16)
    held = np.arange(150, 300)

    def mean_cosines(u, v):
        pair = np.mean(np.sum(u * v, axis=1))
        other = np.mean(np.sum(u * np.roll(v, 1, axis=0), axis=1))
        return pair, other

    before_pair, before_other = mean_cosines(a[held], b[held])
    after_pair, after_other = mean_cosines(apply_lw(a[held], lw), apply_lw(b[held], lw))
    assert after_pair > before_pair + 0.2, (before_pair, after_pair)
    assert after_pair - after_other > before_pair - before_other


# ---------------------------------------------------------------- the file


def test_file_round_trip_and_refusals(tmp_path):
    lw = LearnedWhitening(np.array([1.0, 2.0]), np.array([[0.5, 1.0], [0.5, -1.0]]), 1)
    (tmp_path / LW_FILE).write_bytes(lw.to_bytes())
    back = read_learned_whitening(tmp_path)
    assert back.m.tolist() == [1.0, 2.0] and back.P.tolist() == lw.P.tolist() and back.dims == 1
    with np.load(tmp_path / LW_FILE, allow_pickle=False) as saved:
        assert sorted(saved.files) == ["P", "dims", "m"] and saved["dims"].shape == ()
    bad = {
        "nan.npz": ({"m": np.array([np.nan, 0.0]), "P": np.eye(2), "dims": np.int64(2)}, "NaN or infinity"),
        "shapes.npz": ({"m": np.zeros(3), "P": np.eye(2), "dims": np.int64(2)}, "inconsistent shapes"),
        "dims0.npz": ({"m": np.zeros(2), "P": np.eye(2), "dims": np.int64(0)}, "dims 0 is outside 1..2"),
        "dims_float.npz": ({"m": np.zeros(2), "P": np.eye(2), "dims": np.float64(2)}, "dims must be one integer"),
        "complex.npz": ({"m": np.zeros(2), "P": np.eye(2) * 1j, "dims": np.int64(2)}, "P holds"),
        "no_P.npz": ({"m": np.zeros(2), "dims": np.int64(2)}, "no array 'P'"),
    }
    for name, (arrays, reason) in bad.items():
        (tmp_path / name).write_bytes(npz_bytes(arrays))
        with pytest.raises(BadInput) as info:
            read_learned_whitening(tmp_path / name)
        assert reason in info.value.reason and info.value.file == str(tmp_path / name), info.value
    with pytest.raises(BadInput, match="no learned whitening here"):
        read_learned_whitening(tmp_path / "nowhere")


# ---------------------------------------------------------------- the stage


def test_whiten_learns_on_the_manifests_pairs_and_records_it(tmp_path):
    world = make_world(tmp_path)
    result = whiten(world.db, tmp_path / "lw", manifest=world.manifest, log=lambda _: None)
    expected, record = learn_lw(world.x, world.pairs)
    store = open_store(tmp_path / "lw")
    assert np.allclose(np.asarray(store.features), apply_lw(world.x, expected), atol=1e-6)
    assert store.ids == open_store(world.db).ids and result.dims == result.dim_in == 12
    assert read_learned_whitening(tmp_path / "lw").to_bytes() == expected.to_bytes()
    meta = json.loads((tmp_path / "lw" / "meta.json").read_text())
    learned = meta["whitening_learned"]
    assert meta["whitening"]["method"] == "learned" and meta["normalisation"] == "l2, lw-whiten, l2"
    assert learned["pairs"] == 40 and learned["pair_tau"] == 0.9 and learned["ridge"] == record["ridge"] == 0.0
    assert learned["manifest"] == str(world.manifest) and len(learned["manifest_sha256"]) == 64
    assert learned["store"] == str(world.db) and len(learned["store_features_sha256"]) == 64
    assert meta["backbone"] == "hand-made"  # the extraction's own meta is kept


def test_whiten_maps_pairs_by_id_and_refuses_what_is_not_the_database(tmp_path):
    world = make_world(tmp_path)
    # a store missing one member of a pair: that pair is left out, and the record says so
    db = open_store(world.db)
    keep = [i for i in range(len(db)) if i != world.pairs[0, 1]]
    write_store(tmp_path / "part", [db.ids[i] for i in keep], np.asarray(db.features)[keep], db.meta)
    result = whiten(tmp_path / "part", tmp_path / "lw-part", manifest=world.manifest, log=lambda _: None)
    assert result.learned["pairs"] == 39 and result.learned["pairs_without_features"] == 1
    # the query store: its IDs are not the database manifest's
    with pytest.raises(BadInput, match="'v0000' is not in the manifest"):
        whiten(world.queries, tmp_path / "lw-q", manifest=world.manifest)
    lonely = tmp_path / "lonely" / "database.csv"  # every listing described in words of its own: no pair
    lonely.parent.mkdir()
    lonely.write_text("id,path,width,height,description\n" +
                      "".join(f"{i},{i}.jpg,64,64,{word(k)} lipstick\n" for k, i in enumerate(db.ids)))
    with pytest.raises(BadInput, match="only 0 positive pair"):
        whiten(world.db, tmp_path / "lw-none", manifest=lonely)
    # a manifest named as the query manifest beside it is refused (the kit's no-query rule)
    queries = world.manifest.with_name("queries.csv")
    queries.write_bytes(world.manifest.read_bytes())
    with pytest.raises(BadInput, match="query"):
        whiten(world.db, tmp_path / "lw-leak", manifest=world.manifest)
    assert not any((tmp_path / name).exists() for name in ("lw-q", "lw-none", "lw-leak"))


def test_pca_sits_beside_learned(tmp_path):
    from bpcr.features.whitening import apply_whitening, learn_whitening, read_whitening

    world = make_world(tmp_path)
    whiten(world.db, tmp_path / "pca", WhitenOptions(method="pca", dims=5), log=lambda _: None)
    expected = learn_whitening(world.x, max_dim=5)
    got = read_whitening(tmp_path / "pca")
    assert np.allclose(got.components, expected.components) and got.components.shape == (5, 12)
    assert np.allclose(np.asarray(open_store(tmp_path / "pca").features), apply_whitening(world.x, expected))
    whiten(world.queries, tmp_path / "pca-q", source=tmp_path / "pca", log=lambda _: None)
    q = open_store(tmp_path / "pca-q")
    assert q.meta["whitening"] == open_store(tmp_path / "pca").meta["whitening"]
    assert q.meta["whitening"]["method"] == "pca" and q.features.shape == (10, 5)
    with pytest.raises(BadInput, match="drop --manifest"):
        whiten(world.db, tmp_path / "x", WhitenOptions(method="pca"), manifest=world.manifest)
    with pytest.raises(BadInput, match="--pair-tau"):
        whiten(world.db, tmp_path / "x", WhitenOptions(method="pca", pair_tau=0.8))
