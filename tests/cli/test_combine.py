"""`bpcr combine`: the combined stores search as the kit's sum fusion of the separate stores with the weights
squared (the same IDs in the same order, the scores divided by sum w^2); the command writes what the library
writes; every bad input is one line and exit code 2."""
from __future__ import annotations

import numpy as np
import pytest

from bpcr.features.combination import PARAMS_FILE
from bpcr.features.combine import combine
from bpcr.features.combine_options import CombineOptions
from bpcr.io.runs import read_trec
from bpcr.io.store import open_store, write_store

WEIGHTS = [10.0, 8.95]  # the 2020 runner-up's: SE-ResNet-152 GRMAC x 10, DenseNet-201 MAC x 8.95


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def world(tmp_path):
    """Two feature sets of 40 database images and 6 queries, random rows; the second set's database store holds
    its rows in another order (matched by ID)."""
    rng = np.random.default_rng(2020)
    db_ids, q_ids = [f"n{i:03d}" for i in range(40)], [f"v{i:02d}" for i in range(6)]
    stores = {}
    for name, dim in (("grmac", 12), ("mac", 9)):
        x, q = _unit(rng.normal(size=(40, dim))), _unit(rng.normal(size=(6, dim)))
        order = np.arange(40) if name == "grmac" else rng.permutation(40)
        meta = {"backbone": f"net-{name}", "pooling": name, "normalisation": "l2"}
        stores[name] = (write_store(tmp_path / "db" / name, [db_ids[i] for i in order], x[order], meta).path,
                        write_store(tmp_path / "q" / name, q_ids, q, meta).path)
    return tmp_path, stores


def _refused(result, *named: str) -> None:
    lines = result.err.strip().splitlines()
    assert result.code == 2, (result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(n in lines[0] for n in named), lines[0]


def test_combined_search_ranks_as_the_sum_fusion_with_the_weights_squared(cli, world):
    folder, stores = world
    (db_g, q_g), (db_m, q_m) = stores["grmac"], stores["mac"]
    result = cli("combine", db_g, db_m, "--weights", ",".join(map(str, WEIGHTS)), "--out", folder / "c-db",
                 "--queries", q_g, "--queries", q_m, "--queries-out", folder / "c-q")
    assert result.code == 0, result.err
    assert result.out.count("wrote ") == 2
    for args in ((folder / "c-db", folder / "i-c"), (db_g, folder / "i-g"), (db_m, folder / "i-m")):
        assert cli("index", args[0], "--out", args[1]).code == 0
    depth = ["--depth", "40", "--out", folder / "runs"]
    assert cli("search", "--index", folder / "i-c", "--queries", folder / "c-q", "--name", "combined", *depth).code == 0
    squared = ",".join(str(w * w) for w in WEIGHTS)  # 100, 80.1025
    fused = cli("search", "--index", folder / "i-g", "--queries", q_g, "--index", folder / "i-m", "--queries", q_m,
                "--weights", squared, "--fusion", "sum", "--name", "fused", *depth)
    assert fused.code == 0, fused.err
    ranked_c, scores_c = read_trec(folder / "runs" / "combined.trec")
    ranked_f, scores_f = read_trec(folder / "runs" / "fused.trec")
    assert set(ranked_c) == set(ranked_f) and len(ranked_c) == 6
    for query in ranked_c:
        assert ranked_c[query] == ranked_f[query] and len(ranked_c[query]) == 40  # every image, the same order
        # the combined cosine is sum w^2 cos / sum w^2: the fused score over the constant sum w^2 (up to the
        # combined store's float32 rounding)
        assert np.allclose(scores_c[query], np.array(scores_f[query]) / sum(w * w for w in WEIGHTS), rtol=0,
                           atol=1e-6)


def test_the_command_writes_what_the_library_writes(cli, world):
    folder, stores = world
    (db_g, q_g), (db_m, q_m) = stores["grmac"], stores["mac"]
    assert cli("combine", db_g, db_m, "--znorm", "--pca", "8", "--seed", "3", "--dtype", "float16",
               "--out", folder / "cli-db").code == 0
    assert cli("combine", q_g, q_m, "--from", folder / "cli-db", "--out", folder / "cli-q").code == 0
    combine([db_g, db_m], folder / "lib-db", CombineOptions(znorm=True, pca=8, seed=3, dtype="float16"),
            log=lambda _: None)
    for which in ("db", "q"):
        if which == "q":
            combine([q_g, q_m], folder / "lib-q", source=folder / "lib-db", log=lambda _: None)
        cli_store, lib_store = open_store(folder / f"cli-{which}"), open_store(folder / f"lib-{which}")
        assert cli_store.features.dtype == np.float16 and cli_store.features.shape[1] == 8
        assert np.array_equal(np.asarray(cli_store.features), np.asarray(lib_store.features))
    assert (folder / "cli-q" / PARAMS_FILE).read_bytes() == (folder / "lib-db" / PARAMS_FILE).read_bytes()
    assert open_store(folder / "cli-q").meta["dtype"] == "float16"  # the database's, by default


def test_search_refuses_a_combined_query_store_against_anything_else(cli, world):
    folder, stores = world
    (db_g, q_g), (db_m, q_m) = stores["grmac"], stores["mac"]
    assert cli("combine", db_g, db_m, "--out", folder / "c-db", "--queries", q_g, "--queries", q_m,
               "--queries-out", folder / "c-q").code == 0
    assert cli("index", db_g, "--out", folder / "i-g").code == 0
    _refused(cli("search", "--index", folder / "i-g", "--queries", folder / "c-q", "--name", "x", "--out",
                 folder / "runs"), "c-q/meta.json", "'net-grmac+net-mac'", "'net-grmac'")


def test_ids_that_differ_between_stores_are_one_line_and_exit_2(cli, world):
    folder, stores = world
    (db_g, _), _ = stores["grmac"], stores["mac"]
    store = open_store(db_g)
    write_store(folder / "fewer", store.ids[:-1], np.asarray(store.features)[:-1], store.meta)
    _refused(cli("combine", db_g, folder / "fewer", "--out", folder / "c"), "fewer", "ids.txt",
             "1 missing, 0 extra", "'n039'", "must hold the same IDs")
    assert not (folder / "c").exists()


@pytest.mark.parametrize("args, named", [
    (["--weights", "1"], "--weights needs 2 finite numbers, one per input store"),
    (["--weights", "1,x"], "--weights '1,x': expected comma-separated numbers"),
    (["--pca", "0"], "--pca"),
    (["--pca-whiten"], "--pca-whiten applies to the PCA; give --pca K"),
    (["--queries", "Q1"], "--queries needs --queries-out QDIR"),
    (["--queries-out", "Q"], "--queries-out writes the combined --queries stores; give --queries"),
    (["--queries", "Q1", "--queries-out", "Q"], "give one --queries store per database store"),
])
def test_bad_options_are_one_line_and_exit_2(cli, world, args, named):
    folder, stores = world
    (db_g, _), (db_m, _) = stores["grmac"], stores["mac"]
    _refused(cli("combine", db_g, db_m, "--out", folder / "c", *args), named)
    assert not (folder / "c").exists()


def test_a_damaged_parameters_file_is_one_line_and_exit_2(cli, world):
    folder, stores = world
    (db_g, q_g), (db_m, q_m) = stores["grmac"], stores["mac"]
    assert cli("combine", db_g, db_m, "--znorm", "--out", folder / "c-db").code == 0
    (folder / "c-db" / PARAMS_FILE).write_bytes(b"PK\x03\x04 torn")
    _refused(cli("combine", q_g, q_m, "--from", folder / "c-db", "--out", folder / "c-q"), PARAMS_FILE,
             "not a combination file")
    np.savez(folder / "c-db" / PARAMS_FILE, weights=np.ones(2))
    _refused(cli("combine", q_g, q_m, "--from", folder / "c-db", "--out", folder / "c-q"), "no array 'dims'")
    assert not (folder / "c-q").exists()
