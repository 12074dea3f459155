"""bpcr.retrieval.torchscan: exact search through torch, run here on the CPU through the code CUDA runs,
against the numpy kernel, with ties; and where exact search is sent by ``device``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bpcr.retrieval.distances import (DISTANCES, TIE_MARGIN, exact_topk, exact_topk_torch, iter_chunks, prepare_queries,
                            rescore, search_device, top_k)
from bpcr.errors import BadInput
from bpcr.io.store import write_store
from bpcr.retrieval.torchscan import DeviceScan

META = {"backbone": "resnet50", "pooling": "gem", "pooling_params": {"p": 3.0}, "normalisation": "l2"}

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _ids(n: int) -> list[str]:
    return [f"n{i:05d}" for i in range(n)]


def _ranked(distance, query, features, rows, depth):
    """The kit's ranking of candidate rows: exact float64 score, ties by row; the top ``depth``."""
    scores = rescore(distance, query, features, rows)
    return rows[np.lexsort((rows, -scores))][:depth].tolist()


def test_top_k_by_hand_ties_go_to_the_lowest_rows():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]], dtype=np.float32)
    rows = np.array([[9, 8, 3, 5, 1, 4], [0, 1, 2, 3, 4, 5]])
    kept_scores, kept_rows = top_k(scores, rows, 2)
    assert [sorted(r) for r in kept_rows.tolist()] == [[3, 4], [0, 1]]  # row 3 and row 4 of the four tied 2.0s
    assert sorted(kept_scores[0].tolist()) == [2.0, 2.0]


def test_device_scan_by_hand_ties_go_to_the_lowest_rows():
    # Cosine of (1, 0) with rows (1, 0) x3, (0, 1), (2, 0): five rows, four tied at 1.0.
    x = np.array([[0, 1], [1, 0], [1, 0], [2, 0], [1, 0]], dtype=np.float16)
    q = prepare_queries(DISTANCES["cosine"], np.array([[1.0, 0.0]]))
    with DeviceScan(q, "cosine", "cpu") as scan:
        scores, rows = scan.topk(x, 2)
    assert sorted(rows[0].tolist()) == [1, 2] and scores[0].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_torch_path_gives_the_numpy_paths_candidates(tmp_path, metric, dtype):
    rng = np.random.default_rng(3)
    n, dim, depth = 900, 24, 20
    x = rng.standard_normal((n, dim)).astype(dtype)
    # Ties: each of 40 rows copied twice elsewhere, so equal scores straddle chunk borders and the cut.
    sources = rng.choice(n, size=40, replace=False)
    for copy in range(2):
        x[(sources + 300 * (copy + 1)) % n] = x[sources]
    q = rng.standard_normal((12, dim)).astype(np.float32)
    q[:3] = x[sources[:3]]  # queries that are database rows: their duplicates tie at the top
    store = write_store(tmp_path / "db", _ids(n), x, META)
    distance = DISTANCES[metric]
    prepared = prepare_queries(distance, q)
    kk = depth + TIE_MARGIN
    _, cpu_rows = exact_topk(store.features, prepared, kk, distance, chunk_rows=128, device="cpu")
    _, torch_rows = exact_topk_torch(store.features, prepared, kk, distance, chunk_rows=200, device="cpu")
    for i in range(len(q)):
        assert (_ranked(distance, q[i], store.features, torch_rows[i], depth)
                == _ranked(distance, q[i], store.features, cpu_rows[i], depth))


def test_exact_ties_keep_the_same_rows_on_both_paths(tmp_path):
    # Integer-valued rows: every float32 score is exact, so the kernels must agree on the very rows,
    # with many more rows tied at the cut than fit.
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, size=(500, 8)).astype(np.float16)
    q = rng.integers(-2, 3, size=(9, 8)).astype(np.float32)
    store = write_store(tmp_path / "db", _ids(500), x, META)
    distance = DISTANCES["l1"]
    prepared = prepare_queries(distance, q)
    _, cpu_rows = exact_topk(store.features, prepared, 30, distance, chunk_rows=64, device="cpu")
    _, torch_rows = exact_topk_torch(store.features, prepared, 30, distance, chunk_rows=97, device="cpu")
    assert [sorted(r) for r in cpu_rows.tolist()] == [sorted(r) for r in torch_rows.tolist()]
    _, whole_rows = exact_topk(np.asarray(x), prepared, 30, distance, chunk_rows=500, device="cpu")
    assert [sorted(r) for r in whole_rows.tolist()] == [sorted(r) for r in cpu_rows.tolist()]  # chunk-free


def test_torch_path_batches_queries_and_restores_matmul_precision(monkeypatch):
    import bpcr.retrieval.torchscan as torchscan

    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    q = prepare_queries(DISTANCES["cosine"], rng.standard_normal((10, 6)))
    monkeypatch.setattr(torchscan, "SCORE_BYTES", 4 * 64 * 3)  # three queries per batch
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        _, batched = exact_topk_torch(x, q, 5, DISTANCES["cosine"], device="cpu")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    _, whole = exact_topk(x, q, 5, DISTANCES["cosine"], device="cpu")
    assert [sorted(r) for r in batched.tolist()] == [sorted(r) for r in whole.tolist()]


def test_chunks_in_the_stored_dtype(tmp_path):
    x = np.random.default_rng(2).standard_normal((70, 5)).astype(np.float16)
    store = write_store(tmp_path / "db", _ids(70), x, META)
    blocks = [(start, block.copy()) for start, block in iter_chunks(store.features, 32, widen=False)]
    assert [s for s, _ in blocks] == [0, 32, 64] and all(b.dtype == np.float16 for _, b in blocks)
    assert np.array_equal(np.concatenate([b for _, b in blocks]), x)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_devices_without_cuda():
    assert search_device("cpu") == "cpu"
    assert search_device("auto") == "cpu"
    with pytest.raises(BadInput, match="torch sees no CUDA GPU"):
        search_device("cuda")
    with pytest.raises(BadInput, match="unknown search device 'gpu'"):
        search_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_search_cli_refuses_cuda_without_a_gpu(cli, tmp_path):
    result = cli("search", "--index", tmp_path / "none", "--queries", tmp_path / "q", "--name", "r",
                 "--out", tmp_path / "runs", "--device", "cuda")
    assert result.code == 2 and "torch sees no CUDA GPU" in result.err and result.err.count("\n") == 1


def test_a_linux_machine_without_a_gpu_driver_is_told_cpu_without_importing_torch(tmp_path, monkeypatch):
    """Importing torch costs about 2 s: where no GPU driver is there to use, search_device("auto") does without."""
    import os
    import subprocess
    import sys

    from bpcr.retrieval import torchscan

    if not sys.platform.startswith("linux") or any(os.path.exists(p) for p in torchscan.GPU_DRIVER_PATHS):
        pytest.skip("needs a Linux machine without a GPU driver")
    probe = ("import sys; from bpcr.retrieval.distances import search_device; "
             "print(search_device('auto'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["cpu", "False"]
    # With a driver present (here: a stand-in path), torch is asked, and its answer is the one given.
    (tmp_path / "driver").mkdir()
    monkeypatch.setattr(torchscan, "GPU_DRIVER_PATHS", (str(tmp_path / "driver"),))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torchscan.cuda_available() is True
    monkeypatch.setattr(torchscan, "GPU_DRIVER_PATHS", (str(tmp_path / "absent"),))
    monkeypatch.delitem(sys.modules, "torch")  # as in a process that has not imported it
    assert torchscan.cuda_available() is False
