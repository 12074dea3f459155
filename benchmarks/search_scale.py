"""Exact and approximate search at Perfect-500K scale: bpcr against plain numpy.

Generates N x D random float16 database vectors in chunks (default 500,000 x
2048, 1.9 GiB) into a feature store under a scratch folder, and 100 queries.
Then, each in a fresh subprocess so that ru_maxrss is that step's peak alone:

1. baseline: ``np.load`` + ``astype(float32)`` + one matmul + ``argpartition``;
2. bpcr exact: ``bpcr.retrieval.search.search`` on a flat index (streams the store), timed
   end to end (opening the index and stores, search, exact re-scoring, writing
   the run) with the imports done before the clock starts, as for the baseline;
3. bpcr approximate: ``build_index`` with ``IndexOptions(kind="ivf")`` (recall@100 on
   database rows is measured by the build) and ``search`` on it.

Printed: wall time and peak resident memory of each, the ratios bpcr / numpy,
the approximate search's speed-up over exact search and its recall@100 on the
100 queries against the exact run.

``--data clustered`` (default) draws rows from a three-level mixture (categories,
products, images), which gives the neighbourhood structure real descriptors have;
``--data iid`` draws independent Gaussian rows, where every point is about as far
from every other and no index can find the top 100 without scanning nearly all.

    .venv/bin/python benchmarks/search_scale.py                 # 500K x 2048
    .venv/bin/python benchmarks/search_scale.py --n 50000       # quick look
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import blas_kernel, peak_rss_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

META = {"backbone": "synthetic", "pooling": "none", "normalisation": "l2"}
GIB = float(1 << 30)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def generate(folder: Path, n: int, dim: int, n_queries: int, data: str, seed: int, chunk: int = 20_000) -> None:
    """Database and query stores, written chunk by chunk (never the whole matrix in memory)."""
    from bpcr.io.store import write_store

    rng = np.random.default_rng(seed)
    n_cat, per_product = 500, 5
    n_products = max(1, n // per_product)
    cat_centres = rng.standard_normal((n_cat, dim)).astype(np.float32)
    product_cat = rng.integers(0, n_cat, size=n_products)
    product_seed = rng.integers(0, 2**63, size=n_products)

    def product_centres(products: np.ndarray) -> np.ndarray:
        # Each product's centre from its own seed: the same product gives the same centre in every chunk.
        unique, inverse = np.unique(products, return_inverse=True)
        noise = np.stack([np.random.default_rng(product_seed[p]).standard_normal(dim, dtype=np.float32) for p in unique])
        return cat_centres[product_cat[products]] + 0.8 * noise[inverse]

    db = folder / "db"
    db.mkdir(parents=True)
    (db / "ids.txt").write_text("".join(f"n{i:07d}\n" for i in range(n)), encoding="utf-8")
    meta = dict(META, count=n, dim=dim, dtype="float16")
    (db / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
    (db / "failed.csv").write_text("id,reason\n", encoding="utf-8")
    features = np.lib.format.open_memmap(db / "features.npy", mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        block = rng.standard_normal((m, dim), dtype=np.float32)
        if data == "clustered":
            block = product_centres(np.arange(start, start + m) // per_product % n_products) + 0.6 * block
        features[start : start + m] = _normalise(block)
    features.flush()
    del features
    if data == "clustered":  # a "photo" of a database product: its centre under stronger noise
        picked = rng.integers(0, n_products, size=n_queries)
        queries = product_centres(picked) + 0.9 * rng.standard_normal((n_queries, dim), dtype=np.float32)
    else:
        queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    write_store(folder / "queries", [f"v{i:06d}" for i in range(n_queries)], _normalise(queries).astype(np.float16), META)


# ---------------------------------------------------------------- children (one step each)


def child_baseline(folder: Path, k: int) -> dict:
    x16 = np.load(folder / "db" / "features.npy", mmap_mode="r")
    q = np.load(folder / "queries" / "features.npy").astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t0 = time.perf_counter()
    x = x16.astype(np.float32)
    scores = q @ x.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    seconds = time.perf_counter() - t0
    ids = (folder / "db" / "ids.txt").read_text(encoding="utf-8").split()
    return {"seconds": seconds, "top": [[ids[r] for r in row] for row in top.tolist()], "blas": blas_kernel()}


def child_exact(folder: Path, k: int) -> dict:
    import faiss  # noqa: F401  (imported before the clock starts, as numpy is for the baseline)

    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import IndexOptions, SearchOptions
    from bpcr.retrieval.search import search

    t0 = time.perf_counter()
    build_index(folder / "db", folder / "flat", IndexOptions(kind="flat"), log=lambda s: None)
    t1 = time.perf_counter()
    search(folder / "flat", folder / "queries", "exact", folder / "runs", SearchOptions(depth=k), log=lambda s: None)
    t2 = time.perf_counter()
    return {"build_seconds": t1 - t0, "seconds": t2 - t1}


def child_ann(folder: Path, k: int, nlist: int | None, train_size: int | None) -> dict:
    import faiss  # noqa: F401

    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import IndexOptions, SearchOptions
    from bpcr.retrieval.search import search

    t0 = time.perf_counter()
    info = build_index(folder / "db", folder / "ivf", IndexOptions(kind="ivf", nlist=nlist, train_size=train_size),
                       log=lambda s: print(f"    {s}", file=sys.stderr, flush=True))
    t1 = time.perf_counter()
    search(folder / "ivf", folder / "queries", "ann", folder / "runs", SearchOptions(depth=k), log=lambda s: None)
    t2 = time.perf_counter()
    return {"build_seconds": t1 - t0, "seconds": t2 - t1, "recall_db": info.recall_at_100, "params": info.params}




def run_child(args: argparse.Namespace, role: str) -> dict:
    cmd = [sys.executable, __file__, "--child", role, "--folder", str(args.folder), "--k", str(args.k),
           "--n", str(args.n), "--dim", str(args.dim), "--queries", str(args.queries), "--data", args.data,
           "--seed", str(args.seed)]
    if args.nlist:
        cmd += ["--nlist", str(args.nlist)]
    if args.train_size:
        cmd += ["--train-size", str(args.train_size)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_trec_top(path: Path) -> dict[str, list[str]]:
    from bpcr.io.runs import read_trec

    ranking, _ = read_trec(path)
    return ranking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--data", choices=("clustered", "iid"), default="clustered")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default sqrt(N)).")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--skip-ann", action="store_true")
    parser.add_argument("--scratch", type=Path, default=None, help="Scratch folder (default: a temporary folder, removed after).")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child == "generate":
            t0 = time.perf_counter()
            generate(args.folder, args.n, args.dim, args.queries, args.data, args.seed)
            result = {"seconds": time.perf_counter() - t0}
        elif args.child == "baseline":
            result = child_baseline(args.folder, args.k)
        elif args.child == "exact":
            result = child_exact(args.folder, args.k)
        else:
            result = child_ann(args.folder, args.k, args.nlist, args.train_size)
        result["peak_bytes"] = peak_rss_bytes()
        print(json.dumps(result))
        return

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bpcr-search-bench-"))
    args.folder = scratch / f"{args.data}-{args.n}x{args.dim}"
    try:
        if not (args.folder / "queries" / "meta.json").is_file():
            if args.folder.exists():
                shutil.rmtree(args.folder)
            made = run_child(args, "generate")
            print(f"generated {args.n} x {args.dim} float16 ({args.data}) in {made['seconds']:.0f} s")
        matrix = args.n * args.dim * 2
        print(f"database {args.n} x {args.dim} float16 = {matrix / GIB:.2f} GiB; {args.queries} queries; exact top-{args.k}")
        # Read the file once so neither contender pays for the first read from disk.
        with open(args.folder / "db" / "features.npy", "rb") as handle:
            while handle.read(64 << 20):
                pass
        base = run_child(args, "baseline")
        exact = run_child(args, "exact")
        exact_top = read_trec_top(args.folder / "runs" / "exact.trec")
        agree = np.mean([len(set(b).intersection(exact_top[f"v{i:06d}"])) / args.k for i, b in enumerate(base["top"])])
        print(f"{'':18}{'seconds':>9}{'peak GiB':>10}{'peak / matrix':>15}")
        for label, r in (("numpy baseline", base), ("bpcr exact", exact)):
            print(f"{label:18}{r['seconds']:9.2f}{r['peak_bytes'] / GIB:10.2f}{r['peak_bytes'] / matrix:15.2f}")
        print(f"bpcr / numpy: time {exact['seconds'] / base['seconds']:.2f}x, peak memory "
              f"{exact['peak_bytes'] / base['peak_bytes']:.2f}x; top-{args.k} agreement {agree:.4f} "
              f"(flat index build {exact['build_seconds']:.1f} s: hashing the store); numpy's BLAS: {base['blas']}")
        if not args.skip_ann:
            ann = run_child(args, "ann")
            ann_top = read_trec_top(args.folder / "runs" / "ann.trec")
            recall = np.mean([len(set(ann_top[q]).intersection(exact_top[q])) / args.k for q in exact_top])
            p = ann["params"]
            print(f"ivf ({p['factory']}, nprobe {p['nprobe']}): build {ann['build_seconds']:.0f} s, peak "
                  f"{ann['peak_bytes'] / GIB:.2f} GiB; recall@{args.k} {recall:.4f} on the queries, "
                  f"{ann['recall_db']:.4f} on database rows; search {ann['seconds']:.2f} s, speed-up over "
                  f"exact {exact['seconds'] / ann['seconds']:.1f}x")
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
