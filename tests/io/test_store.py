"""Feature stores: round trip, streaming writer, resumable partial folder."""
from __future__ import annotations

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.io.partial_store import Chunk, PartialStore
from bpcr.io.store import open_store, write_store, write_store_blocks


def test_round_trip(tmp_path):
    feats = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]], dtype=np.float16)
    store = write_store(tmp_path / "s", ["b", "a", "c"], feats, {"pooling": "gem"}, {"z": "zero-byte file"})
    again = open_store(tmp_path / "s")
    assert again.ids == ["b", "a", "c"] and store.ids == again.ids
    assert np.array_equal(np.asarray(again.features), feats) and again.features.dtype == np.float16
    assert again.meta == {"pooling": "gem", "count": 3, "dim": 2, "dtype": "float16"}
    assert again.failed == {"z": "zero-byte file"}
    assert (tmp_path / "s" / "failed.csv").read_text() == "id,reason\nz,zero-byte file\n"
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_streamed_store_has_the_bytes_of_np_save(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.standard_normal((10, 4)).astype(np.float32)
    write_store(tmp_path / "whole", [f"i{k}" for k in range(10)], full.astype(np.float16), {})
    blocks = [full[:3], full[3:3], full[3:10]]
    write_store_blocks(tmp_path / "blocks", [f"i{k}" for k in range(10)], blocks, 4, "float16", {},
                       extra_files={"note.bin": b"\x00\x01"})
    for name in ("ids.txt", "features.npy", "meta.json", "failed.csv"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "blocks" / name).read_bytes()
    assert (tmp_path / "blocks" / "note.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="blocks hold 3 rows for 10 IDs"):
        write_store_blocks(tmp_path / "short", [f"i{k}" for k in range(10)], [full[:3]], 4, "float16", {})
    assert not (tmp_path / "short").exists() and not (tmp_path / ".short.writing").exists()


def test_incomplete_store_is_refused(tmp_path):
    write_store(tmp_path / "s", ["a"], np.ones((1, 2), np.float32), {})
    (tmp_path / "s" / "meta.json").unlink()
    with pytest.raises(BadInput, match="missing: the feature store is incomplete"):
        open_store(tmp_path / "s")


def test_partial_store_resumes_only_the_same_plan(tmp_path):
    partial = PartialStore(tmp_path / ".out.partial")
    partial.start({"size": 224, "pooling": ["gem"]})
    chunk = Chunk(3, ["a", "b"], {"gem": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)}, {"c": "truncated image data"})
    partial.write_chunk(chunk)
    # a chunk torn by kill -9 is only ever a hidden temporary file, never counted
    (partial.path / ".chunk-000004.npz.x1y2.tmp").write_bytes(b"PK\x03")
    assert partial.done() == {3}
    back = partial.read_chunk(3, ["gem"])
    assert back.ids == ["a", "b"] and back.failed == {"c": "truncated image data"}
    assert np.array_equal(back.features["gem"], chunk.features["gem"])

    partial.start({"pooling": ["gem"], "size": 224})  # same plan, any key order: resumes
    assert partial.done() == {3}
    with pytest.raises(BadInput, match=r"other settings \(size\).*--restart"):
        partial.start({"size": 480, "pooling": ["gem"]})
    partial.start({"size": 480, "pooling": ["gem"]}, restart=True)
    assert partial.done() == set()
    partial.remove()
    assert not partial.path.exists()


# ---------------------------------------------------------------- what a store may hold


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_stores_open(tmp_path, dtype):
    store = write_store(tmp_path / "s", ["a", "b"], np.eye(2, 3, dtype=dtype), {})
    assert open_store(store.path, role="query").features.dtype == np.dtype(dtype)


@pytest.mark.parametrize("array,reason", [
    (np.ones((2, 3), np.int8), "holds |i1 values"),
    (np.ones((2, 3), np.bool_), "holds |b1 values"),
    (np.ones((2, 3), np.complex128), "holds <c16 values"),
    (np.ones((2, 0), np.float32), "0 columns"),
    (np.ones((2, 3), ">f2"), "native byte order"),
])
def test_other_arrays_are_refused(tmp_path, array, reason):
    store = write_store(tmp_path / "s", ["a", "b"], np.eye(2, 3, dtype=np.float32), {})
    np.save(store.path / "features.npy", array)
    (store.path / "meta.json").write_text("{}")
    with pytest.raises(BadInput) as info:
        open_store(store.path)
    assert info.value.file == str(store.path / "features.npy") and reason in info.value.reason


def test_rows_needed_and_finite(tmp_path):
    from bpcr.io.store import check_finite

    empty = write_store(tmp_path / "e", [], np.zeros((0, 3), np.float16), {})
    assert len(open_store(empty.path)) == 0  # a store without rows is a store
    with pytest.raises(BadInput, match="the query feature store holds no rows"):
        open_store(empty.path, role="query")
    x = np.eye(3, dtype=np.float32)
    x[2, 1] = np.inf
    bad = write_store(tmp_path / "b", ["a", "b", "c"], x, {})
    assert len(open_store(bad.path, role="database")) == 3  # checked when indexed, in its one pass
    with pytest.raises(BadInput, match=r"row 3 \(ID 'c'\) of the query store holds NaN or infinity"):
        open_store(bad.path, role="query")
    with pytest.raises(BadInput, match="row 3"):
        check_finite(bad, "database", ((start, x[start:start + 2]) for start in (0, 2)))


@pytest.mark.parametrize("text, message", [
    ('id,reason\nn9,"unterminated\n', "not a valid CSV"),
    ("reason,id\nn9,x\n", "expected the header id,reason"),
    ("id,reason\nn9\n", "expected 2 cells"),
    ("id,reason\nn9,a,b\n", "expected 2 cells"),
    ("id,reason\n../n9,x\n", "looks like a path"),
    ("id,reason\nn9,x\nn9,y\n", "n9 is listed twice"),
    ("id,reason\na,x\n", "a is both stored and listed as failed"),
])
def test_a_malformed_failed_csv_is_one_line(tmp_path, text, message):
    write_store(tmp_path / "s", ["a", "b"], np.ones((2, 3), np.float32), {"pooling": "gem"})
    (tmp_path / "s" / "failed.csv").write_text(text)
    with pytest.raises(BadInput, match=message) as err:
        open_store(tmp_path / "s")
    assert "\n" not in str(err.value) and "failed.csv" in str(err.value)


def test_failed_csv_round_trips_reasons_with_commas_quotes_and_newlines(tmp_path):
    failed = {"n1": 'truncated, "badly"', "n2": "line one\nline two", "n3": ""}
    write_store(tmp_path / "s", ["a"], np.ones((1, 3), np.float32), {"pooling": "gem"}, failed=failed)
    assert open_store(tmp_path / "s").failed == failed


def test_a_pca_whitened_database_and_its_queries_are_comparable(tmp_path):
    """The database learns its PCA-whitening ("learned_on": "this store"), the queries apply it ("learned_on": the
    database's path): the same projection, so search pairs them; another projection is refused."""
    from bpcr.features.whitening import whiten_store
    from bpcr.io.store import check_same_extraction

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    meta = {"backbone": "b", "pooling": "gem"}
    whiten_store(tmp_path / "db", [f"n{i}" for i in range(20)], [x], 6, "float32", meta, {}, None, "gem")
    whiten_store(tmp_path / "q", [f"v{i}" for i in range(5)], [x[:5]], 6, "float32", meta, {}, tmp_path / "db", "gem")
    whiten_store(tmp_path / "other", [f"n{i}" for i in range(20)], [x * 2.0 + 1.0], 6, "float32", meta, {}, None,
                 "gem")
    db, q, other = open_store(tmp_path / "db"), open_store(tmp_path / "q", role="query"), open_store(tmp_path / "other")
    assert db.meta["whitening"]["learned_on"] != q.meta["whitening"]["learned_on"]
    check_same_extraction(db, q)
    with pytest.raises(BadInput, match="whitening"):
        check_same_extraction(other, q)
