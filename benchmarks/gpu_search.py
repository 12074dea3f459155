"""Exact search on a GPU without faiss-gpu: the torch kernel (``bpcr.retrieval.torchscan``) against the
CPU kernel (numpy and the BLAS), side by side in one run, on the same float16 store.

With CUDA: 500,000 x 2,048 float16 database rows (1.9 GiB, written chunk by chunk
to a scratch store) against 1,000 queries, top 116 (depth 100 + the tie margin)
per query by ``bpcr.retrieval.distances.exact_topk(device="cpu")`` and
``exact_topk_torch(device="cuda")`` (and faiss's GPU kernel when this faiss has
one, for reference). Without CUDA it says so and compares the same two code
paths on the CPU at a scaled-down size (``--cpu-n``, ``--cpu-queries``): the torch
path's correctness and its cost there, not a GPU figure.

Printed: seconds of each (the store already in the page cache, CUDA initialised
before the clock), the ratio CPU / torch, and whether every query's top 100
after bpcr's exact float64 re-scoring (ties by row) is the same on both paths.

    nice -n 10 .venv/bin/python benchmarks/gpu_search.py
    nice -n 10 .venv/bin/python benchmarks/gpu_search.py --n 100000 --queries 200   # quick look on a GPU
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import blas_kernel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

META = {"backbone": "synthetic", "pooling": "none", "normalisation": "l2"}
GIB = float(1 << 30)


def write_database(folder: Path, n: int, dim: int, n_queries: int, seed: int, chunk: int = 20_000):
    """A float16 store of ``n`` unit rows (600 clusters) and ``n_queries`` noisy copies of database rows."""
    from bpcr.io.store import open_store, write_store

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((600, dim)).astype(np.float32)
    db = folder / "db"
    db.mkdir(parents=True)
    (db / "ids.txt").write_text("".join(f"n{i:07d}\n" for i in range(n)), encoding="utf-8")
    meta = dict(META, count=n, dim=dim, dtype="float16")
    (db / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
    (db / "failed.csv").write_text("id,reason\n", encoding="utf-8")
    features = np.lib.format.open_memmap(db / "features.npy", mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        block = centres[rng.integers(0, len(centres), size=m)] + 0.7 * rng.standard_normal((m, dim), dtype=np.float32)
        features[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    features.flush()
    del features
    store = open_store(db)
    picked = rng.integers(0, n, size=n_queries)
    queries = np.asarray(store.features[np.sort(picked)], dtype=np.float32)
    queries += 0.3 * rng.standard_normal(queries.shape, dtype=np.float32) / np.sqrt(dim)
    write_store(folder / "queries", [f"v{i:06d}" for i in range(n_queries)], queries.astype(np.float16), META)
    return store, open_store(folder / "queries", role="query")


def ranked(distance, query, features, rows, depth):
    from bpcr.retrieval.distances import rescore

    rows = rows[rows >= 0]
    scores = rescore(distance, query, features, rows)
    return rows[np.lexsort((rows, -scores))][:depth].tolist()




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--cpu-n", type=int, default=50_000, help="Database rows without CUDA.")
    parser.add_argument("--cpu-queries", type=int, default=200, help="Queries without CUDA.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from bpcr.retrieval.distances import DISTANCES, TIE_MARGIN, exact_topk, exact_topk_torch, gpu_count, prepare_queries

    cuda = torch.cuda.is_available()
    if cuda:
        device, n, n_queries = "cuda", args.n, args.queries
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    else:
        device, n, n_queries = "cpu", args.cpu_n, args.cpu_queries
        print(f"no CUDA device: comparing both code paths on the CPU at {n:,} x {args.dim:,} against "
              f"{n_queries:,} queries (the GPU run is {args.n:,} x {args.dim:,} against {args.queries:,})")
    scratch = Path(tempfile.mkdtemp(prefix="bpcr-gpu-search-"))
    try:
        t0 = time.perf_counter()
        store, qstore = write_database(scratch, n, args.dim, n_queries, args.seed)
        print(f"generated {n:,} x {args.dim:,} float16 ({n * args.dim * 2 / GIB:.2f} GiB) in "
              f"{time.perf_counter() - t0:.0f} s")
        with open(store.path / "features.npy", "rb") as handle:  # into the page cache for both contenders
            while handle.read(64 << 20):
                pass
        distance = DISTANCES["cosine"]
        queries = prepare_queries(distance, qstore.features)
        kk = args.depth + TIE_MARGIN
        exact_topk_torch(store.features[:1000], queries[:4], 4, distance, device=device)  # start-up off the clock
        if cuda:
            torch.cuda.synchronize()
        timings, found = {}, {}
        contenders = [("cpu (numpy + BLAS)", lambda: exact_topk(store.features, queries, kk, distance, device="cpu")),
                      (f"torch ({device})", lambda: exact_topk_torch(store.features, queries, kk, distance,
                                                                     device=device))]
        if cuda and gpu_count() > 0:
            contenders.append(("faiss-gpu", lambda: exact_topk(store.features, queries, kk, distance, device="auto")))
        for label, run in contenders:
            t = time.perf_counter()
            _, rows = run()
            timings[label] = time.perf_counter() - t
            found[label] = rows
        reference = "cpu (numpy + BLAS)"
        same = {label: sum(ranked(distance, qstore.features[i], store.features, rows[i], args.depth)
                           == ranked(distance, qstore.features[i], store.features, found[reference][i], args.depth)
                           for i in range(n_queries))
                for label, rows in found.items() if label != reference}
        print(f"{'':22}{'seconds':>9}")
        for label, seconds in timings.items():
            print(f"{label:22}{seconds:9.2f}")
        for label, agree in same.items():
            print(f"cpu / {label}: {timings[reference] / timings[label]:.2f}x; same top {args.depth} after exact "
                  f"re-scoring: {agree}/{n_queries} queries; BLAS {blas_kernel()}, torch threads "
                  f"{torch.get_num_threads()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
