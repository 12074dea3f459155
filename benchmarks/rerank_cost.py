"""Cost and accuracy of SIFT re-ranking (paper 000 §3.4.2) against the keypoint cap.

For each keypoint cap (and scorer / matcher), re-ranks the top 100 of every
query and prints: seconds to compute the database descriptors (cold cache),
seconds to match, seconds for a second run on the warm cache, and mAP@7 / P@1
before and after. Uses the demo dataset (generated and prepared into
``--data`` when it is not there yet) or any prepared manifests with ground
truth. Without ``--run``, each query's input shortlist is its relevant images
at random places in the top 100 among random other database images (seeded),
so the input mAP@7 is low and any gain is the re-ranker's own.

    .venv/bin/python benchmarks/rerank_cost.py                          # demo data, caps 250,500,1000
    .venv/bin/python benchmarks/rerank_cost.py --caps 2000 --queries 25  # costly caps on a subset
    .venv/bin/python benchmarks/rerank_cost.py --db-manifest work/demo/prepared/database.csv \\
        --query-manifest work/demo/prepared/queries.csv --gt work/demo/prepared/ground_truth.csv --run submissions/mac.trec
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bpcr.gt import read_ground_truth  # noqa: E402
from bpcr.manifest import read_manifest  # noqa: E402
from bpcr.metrics import map_at_k, precision_at_1  # noqa: E402
from bpcr.rerank import rerank  # noqa: E402
from bpcr.runs import load_run, write_run  # noqa: E402


def demo_manifests(data: Path, workers: int | None) -> tuple[Path, Path, Path]:
    prepared = data / "prepared"
    if not (prepared / "database.csv").is_file():
        from bpcr.demo import prepare_demo

        print(f"generating the demo dataset into {data} ...", flush=True)
        prepare_demo(data, seed=0, workers=workers)
    return prepared / "database.csv", prepared / "queries.csv", prepared / "ground_truth.csv"


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the worker pools)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def random_shortlists(db_ids: list[str], gt: dict[str, list[str]], query_ids: list[str], depth: int,
                      seed: int) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Each query's relevant images at random ranks within ``depth``, the rest random others."""
    rng = np.random.default_rng(seed)
    known = set(db_ids)
    ranking, scores = {}, {}
    for q in query_ids:
        relevant = [d for d in gt.get(q, []) if d in known][:depth]
        relevant_set = set(relevant)
        others = [db_ids[i] for i in rng.permutation(len(db_ids))[: depth + len(relevant)] if db_ids[i] not in relevant_set]
        ids = others[: depth - len(relevant)]
        for d in relevant:
            ids.insert(int(rng.integers(0, len(ids) + 1)), d)
        ranking[q] = ids
        scores[q] = [1.0 - r / depth for r in range(len(ids))]
    return ranking, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bpcr_rerank_demo",
                        help="demo dataset folder (generated when missing)")
    parser.add_argument("--db-manifest", type=Path)
    parser.add_argument("--query-manifest", type=Path)
    parser.add_argument("--gt", type=Path)
    parser.add_argument("--run", type=Path, help="input run (default: random shortlists holding the relevant images)")
    parser.add_argument("--caps", default="250,500,1000", help="keypoint caps, comma-separated")
    parser.add_argument("--scorers", default="matches", help="scorers, comma-separated (matches, inliers, blend)")
    parser.add_argument("--matchers", default="flann", help="matchers, comma-separated (flann, bf)")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--queries", type=int, default=100, help="number of queries (first by ID)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-warm", action="store_true", help="skip the second (warm cache) run")
    parser.add_argument("--cache", type=Path, default=None,
                        help="descriptor cache folder kept between invocations (default: a fresh temporary one)")
    args = parser.parse_args()

    if args.db_manifest and args.query_manifest and args.gt:
        db_manifest, query_manifest, gt_path = args.db_manifest, args.query_manifest, args.gt
    else:
        db_manifest, query_manifest, gt_path = demo_manifests(args.data, args.workers)
    gt = read_ground_truth(gt_path)
    db_ids = read_manifest(db_manifest).ids
    query_ids = sorted(set(read_manifest(query_manifest).ids) & set(gt))[: args.queries]
    gt = {q: gt[q] for q in query_ids}

    with tempfile.TemporaryDirectory(prefix="bpcr_rerank_cost_") as tmp:
        tmp_path = Path(tmp)
        if args.run:
            source = load_run(args.run)
            ranking = {q: source.ranking[q][: args.top] for q in query_ids if q in source.ranking}
            scores = {q: source.scores[q][: args.top] for q in ranking} if source.scores else None
        else:
            ranking, scores = random_shortlists(db_ids, gt, query_ids, args.top, args.seed)
        write_run(tmp_path, "input", ranking, scores or {q: [-float(r) for r in range(len(v))] for q, v in ranking.items()},
                  {"run": "input"}, depth=args.top)
        before = load_run(tmp_path / "input.trec")
        map_before = map_at_k(before.top(7), gt)
        p1_before = float(np.mean([precision_at_1(before.ranking[q], gt[q]) for q in query_ids]))
        pairs = sum(min(len(v), args.top) for v in ranking.values())
        print(f"{len(query_ids)} queries x top {args.top} ({pairs} pairs), {len(db_ids)} database images, "
              f"max side {args.max_side} px, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}); "
              f"input mAP@7 {map_before:.4f}, P@1 {p1_before:.4f}")
        print("desc/match/cold/warm s: wall seconds (desc and match: the cold run's two phases); "
              "cpu s: CPU seconds of all processes in the cold / warm run")
        header = (f"{'cap':>6} {'scorer':>8} {'matcher':>7} {'db imgs':>7} {'desc s':>7} {'match s':>8} {'cold s':>7} "
                  f"{'cpu s':>7} {'warm s':>7} {'cpu s':>7} {'mAP@7':>7} {'P@1':>6}")
        print(header)
        print("-" * len(header))
        for cap in [int(c) for c in args.caps.split(",")]:
            cache = args.cache or tmp_path / "cache"  # the cache key holds the cap
            for scorer in args.scorers.split(","):
                for matcher in args.matchers.split(","):
                    name = f"sift-{cap}-{scorer}-{matcher}"
                    started, cpu = time.perf_counter(), cpu_seconds()
                    result = rerank(tmp_path / "input.trec", db_manifest, query_manifest, name, tmp_path, top=args.top,
                                  scorer=scorer, max_keypoints=cap, max_side=args.max_side, matcher=matcher,
                                  workers=args.workers, cache_dir=cache)
                    cold, cpu = time.perf_counter() - started, cpu_seconds() - cpu
                    prov = result.provenance
                    warm = warm_cpu = float("nan")
                    if not args.no_warm:
                        started, warm_cpu = time.perf_counter(), cpu_seconds()
                        rerank(tmp_path / "input.trec", db_manifest, query_manifest, name + "-warm", tmp_path,
                               top=args.top, scorer=scorer, max_keypoints=cap, max_side=args.max_side,
                               matcher=matcher, workers=args.workers, cache_dir=cache)
                        warm, warm_cpu = time.perf_counter() - started, cpu_seconds() - warm_cpu
                    after = load_run(result.written[".trec"])
                    map_after = map_at_k(after.top(7), gt)
                    p1 = float(np.mean([precision_at_1(after.ranking[q], gt[q]) for q in query_ids]))
                    sec = prov["seconds"]
                    computed = prov["sift_cache"]["computed"]
                    print(f"{cap:>6} {scorer:>8} {matcher:>7} {computed:>7} {sec['descriptors']:>7.1f} "
                          f"{sec['matching']:>8.1f} {cold:>7.1f} {cpu:>7.1f} {warm:>7.1f} {warm_cpu:>7.1f} "
                          f"{map_after:>7.4f} {p1:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
