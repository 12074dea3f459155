"""Multi-store concatenation (bpcr.features.combination, bpcr.features.combine): z-norm and PCA checked by hand
on three rows, the queries combined with the database's parameters, IDs matched across stores, the parameters
file read strictly, and the combined stores paired by search with each other and with nothing else."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.features.combination import (PARAMS_FILE, Combination, apply_combination, concatenate, read_combination,
                                       znorm_stats)
from bpcr.features.combine import combine
from bpcr.features.combine_options import CombineOptions
from bpcr.io.store import check_same_extraction, open_store, write_store

QUIET = {"log": lambda _: None}


def _store(path, ids, rows, **meta):
    write_store(path, ids, np.asarray(rows, dtype=np.float32), {"normalisation": "l2", **meta})
    return path


@pytest.fixture
def tiny(tmp_path):
    """Store A (2-d, backbone a/mac) and B (1-d, backbone b/gem) of three database rows, B in another row order,
    and one query of each."""
    a = _store(tmp_path / "a", ["n1", "n2", "n3"], [[1, 0], [0, 1], [0.6, 0.8]], backbone="a", pooling="mac")
    b = _store(tmp_path / "b", ["n3", "n1", "n2"], [[1], [1], [-1]], backbone="b", pooling="gem")
    qa = _store(tmp_path / "qa", ["v1"], [[0, 1]], backbone="a", pooling="mac")
    qb = _store(tmp_path / "qb", ["v1"], [[1]], backbone="b", pooling="gem")
    return tmp_path, a, b, qa, qb


def _rows(path):
    return np.asarray(open_store(path).features, dtype=np.float64)


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------- by hand


def test_concatenation_alone_is_the_weighted_parts_normalised_again(tiny):
    folder, a, b, qa, qb = tiny
    result = combine([a, b], folder / "c", CombineOptions(weights=[2, 1]), **QUIET)
    assert open_store(folder / "c").ids == ["n1", "n2", "n3"]  # the first store's order; B matched by ID
    # [2 x_A, 1 x_B]: |y| = sqrt(4 + 1) for every row
    expected = np.array([[2, 0, 1], [0, 2, -1], [1.2, 1.6, 1]]) / math.sqrt(5)
    assert np.allclose(_rows(folder / "c"), expected, atol=1e-7)
    assert result.combination.dim_out == 3 and result.combination.znorm_mean is None


def test_each_input_is_l2_normalised_before_weighting(tmp_path):
    a = _store(tmp_path / "a", ["n1", "n2"], [[3, 4], [0, 2]])  # not unit rows: normalised here
    b = _store(tmp_path / "b", ["n1", "n2"], [[0.5], [-7]])
    combine([a, b], tmp_path / "c", **QUIET)
    assert np.allclose(_rows(tmp_path / "c"), np.array([[0.6, 0.8, 1], [0, 1, -1]]) / math.sqrt(2), atol=1e-7)


def test_znorm_by_hand(tiny):
    folder, a, b, qa, qb = tiny
    combine([a, b], folder / "c", CombineOptions(weights=[2, 1], znorm=True), **QUIET)
    # the weighted concatenation [2, 0, 1], [0, 2, -1], [1.2, 1.6, 1]: per column
    mean = np.array([16 / 15, 6 / 5, 1 / 3])
    std = np.sqrt([152 / 225, 56 / 75, 8 / 9])  # population (ddof=0): sum of squared deviations / 3
    params = read_combination(folder / "c")
    assert np.allclose(params.znorm_mean, mean) and np.allclose(params.znorm_std, std)
    concatenation = np.array([[2, 0, 1], [0, 2, -1], [1.2, 1.6, 1]])
    assert np.allclose(_rows(folder / "c"), _unit((concatenation - mean) / std), atol=1e-6)
    # the query [0, 1] / [1] with the database's mean and deviation, never its own
    combine([qa, qb], folder / "qc", source=folder / "c", **QUIET)
    assert np.allclose(_rows(folder / "qc"), _unit((np.array([[0, 2, 1]]) - mean) / std), atol=1e-6)
    meta = json.loads((folder / "c" / "meta.json").read_text())
    assert meta["normalisation"] == "l2 per input, weighted concatenation, z-norm, l2"
    assert meta["combination"]["learned"]["znorm"] is True


def test_znorm_stats_streamed_in_blocks_equal_numpys_and_a_constant_dimension_is_divided_by_1():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)) * [1, 2, 3, 0] + [0, 1, 2, 5]  # the last column is constant
    mean, std, constant = znorm_stats(iter([x[:7], x[7:8], x[8:40], x[40:]]))
    assert np.allclose(mean, x.mean(axis=0)) and np.allclose(std[:3], x.std(axis=0)[:3])
    assert std[3] == 1.0 and constant == 1
    with pytest.raises(BadInput, match="at least 2 database rows"):
        znorm_stats(iter([x[:1]]))


def test_pca_by_hand(tmp_path):
    # rows e1, -e1, e2: mean (0, 1/3), covariance (ddof=1) diag(1, 1/3): the first component is e1
    a = _store(tmp_path / "a", ["n1", "n2", "n3"], [[1, 0], [-1, 0], [0, 1]])
    result = combine([a], tmp_path / "k1", CombineOptions(pca=1), **QUIET)
    params = read_combination(tmp_path / "k1")
    assert np.allclose(params.pca_mean, [0, 1 / 3]) and np.allclose(np.abs(params.pca_components), [[1, 0]])
    assert np.allclose(params.pca_explained_variance, [1.0])
    assert result.learned["explained_variance_ratio"] == pytest.approx(0.75)
    sign = params.pca_components[0, 0]
    assert np.allclose(_rows(tmp_path / "k1"), sign * np.array([[1], [-1], [0]]))  # a zero row stays zero
    # both components, whitened: (x0 / 1, (x1 - 1/3) / sqrt(1/3)), then L2-normalised
    combine([a], tmp_path / "k2", CombineOptions(pca=2, pca_whiten=True), **QUIET)
    params = read_combination(tmp_path / "k2")
    assert params.pca_whiten and np.allclose(params.pca_explained_variance, [1.0, 1 / 3])
    signs = np.sign(params.pca_components[[0, 1], [0, 1]])
    expected = np.array([[math.sqrt(3) / 2, -0.5], [-math.sqrt(3) / 2, -0.5], [0, 1]]) * signs
    assert np.allclose(_rows(tmp_path / "k2"), expected, atol=1e-6)
    meta = json.loads((tmp_path / "k2" / "meta.json").read_text())
    assert meta["combination"]["learned"]["explained_variance_ratio"] == pytest.approx(1.0)
    assert meta["normalisation"] == "l2 per input, weighted concatenation, pca-whiten 2, l2"


def test_pca_is_sklearns_after_znorm_and_is_applied_to_the_queries(tmp_path):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    ids = [f"n{i:02d}" for i in range(40)]
    xa, xb = rng.normal(size=(40, 6)), rng.normal(size=(40, 4))
    a, b = _store(tmp_path / "a", ids, xa), _store(tmp_path / "b", ids, xb)
    qa = _store(tmp_path / "qa", ["v1", "v2"], rng.normal(size=(2, 6)))
    qb = _store(tmp_path / "qb", ["v1", "v2"], rng.normal(size=(2, 4)))
    combine([a, b], tmp_path / "c", CombineOptions(weights=[1, 3], znorm=True, pca=5, seed=7), **QUIET)
    y = concatenate([np.asarray(open_store(a).features), np.asarray(open_store(b).features)], [1, 3])
    z = (y - y.mean(axis=0)) / y.std(axis=0)
    pca = PCA(n_components=5, random_state=7).fit(z)
    assert np.allclose(_rows(tmp_path / "c"), _unit(pca.transform(z)), atol=1e-6)
    combine([qa, qb], tmp_path / "qc", source=tmp_path / "c", **QUIET)
    yq = concatenate([np.asarray(open_store(qa).features), np.asarray(open_store(qb).features)], [1, 3])
    expected = _unit(pca.transform((yq - y.mean(axis=0)) / y.std(axis=0)))
    assert np.allclose(_rows(tmp_path / "qc"), expected, atol=1e-6)
    # the same inputs and options: the same parameters, byte for byte
    combine([a, b], tmp_path / "again", CombineOptions(weights=[1, 3], znorm=True, pca=5, seed=7), **QUIET)
    assert (tmp_path / "again" / PARAMS_FILE).read_bytes() == (tmp_path / "c" / PARAMS_FILE).read_bytes()


def test_pca_rows_learns_on_a_seeded_draw_of_the_database(tmp_path):
    rng = np.random.default_rng(1)
    a = _store(tmp_path / "a", [f"n{i}" for i in range(30)], rng.normal(size=(30, 5)))
    one = combine([a], tmp_path / "one", CombineOptions(pca=3, pca_rows=10, seed=4), **QUIET)
    combine([a], tmp_path / "two", CombineOptions(pca=3, pca_rows=10, seed=4), **QUIET)
    assert one.learned["pca_learned_on_rows"] == 10 and len(open_store(tmp_path / "one")) == 30
    assert (tmp_path / "one" / PARAMS_FILE).read_bytes() == (tmp_path / "two" / PARAMS_FILE).read_bytes()


# ---------------------------------------------------------------- refusals


def test_stores_with_other_ids_are_refused_in_one_line(tiny):
    folder, a, b, qa, qb = tiny
    other = _store(folder / "other", ["n1", "n2", "n4"], [[1], [1], [1]])
    with pytest.raises(BadInput) as err:
        combine([a, other], folder / "c", **QUIET)
    text = str(err.value)
    assert "other" in text and "ids.txt" in text and "1 missing, 1 extra" in text and "'n3'" in text
    assert "\n" not in text and not (folder / "c").exists()


@pytest.mark.parametrize("options, reason", [
    (CombineOptions(weights=[1]), "--weights needs 2 finite numbers, one per input store"),
    (CombineOptions(weights=[0, 0]), "--weights must be finite numbers >= 0, not all 0"),
    (CombineOptions(weights=[1, float("nan")]), "--weights must be finite numbers >= 0"),
    (CombineOptions(pca=0), "--pca must be an integer at least 1"),
    (CombineOptions(pca_whiten=True), "--pca-whiten applies to the PCA; give --pca K"),
    (CombineOptions(pca_rows=10), "--pca-rows applies to the PCA"),
    (CombineOptions(pca=3, pca_rows=2), "--pca-rows 2 is fewer than the 3 components"),
    (CombineOptions(pca=4), "--pca 4: at most min(rows, dimensions) = min(3, 3)"),
    (CombineOptions(dtype="float64"), "unknown dtype 'float64'"),
])
def test_options_are_refused_before_anything_is_written(tiny, options, reason):
    folder, a, b, qa, qb = tiny
    with pytest.raises(BadInput) as err:
        combine([a, b], folder / "c", options, **QUIET)
    assert reason in str(err.value) and not (folder / "c").exists()


def test_a_store_twice_or_the_output_among_the_inputs_is_refused(tiny):
    folder, a, b, qa, qb = tiny
    with pytest.raises(BadInput, match="is given twice"):
        combine([a, b, a], folder / "c", **QUIET)
    with pytest.raises(BadInput, match="is one of the stores being combined"):
        combine([a, b], b, **QUIET)


def test_applying_refuses_new_options_and_queries_of_another_extraction(tiny):
    folder, a, b, qa, qb = tiny
    combine([a, b], folder / "c", CombineOptions(znorm=True), **QUIET)
    with pytest.raises(BadInput, match="--from applies the database's combination as it was learned; drop --znorm"):
        combine([qa, qb], folder / "qc", CombineOptions(znorm=True), source=folder / "c", **QUIET)
    with pytest.raises(BadInput, match="joins 2 stores; 1 given"):
        combine([qa], folder / "qc", source=folder / "c", **QUIET)
    with pytest.raises(BadInput, match="dim is 1 but input 1 of the combined database store"):
        combine([qb, qa], folder / "qc", source=folder / "c", **QUIET)
    other = _store(folder / "qother", ["v1"], [[1]], backbone="b", pooling="mac")
    with pytest.raises(BadInput) as err:
        combine([qa, other], folder / "qc", source=folder / "c", **QUIET)
    assert "pooling is 'mac' but input 2 of the combined database store" in str(err.value)
    assert not (folder / "qc").exists()


def test_the_parameters_must_be_those_the_combined_store_records(tiny):
    folder, a, b, qa, qb = tiny
    combine([a, b], folder / "c", **QUIET)
    combine([a, b], folder / "c2", CombineOptions(weights=[1, 2]), **QUIET)
    (folder / "c" / PARAMS_FILE).write_bytes((folder / "c2" / PARAMS_FILE).read_bytes())
    with pytest.raises(BadInput, match="no combined store's meta.json beside it records this combination"):
        combine([qa, qb], folder / "qc", source=folder / "c", **QUIET)
    with pytest.raises(BadInput, match="no combination here"):
        combine([qa, qb], folder / "qc", source=a, **QUIET)


# ---------------------------------------------------------------- the parameters file


def _write(path, **changes):
    good = {"weights": np.array([1.0, 2.0]), "dims": np.array([2, 1]), "znorm_mean": np.zeros(3),
            "znorm_std": np.ones(3), "pca_mean": np.zeros(3), "pca_components": np.eye(3)[:2],
            "pca_explained_variance": np.array([2.0, 1.0]), "pca_whiten": np.array(1)}
    arrays = {k: v for k, v in {**good, **changes}.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_a_well_formed_file_reads_back(tmp_path):
    params = read_combination(_write(tmp_path / "ok.npz"))
    assert params.dim_in == 3 and params.dim_out == 2 and params.pca_whiten
    c = Combination(np.array([1.0]), np.array([2]))
    (tmp_path / PARAMS_FILE).write_bytes(c.to_bytes())
    back = read_combination(tmp_path)
    assert back.znorm_mean is None and back.pca_components is None and back.dim_out == 2
    assert back.to_bytes() == c.to_bytes()
    assert np.allclose(apply_combination([np.array([[3.0, 4.0]])], back), [[0.6, 0.8]])


@pytest.mark.parametrize("changes, reason", [
    ({"pca_whiten": None}, "not a combination file (weights, dims, znorm_mean, znorm_std, pca_mean, "
                           "pca_components, pca_explained_variance, pca_whiten): no array 'pca_whiten'"),
    ({"weights": np.array([1.0])}, "inconsistent shapes: weights (1,), dims (2,)"),
    ({"weights": np.array([1.0, -1.0])}, "weights [1.0, -1.0]: each must be finite and >= 0, not all 0"),
    ({"weights": np.array([0.0, 0.0])}, "each must be finite and >= 0, not all 0"),
    ({"weights": np.array(["a", "b"])}, "weights holds <U1 values; a combination holds real numbers there"),
    ({"dims": np.array([2.0, 1.0])}, "dims holds <f8 values; a combination holds integers there"),
    ({"dims": np.array([0, 3])}, "dims [0, 3]: each input has at least one dimension"),
    ({"znorm_mean": np.zeros(2)}, "inconsistent shapes: znorm_mean (2,), znorm_std (3,)"),
    ({"znorm_std": np.array([1.0, 0.0, 1.0])}, "znorm_std holds a standard deviation <= 0"),
    ({"znorm_mean": np.array([0.0, np.nan, 0.0])}, "znorm_mean holds NaN or infinity"),
    ({"pca_components": np.eye(4)[:2]}, "pca_components has shape (2, 4); expected (K, 3)"),
    ({"pca_components": np.zeros(3)}, "pca_components has shape (3,)"),
    ({"pca_explained_variance": np.ones(3)}, "inconsistent shapes: pca_mean (3,), pca_explained_variance (3,)"),
    ({"pca_explained_variance": np.array([1.0, 0.0])}, "a variance <= 0, which whitening divides by"),
    ({"pca_whiten": np.array([1, 1])}, "pca_whiten must be one integer, 0 or 1"),
    ({"pca_whiten": np.array(2)}, "pca_whiten must be one integer, 0 or 1"),
    ({"pca_components": np.zeros((0, 3)), "pca_mean": np.zeros(0), "pca_explained_variance": np.zeros(0)},
     "pca_whiten must be one integer, 0 or 1 (0 without PCA)"),
    ({"pca_mean": np.array([{"x": 1}], dtype=object)}, "not a combination file"),  # would need pickle
])
def test_a_malformed_file_is_one_line_naming_it(tmp_path, changes, reason):
    path = _write(tmp_path / "bad.npz", **changes)
    with pytest.raises(BadInput) as err:
        read_combination(path)
    assert reason in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_a_file_that_is_no_npz_is_refused(tmp_path, content):
    (tmp_path / PARAMS_FILE).write_bytes(content)
    with pytest.raises(BadInput):
        read_combination(tmp_path)


# ---------------------------------------------------------------- search pairs them


def test_combined_stores_pass_search_s_check_with_each_other_and_nothing_else(tiny):
    folder, a, b, qa, qb = tiny
    combine([a, b], folder / "c", CombineOptions(znorm=True), **QUIET)
    combine([qa, qb], folder / "qc", source=folder / "c", **QUIET)
    db, q = open_store(folder / "c"), open_store(folder / "qc")
    check_same_extraction(db, q)
    assert q.meta["pooling_params"] == db.meta["pooling_params"] and db.meta["pooling"] == "combined"
    inputs = q.meta["combination"]["inputs"]
    assert [i["store"] for i in inputs] == [str(qa), str(qb)] and all(len(i["features_sha256"]) == 64 for i in inputs)
    assert q.meta["combination"]["applied"] == str(folder / "c" / PARAMS_FILE)
    assert q.meta["combination"]["learned"] == db.meta["combination"]["learned"]
    for other in (open_store(a), open_store(qa)):  # a store of its inputs
        with pytest.raises(BadInput):
            check_same_extraction(db, other)
    # another combination of the same inputs: other weights, or z-norm learned on other rows
    combine([a, b], folder / "w", CombineOptions(weights=[1, 2], znorm=True), **QUIET)
    with pytest.raises(BadInput, match="pooling_params"):
        check_same_extraction(open_store(folder / "w"), q)
    _store(folder / "a2", ["n1", "n2", "n3"], [[1, 0], [0, 1], [0.8, 0.6]], backbone="a", pooling="mac")
    combine([folder / "a2", b], folder / "other-rows", CombineOptions(znorm=True), **QUIET)
    with pytest.raises(BadInput, match="pooling_params"):
        check_same_extraction(open_store(folder / "other-rows"), q)
