"""How far the shortlist-bounded k-reciprocal variant is from the authors' algorithm on the joint graph.

``bpcr refine --method kreciprocal`` computes Zhong et al.'s published ``re_ranking`` on the joint graph of
the run's queries and the whole database (``kr_graph = "joint"``, what ``auto`` runs up to 50,000 nodes) and,
for catalogues too large to read N x N, a variant bounded to each query's shortlist on the database's kept
k-NN graph (``kr_graph = "shortlist"``). For the same input run and parameters this prints, per point, both
runs' wall seconds, the mean overlap of their top 7 (|A n B| / 7), the share of queries whose top 7 are
identical, and the mAP@7 of each on the PUBLIC half of the queries (the half defaults are chosen on; the
private half is not printed, so nothing here invites a choice on it).

Two data sets:

- ``--work/--runs/--run``: a finished demo (``bpcr run configs/demo.toml``) and a searched run of it (default
  the product fusion of two networks);
- ``--generated N``: N clustered 128-d database vectors (products of 5 images) and 200 queries, searched
  exactly; a query's truth is its product's images. Shows the joint graph's cost growing with N^2 D beside
  the variant's.

    .venv/bin/python benchmarks/kreciprocal_agreement.py --work work/demo --runs submissions
    .venv/bin/python benchmarks/kreciprocal_agreement.py --generated 20000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import blas_kernel, peak_rss_bytes  # noqa: E402

from bpcr.evaluation.metrics import map_at_k  # noqa: E402
from bpcr.io.runs import load_run  # noqa: E402
from bpcr.postretrieval.options import KReciprocalOptions, RefineOptions  # noqa: E402
from bpcr.postretrieval.refine import refine  # noqa: E402

PAPER = {"k1": 20, "k2": 6, "kr_lambda": 0.3}


def _points() -> list[tuple[str, dict]]:
    defaults = {"k1": KReciprocalOptions.k1, "k2": KReciprocalOptions.k2, "kr_lambda": KReciprocalOptions.kr_lambda}
    return [("defaults", defaults), ("paper", PAPER)]


def compare(run: Path, gt: dict[str, list[str]] | None, public: list[str] | None, scratch: Path,
            graphs: Path) -> None:
    quiet = lambda message: None  # noqa: E731
    if gt is not None:
        base = map_at_k(load_run(run).top(), {q: gt[q] for q in public})
        print(f"input {run.name}: public mAP@7 {base:.4f} ({len(public)} queries)")
    print(f"{'point':9} {'k1':>3} {'k2':>3} {'lambda':>6} | {'joint s':>8} {'shortlist s':>11} | {'top-7 overlap':>13} "
          f"{'same top 7':>10} | {'joint mAP':>9} {'shortlist mAP':>13}")
    for label, point in _points():
        runs, seconds = {}, {}
        for graph in ("joint", "shortlist"):
            started = time.perf_counter()
            result = refine(run, None, None, None, f"{label}-{graph}", scratch,
                            RefineOptions(method="kreciprocal", kr_graph=graph, **point), graph_dir=graphs, log=quiet)
            seconds[graph] = time.perf_counter() - started
            runs[graph] = load_run(result.csv).top()
        queries = sorted(runs["joint"])
        overlap = sum(len(set(runs["joint"][q]) & set(runs["shortlist"][q])) / 7 for q in queries) / len(queries)
        same = sum(runs["joint"][q] == runs["shortlist"][q] for q in queries) / len(queries)
        scores = ("", "")
        if gt is not None:
            scores = tuple(f"{map_at_k(runs[g], {q: gt[q] for q in public}):.4f}" for g in ("joint", "shortlist"))
        print(f"{label:9} {point['k1']:>3} {point['k2']:>3} {point['kr_lambda']:>6g} | {seconds['joint']:>8.1f} "
              f"{seconds['shortlist']:>11.1f} | {overlap:>13.3f} {same:>10.3f} | {scores[0]:>9} {scores[1]:>13}")


def generated(n: int, scratch: Path) -> tuple[Path, dict[str, list[str]], list[str]]:
    """``n`` clustered database vectors (products of 5 images around category centres, as
    ``benchmarks/search_scale.py`` draws them) and 200 queries, each a noisier draw of one product, searched exactly;
    a query's truth is its product's 5 images."""
    import numpy as np

    from bpcr.evaluation.split import QuerySplit
    from bpcr.io.store import write_store
    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import IndexOptions, SearchOptions
    from bpcr.retrieval.search import search

    rng = np.random.default_rng(0)
    dim, per, n_queries = 128, 5, 200
    products = max(1, n // per)
    categories = rng.standard_normal((max(1, products // 50), dim))
    centres = categories[rng.integers(0, len(categories), products)] + 0.5 * rng.standard_normal((products, dim))
    owner = np.arange(n) // per % products
    db = centres[owner] + 0.5 * rng.standard_normal((n, dim))
    picked = rng.integers(0, products, n_queries)
    queries = centres[picked] + 1.2 * rng.standard_normal((n_queries, dim))
    meta = {"backbone": "generated", "pooling": "none"}
    db_ids, q_ids = [f"n{i:07d}" for i in range(n)], [f"v{i:04d}" for i in range(n_queries)]
    write_store(scratch / "db", db_ids, db.astype(np.float32), meta)
    write_store(scratch / "queries", q_ids, queries.astype(np.float32), meta)
    quiet = lambda message: None  # noqa: E731
    build_index(scratch / "db", scratch / "flat", IndexOptions(kind="flat"), log=quiet)
    search(scratch / "flat", scratch / "queries", "base", scratch / "runs", SearchOptions(depth=100), log=quiet)
    gt = {q: [db_ids[r] for r in np.flatnonzero(owner == picked[j])] for j, q in enumerate(q_ids)}
    return scratch / "runs" / "base.trec", gt, QuerySplit().half(gt, "public")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/demo"))
    parser.add_argument("--runs", type=Path, default=Path("submissions"))
    parser.add_argument("--run", default="fused-lite0-lite1-grmac")
    parser.add_argument("--generated", type=int, default=0, help="Compare on N generated vectors instead.")
    args = parser.parse_args()
    print(f"BLAS: {blas_kernel()}")
    with tempfile.TemporaryDirectory(prefix="bpcr-kr-") as tmp:
        scratch = Path(tmp)
        if args.generated:
            run, gt, public = generated(args.generated, scratch / "data")
            print(f"generated: {args.generated:,} clustered database vectors (128-d), 200 queries, exact search")
            compare(run, gt, public, scratch / "runs", scratch / "graphs")
        else:
            from bpcr.dataset.gt import read_ground_truth
            from bpcr.evaluation.split import QuerySplit

            gt = read_ground_truth(args.work / "ground_truth.csv")
            compare(args.runs / f"{args.run}.trec", gt, QuerySplit().half(gt, "public"), scratch / "runs",
                    args.work / "graphs")
    print(f"peak resident memory {peak_rss_bytes() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
