"""bpcr.retrieval.index: index folders (flat, IVF, HNSW), their recall and reloading."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bpcr.retrieval.distances import prepare_queries
from bpcr.errors import BadInput
from bpcr.retrieval.index import build_index, candidates, load_index
from bpcr.retrieval.options import IndexOptions
from bpcr.io.store import write_store

META = {"backbone": "resnet50", "pooling": "gem", "pooling_params": {"p": 3.0}, "normalisation": "l2"}


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _ids(n: int, prefix: str = "n") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def _clustered(n: int, dim: int, seed: int, n_clusters: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)) * 3
    x = centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)



def test_flat_index_file_and_reload(tmp_path):
    x = np.random.default_rng(3).standard_normal((50, 8)).astype(np.float16)
    write_store(tmp_path / "feats" / "db", _ids(50), x, META)
    info = build_index(tmp_path / "feats" / "db", tmp_path / "idx" / "flat", IndexOptions(metric="l2"), log=lambda s: None)
    assert (info.kind, info.distance, info.count, info.dim, info.recall_at_100) == ("flat", "l2", 50, 8, 1.0)
    side = json.loads((tmp_path / "idx" / "flat" / "index.json").read_text())
    assert side["store"] == "../../feats/db"
    assert side["store_meta"]["pooling_params"] == {"p": 3.0}
    assert not (tmp_path / "idx" / "flat" / "index.faiss").exists()
    # The folder tree moves as a whole: the relative store path still finds the store.
    shutil.move(tmp_path / "feats", tmp_path / "moved" / "feats")
    shutil.move(tmp_path / "idx", tmp_path / "moved" / "idx")
    loaded = load_index(tmp_path / "moved" / "idx" / "flat")
    assert loaded.store.path.resolve() == (tmp_path / "moved" / "feats" / "db").resolve()
    assert loaded.distance.name == "l2" and loaded.faiss_index is None


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_and_reload(tmp_path, kind):
    x = _clustered(1200, 16, seed=4)
    write_store(tmp_path / "db", _ids(1200), x.astype(np.float16), META)
    lines: list[str] = []
    info = build_index(tmp_path / "db", tmp_path / kind, IndexOptions(kind=kind, recall_sample=50), log=lines.append)
    assert info.recall_at_100 >= 0.95
    assert any(line.startswith("recall@100") for line in lines)
    side = json.loads((tmp_path / kind / "index.json").read_text())
    param = "nprobe" if kind == "ivf" else "efSearch"
    assert side["params"][param] == side["tuning"][-1][param]
    assert side["index_bytes"] == (tmp_path / kind / "index.faiss").stat().st_size
    loaded = load_index(tmp_path / kind)
    # IVF keeps float16 vectors, the store's own precision (half of IVF-Flat's float32).
    assert type(loaded.faiss_index).__name__ == ("IndexIVFScalarQuantizer" if kind == "ivf" else "IndexHNSWFlat")
    q = prepare_queries(loaded.distance, x[:5])
    found = candidates(loaded, q, 10)
    assert [i in r for i, r in enumerate(found)] == [True] * 5  # each row finds itself


@pytest.mark.parametrize("metric, vectors", [("cosine", "SQfp16"), ("l2", "SQfp16"), ("l1", "Flat")])
def test_ivf_lists_are_sized_before_they_are_filled_and_the_index_is_the_same(tmp_path, monkeypatch, metric, vectors):
    """Sizing every list first (so that no list doubles its room while filled) changes no byte of the index;
    L1, which faiss's scalar quantiser lacks, keeps IVF-Flat's float32 vectors."""
    from bpcr.retrieval import index as index_module

    x = _clustered(1200, 16, seed=5)
    write_store(tmp_path / "db", _ids(1200), x.astype(np.float16), META)
    options = IndexOptions(kind="ivf", metric=metric, nlist=8, recall_sample=50)
    first = build_index(tmp_path / "db", tmp_path / "sized", options, log=lambda s: None)
    monkeypatch.setattr(index_module, "_size_lists", lambda *args: None)
    build_index(tmp_path / "db", tmp_path / "grown", options, log=lambda s: None)
    assert first.params["factory"] == f"IVF8,{vectors}"
    sides = [json.loads((tmp_path / name / "index.json").read_text()) for name in ("sized", "grown")]
    assert sides[0]["index_sha256"] == sides[1]["index_sha256"]
    assert (tmp_path / "sized" / "index.faiss").read_bytes() == (tmp_path / "grown" / "index.faiss").read_bytes()


def test_an_hnsw_index_is_filled_on_one_thread(tmp_path, monkeypatch):
    """faiss inserts into an HNSW graph in an unspecified order when threaded: the fill runs on one thread, and
    faiss's thread count is restored after it."""
    from bpcr.retrieval import index as index_module
    from bpcr.retrieval.distances import faiss_threads
    from tests.helpers.faiss_threads import watch_chunk_threads

    seen = watch_chunk_threads(monkeypatch, index_module)
    write_store(tmp_path / "db", _ids(300), _clustered(300, 16, seed=7).astype(np.float16), META)
    faiss = index_module.faiss_module()
    with faiss_threads(2):
        build_index(tmp_path / "db", tmp_path / "hnsw", IndexOptions(kind="hnsw", recall_sample=20), log=lambda s: None)
        assert [threads for caller, threads in seen if caller == "_build_faiss"] == [{1}]
        assert faiss.omp_get_max_threads() == 2
        seen.clear()
        build_index(tmp_path / "db", tmp_path / "ivf", IndexOptions(kind="ivf", nlist=4, recall_sample=20),
                    log=lambda s: None)
        # IVF lists are filled in row order whatever the threads.
        assert [threads for caller, threads in seen if caller == "_build_faiss"] == [{2}]


def test_a_sized_list_is_filled_in_the_room_it_was_given(tmp_path):
    """After _size_lists every list is empty, and filling it moves none of its code buffers: no list grew."""
    from bpcr.retrieval.distances import faiss_module, get_distance, iter_chunks
    from bpcr.retrieval.index import _size_lists
    from bpcr.io.store import open_store

    faiss = faiss_module()
    x = _clustered(3000, 16, seed=6)
    write_store(tmp_path / "db", _ids(3000), x.astype(np.float16), META)
    store, distance = open_store(tmp_path / "db"), get_distance("cosine")
    index = faiss.index_factory(16, "IVF4,SQfp16", faiss.METRIC_INNER_PRODUCT)
    index.train(np.asarray(store.features, dtype=np.float32))
    _size_lists(index, store, distance, 256)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)

    def buffers():
        return [faiss.rev_swig_ptr(lists.get_codes(i), 1).__array_interface__["data"][0] for i in range(4)]

    before = buffers()
    assert [lists.list_size(i) for i in range(4)] == [0] * 4
    for _, block in iter_chunks(store.features, 256, distance.normalise):
        index.add(block)
    assert sum(lists.list_size(i) for i in range(4)) == 3000 and min(lists.list_size(i) for i in range(4)) > 256
    assert buffers() == before


def test_store_changed_after_build_is_refused(tmp_path):
    x = np.ones((4, 3), dtype=np.float32)
    write_store(tmp_path / "db", _ids(4), x, META)
    build_index(tmp_path / "db", tmp_path / "flat", log=lambda s: None)
    write_store(tmp_path / "db", _ids(4)[::-1], x, META)
    with pytest.raises(BadInput, match="changed since"):
        load_index(tmp_path / "flat")


def test_features_replaced_under_the_same_ids_and_shape_are_refused(tmp_path):
    """The same IDs, the same shape, other vectors: searching it would silently rank by stale neighbours."""
    import os

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_store(tmp_path / "db", _ids(4), x, META)
    build_index(tmp_path / "db", tmp_path / "flat", log=lambda s: None)
    features = tmp_path / "db" / "features.npy"
    st = features.stat()
    os.utime(features, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, or copied elsewhere: same bytes
    assert load_index(tmp_path / "flat").store.ids == _ids(4)
    write_store(tmp_path / "db", _ids(4), x[::-1].copy(), META)
    with pytest.raises(BadInput, match="changed since"):
        load_index(tmp_path / "flat")


def test_bad_builds_are_refused(tmp_path):
    write_store(tmp_path / "db", _ids(40), np.ones((40, 6), dtype=np.float32), META)
    with pytest.raises(BadInput, match="no L1 form"):
        build_index(tmp_path / "db", tmp_path / "x", IndexOptions(metric="l1", kind="ivf", pq=2))
    with pytest.raises(BadInput, match="must divide the feature dimension 6"):
        build_index(tmp_path / "db", tmp_path / "x", IndexOptions(kind="ivf", pq=4))
    with pytest.raises(BadInput, match="unknown index kind 'lsh'"):
        build_index(tmp_path / "db", tmp_path / "x", IndexOptions(kind="lsh"))
    assert not (tmp_path / "x").exists()
    (tmp_path / "notindex").mkdir()
    (tmp_path / "notindex" / "keep.txt").write_text("mine")
    with pytest.raises(BadInput, match="not a bpcr index folder"):
        build_index(tmp_path / "db", tmp_path / "notindex", log=lambda s: None)
    assert (tmp_path / "notindex" / "keep.txt").read_text() == "mine"
    with pytest.raises(BadInput, match="no bpcr index here"):
        load_index(tmp_path / "db")
