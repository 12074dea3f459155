"""The post-retrieval methods' cost at Perfect-500K scale, side by side with plain search.

Generates N x D clustered float16 database vectors (default 500,000 x 256: the
dimension is kept small so that the whole comparison runs in minutes on two
cores; the graph-based steps scale with N x k, the searches with N x D) and
100 queries, with ``benchmarks/search_scale.py``'s generator (categories,
products of 5 images, images). Then, each step in a fresh subprocess so that
its peak resident memory (VmHWM) is its own:

- ``search exact``: ``bpcr search`` on a flat index (streams the store);
- ``ivf index`` + ``search ivf``: an IVF index (``--nlist``, nprobe tuned to
  recall@100 0.95 by ``bpcr index``) and the plain search every method below
  refines (its run names the index, so the methods reuse it);
- ``k-NN graph``: the database's graph (``bpcr.retrieval.knngraph``), candidates from the
  IVF index (an exact N x N scan would take most of an hour here), k the
  largest the defaults need; kept, then read by every step below;
- ``aqe``, ``alpha-qe``, ``qe-2020``: expand and search again;
- ``kreciprocal``, ``diffusion``, ``dupgroup`` (image links only: no
  descriptions here): re-rank each query's top 100 with the kept graph;
- ``dba``: the augmented copy of the database store, from the kept graph.

Printed: wall seconds, CPU seconds (user + system: on a shared machine the
wall time also counts other people's work) and peak GiB per step, their
ratios to plain (IVF) search, and the BLAS library numpy calls
(threadpoolctl), since the ratios depend on it.

    .venv/bin/python benchmarks/postretrieval_scale.py              # 500K x 256, ~6 min on 2 shared cores
    .venv/bin/python benchmarks/postretrieval_scale.py --n 50000    # quick look
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from common import blas_kernel, peak_rss_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

GIB = float(1 << 30)
METHODS = ("aqe", "alpha-qe", "qe-2020", "kreciprocal", "diffusion", "dupgroup")


def _graph_k() -> int:
    """The largest k the defaults read from the graph."""
    from bpcr.postretrieval.dba import DBA_N
    from bpcr.postretrieval.refine import METHODS as REGISTRY

    needs = [REGISTRY["kreciprocal"].defaults["k1"], REGISTRY["kreciprocal"].defaults["k2"] - 1,
             REGISTRY["diffusion"].defaults["kd"], REGISTRY["dupgroup"].defaults["dup_k"], DBA_N]
    return max(needs)


def child(step: str, folder: Path, args: argparse.Namespace) -> dict:
    import faiss  # noqa: F401  (imported before the clock starts)

    quiet = lambda message: None  # noqa: E731
    runs, graphs = folder / "runs", folder / "graphs"
    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    out: dict = {}
    if step == "generate":
        from search_scale import generate

        generate(folder, args.n, args.dim, args.queries, "clustered", args.seed)
    elif step == "search exact":
        from bpcr.retrieval.index import build_index
        from bpcr.retrieval.options import IndexOptions, SearchOptions
        from bpcr.retrieval.search import search

        build_index(folder / "db", folder / "flat", IndexOptions(kind="flat"), log=quiet)
        started = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        search(folder / "flat", folder / "queries", "exact", runs, SearchOptions(depth=args.depth), log=quiet)
    elif step == "ivf index":
        from bpcr.retrieval.index import build_index
        from bpcr.retrieval.options import IndexOptions

        info = build_index(folder / "db", folder / "ivf", IndexOptions(kind="ivf", nlist=args.nlist), log=quiet)
        out["params"] = {k: info.params.get(k) for k in ("factory", "nprobe")}
        out["recall_at_100"] = info.recall_at_100
    elif step == "search ivf":
        from bpcr.retrieval.options import SearchOptions
        from bpcr.retrieval.search import search

        search(folder / "ivf", folder / "queries", "base", runs, SearchOptions(depth=args.depth), log=quiet)
    elif step == "k-NN graph":
        from bpcr.retrieval.distances import get_distance
        from bpcr.retrieval.knngraph import knn_graph
        from bpcr.io.store import open_store

        graph = knn_graph(open_store(folder / "db"), get_distance("cosine"), _graph_k(), index=folder / "ivf",
                          cache=graphs, log=quiet)
        out["k"] = graph.k
    elif step == "dba":
        from bpcr.postretrieval.dba import dba

        dba(folder / "db", folder / "db-dba", index=folder / "ivf", graph_dir=graphs, log=quiet)
    else:
        from bpcr.postretrieval.options import RefineOptions
        from bpcr.postretrieval.refine import refine

        options = {"dup_by": "image"} if step == "dupgroup" else {}
        result = refine(runs / "base.trec", None, None, None, step.replace("-", "_"), runs,
                        RefineOptions(method=step, **options), graph_dir=graphs, log=quiet)
        out["changed"] = result.provenance["counts"]["changed"]
    out["seconds"] = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = usage.ru_utime + usage.ru_stime - cpu_before
    return out




def run_child(args: argparse.Namespace, step: str) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--folder", str(args.folder), "--n", str(args.n),
           "--dim", str(args.dim), "--queries", str(args.queries), "--seed", str(args.seed), "--depth", str(args.depth),
           "--nlist", str(args.nlist)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists of the index (and so of the graph).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", action="append", default=[], help="A step to leave out (repeatable).")
    parser.add_argument("--scratch", type=Path, default=None, help="Scratch folder (default: temporary, removed).")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = child(args.child, args.folder, args)
        result["peak_bytes"] = peak_rss_bytes()
        print(json.dumps(result))
        return

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bpcr-postretrieval-bench-"))
    args.folder = scratch / f"{args.n}x{args.dim}"
    started = time.perf_counter()
    try:
        if not (args.folder / "queries" / "meta.json").is_file():
            if args.folder.exists():
                shutil.rmtree(args.folder)
            args.folder.mkdir(parents=True)
            made = run_child(args, "generate")
            print(f"generated {args.n} x {args.dim} float16 (clustered) in {made['seconds']:.0f} s")
        matrix = args.n * args.dim * 2
        print(f"database {args.n} x {args.dim} float16 = {matrix / GIB:.2f} GiB; {args.queries} queries; "
              f"depth {args.depth}; BLAS: {blas_kernel()}")
        with open(args.folder / "db" / "features.npy", "rb") as handle:  # warm the page cache for every step
            while handle.read(64 << 20):
                pass
        steps = ["search exact", "ivf index", "search ivf", "k-NN graph", *METHODS, "dba"]
        results = {}
        for step in steps:
            if step in args.skip:
                continue
            results[step] = run_child(args, step)
            r = results[step]
            extra = {k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds", "peak_bytes")}
            print(f"  {step:14}{r['seconds']:9.2f} s {r['cpu_seconds']:9.2f} s CPU {r['peak_bytes'] / GIB:7.2f} GiB  "
                  f"{extra or ''}", flush=True)
        plain = results.get("search ivf") or results.get("search exact")
        print(f"\n{'step':16}{'seconds':>9}{'CPU s':>9}{'peak GiB':>10}{'time / search':>15}{'CPU / search':>14}"
              f"{'peak / search':>15}")
        for step, r in results.items():
            print(f"{step:16}{r['seconds']:9.2f}{r['cpu_seconds']:9.2f}{r['peak_bytes'] / GIB:10.2f}"
                  f"{r['seconds'] / plain['seconds']:15.2f}{r['cpu_seconds'] / plain['cpu_seconds']:14.2f}"
                  f"{r['peak_bytes'] / plain['peak_bytes']:15.2f}")
        print(f"(ratios against 'search ivf', the plain search the methods refine; BLAS: {blas_kernel()}; "
              f"total {time.perf_counter() - started:.0f} s)")
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
