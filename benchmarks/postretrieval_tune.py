"""Choose the post-retrieval methods' defaults on the PUBLIC half of the demo's queries.

Reads a finished demo (``bpcr run configs/demo.toml``, or any config with the
same runs): its ground truth and a searched run (default
``fused-lite0-lite1-grmac``, the product fusion of two networks). For each
method of ``bpcr refine`` (and for DBA, which makes new database stores that
are searched again) it scores a grid of parameters on the public half of the
queries (``bpcr.evaluation.split.QuerySplit``, seed 0) and picks the best; equal scores go
to the earlier point, and each grid lists the published value first. The
private half is printed for the chosen point only, after the choice; it is
never used to choose.

    .venv/bin/python benchmarks/postretrieval_tune.py --work work/demo --runs submissions
    .venv/bin/python benchmarks/postretrieval_tune.py --only diffusion --run lite0-grmac
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bpcr.dataset.gt import read_ground_truth  # noqa: E402
from bpcr.evaluation.metrics import map_at_k  # noqa: E402
from bpcr.io.runs import load_run  # noqa: E402
from bpcr.evaluation.split import QuerySplit  # noqa: E402

# Each grid: the published value first (ties go to it), then the alternatives tried.
GRIDS = {
    "aqe": {"qe_n": [1, 2, 3, 5, 10]},
    "alpha-qe": {"qe_n": [1, 2, 3, 5, 10, 50], "qe_alpha": [3.0, 1.0, 5.0]},
    "qe-2020": {},
    "kreciprocal": {"k1": [20, 5, 10, 30], "k2": [6, 1, 3], "kr_lambda": [0.3, 0.1, 0.5, 0.7, 0.9],
                    "kr_graph": ["joint"]},
    "diffusion": {"kq": [7, 3, 5, 10], "kd": [50, 10, 20, 100], "gamma": [80.0, 3.0, 10.0, 30.0]},
    "dupgroup": {"dup_by": ["either", "image", "text", "both"], "dup_cosine": [0.9, 0.8, 0.85, 0.95],
                 "dup_tau": [0.8, 0.6, 0.7, 0.9], "dup_expand": [3, 1, 2]},
    "dba": {"n": [1, 2, 3, 5, 10], "alpha": [0.0, 3.0]},
}


def _points(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _score(path: Path, gt: dict, queries: list[str]) -> float:
    run = load_run(path).top()
    return map_at_k(run, {q: gt[q] for q in queries})


def _dba_point(point: dict, run: Path, scratch: Path, graphs: Path, log) -> Path:
    """DBA on every database store of the run's search, then the same search on the new stores."""
    from bpcr.postretrieval.dba import dba
    from bpcr.postretrieval.options import DbaOptions
    from bpcr.retrieval.index import build_index
    from bpcr.io.runs import read_provenance
    from bpcr.retrieval.options import IndexOptions, SearchOptions
    from bpcr.retrieval.search import search

    params = read_provenance(run.with_suffix(".json"))["params"]
    tag = f"dba-n{point['n']}-a{point['alpha']:g}"
    indexes = []
    for s, store in enumerate(params["stores"]):
        out = scratch / tag / f"db{s}"
        if not (out / "meta.json").is_file():
            dba(store, out, DbaOptions(n=point["n"], alpha=point["alpha"]), graph_dir=graphs, log=log)
        build_index(out, scratch / tag / f"index{s}", IndexOptions(metric=params["distances"][s]), log=log)
        indexes.append(scratch / tag / f"index{s}")
    search(indexes, params["queries"], tag, scratch / "runs",
           SearchOptions(depth=params["k"], weights=params["weights"], fusion=params["fusion"] or "sum"), log=log)
    return scratch / "runs" / f"{tag}.trec"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/demo"))
    parser.add_argument("--runs", type=Path, default=Path("submissions"))
    parser.add_argument("--run", default="fused-lite0-lite1-grmac")
    parser.add_argument("--only", action="append", choices=list(GRIDS), help="Tune only these (repeatable).")
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()

    from bpcr.postretrieval.options import RefineOptions
    from bpcr.postretrieval.refine import refine

    gt = read_ground_truth(args.work / "ground_truth.csv")
    split = QuerySplit()
    public, private = split.half(gt, "public"), split.half(gt, "private")
    run = args.runs / f"{args.run}.trec"
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bpcr-tune-"))
    graphs = args.work / "graphs"
    quiet = lambda message: None  # noqa: E731
    base_public = _score(run, gt, public)
    print(f"{args.run}: {len(public)} public queries, mAP@7 {base_public:.4f} (private {len(private)} queries "
          "reported for the chosen points only)")
    text_index = args.work / "text-index"
    chosen = {}
    for method in args.only or list(GRIDS):
        started = time.perf_counter()
        results = []
        for i, point in enumerate(_points(GRIDS[method])):
            if method == "dupgroup" and point["dup_by"] == "image" and point["dup_tau"] != GRIDS[method]["dup_tau"][0]:
                continue  # dup_tau unused: one point is enough
            if method == "dupgroup" and point["dup_by"] == "text" and point["dup_cosine"] != GRIDS[method]["dup_cosine"][0]:
                continue
            if method == "dba":
                path = _dba_point(point, run, scratch, graphs, quiet)
            else:
                name = f"{method}-{i}"
                uses_text = method == "dupgroup" and point.get("dup_by") != "image"
                path = refine(run, text_index if uses_text else None, None, None, name, scratch / "runs",
                              RefineOptions(method=method, **point), graph_dir=graphs, log=quiet).csv
            results.append((_score(path, gt, public), -i, point, path))
        best = max(results, key=lambda r: (r[0], r[1]))
        chosen[method] = {"point": best[2], "public": best[0], "private": _score(best[3], gt, private),
                          "points": len(results)}
        print(f"{method:12} best public {best[0]:.4f} (input {base_public:.4f}) at {best[2]}; "
              f"private {chosen[method]['private']:.4f} (input {_score(run, gt, private):.4f}); "
              f"{len(results)} points, {time.perf_counter() - started:.0f} s")
        ranked = sorted(results, key=lambda r: (-r[0], -r[1]))[:5]
        for score, _, point, _ in ranked:
            print(f"    {score:.4f}  {point}")
    print(json.dumps(chosen, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
