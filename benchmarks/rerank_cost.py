"""Cost and accuracy of SIFT re-ranking (paper 000 §3.4.2), setting against setting, side by side.

Each setting re-ranks the top 100 of the same queries twice in a fresh
process: once with an empty descriptor cache (cold) and once more on the
cache it filled (warm), and prints both wall times, the CPU seconds of all
processes, the two phases of the cold run (describing the images, matching),
and mAP@7 on all queries and on the public / private halves of the split
(:mod:`bpcr.evaluation.split`; choose on the public half, report both). ``--baseline-src``
runs the settings written ``old:...`` with the kit in another checkout (e.g.
``git worktree add /tmp/bpcr-old HEAD~1``), so old and new code are timed in
the same run on the same busy machine; ``--repeat`` runs every setting again,
interleaved, and prints the fastest and slowest. Uses the demo dataset
(generated and prepared into ``--data`` when it is not there yet) or any
prepared manifests with ground truth. Without ``--run``, each query's input
shortlist is its relevant images at random places in the top 100 among random
other database images (seeded).

    .venv/bin/python benchmarks/rerank_cost.py                                   # demo data, flann vs bf
    .venv/bin/python benchmarks/rerank_cost.py --run submissions/fused-lite0-lite1-grmac.trec \\
        --db-manifest work/demo/prepared/database.csv --query-manifest work/demo/prepared/queries.csv \\
        --gt work/demo/prepared/ground_truth.csv --baseline-src /tmp/bpcr-old \\
        --settings "old:matcher=flann" "matcher=flann" "matcher=bf" "matcher=bf,root_sift=1"
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bpcr.dataset.gt import read_ground_truth  # noqa: E402
from bpcr.dataset.manifest import read_manifest  # noqa: E402
from bpcr.evaluation.metrics import map_at_k, precision_at_1  # noqa: E402
from bpcr.io.runs import load_run, write_run  # noqa: E402
from bpcr.evaluation.split import QuerySplit  # noqa: E402
from common import blas_kernel  # noqa: E402

# Runs one setting, cold then warm, in a fresh interpreter on the kit at sys.argv[1].
CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from bpcr.reranking.rerank import rerank
try:
    from bpcr.reranking.options import RerankOptions
except ImportError:  # a kit from before rerank's options were declared once: keyword arguments
    RerankOptions = None
args = json.loads(sys.argv[2])

def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

report = {}
for phase in ("cold", "warm")[: 1 if args["no_warm"] else 2]:
    wall, used = time.perf_counter(), cpu()
    given = (RerankOptions(**args["kwargs"]),) if RerankOptions else ()
    result = rerank(args["run"], args["db"], args["queries"], args["name"] + "-" + phase, args["out"], *given,
                    cache_dir=args["cache"], **({} if RerankOptions else args["kwargs"]))
    report[phase] = {"wall": time.perf_counter() - wall, "cpu": cpu() - used,
                     "seconds": result.provenance["seconds"], "sift_cache": result.provenance["sift_cache"],
                     "trec": str(result.written[".trec"])}
print(json.dumps(report))
"""


def demo_manifests(data: Path, workers: int | None) -> tuple[Path, Path, Path]:
    prepared = data / "prepared"
    if not (prepared / "database.csv").is_file():
        from bpcr.dataset.options import DemoOptions
        from bpcr.demo import prepare_demo

        print(f"generating the demo dataset into {data} ...", flush=True)
        prepare_demo(data, DemoOptions(seed=0, workers=workers))
    return prepared / "database.csv", prepared / "queries.csv", prepared / "ground_truth.csv"


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


def trec_rows(path: str) -> list[list[str]]:
    """A .trec's rows without the run-name column."""
    return [line.split()[:5] for line in Path(path).read_text().splitlines()]


def parse_setting(text: str) -> tuple[bool, dict]:
    """``[old:]key=value,...`` -> (runs on the baseline kit, rerank options: RerankOptions fields)."""
    old = text.startswith("old:")
    kwargs: dict = {}
    for item in filter(None, text.removeprefix("old:").split(",")):
        key, _, value = item.partition("=")
        if value in ("0", "1") and key in ("root_sift", "jpeg_draft"):
            kwargs[key] = value == "1"
        else:
            try:
                kwargs[key] = int(value)
            except ValueError:
                kwargs[key] = value
    return old, kwargs


def threads_info() -> str:
    blas = blas_kernel()
    import cv2

    return f"BLAS in this process: {blas}; OpenCV {cv2.__version__} (workers: 1 thread each)"


def matcher_kernels(run_path: Path, db_manifest: Path, query_manifest: Path, n_queries: int, top: int,
                    repeat: int = 3) -> None:
    """Time the matchers on the same descriptors, one thread each as in a worker: CPU ms per query of ``top``
    pairs (CPU time of this process, which a busy machine disturbs less than wall time)."""
    import time

    import cv2
    import torch
    from threadpoolctl import threadpool_limits

    from bpcr.reranking.sift import match, match_many, reproducible_opencv
    from bpcr.reranking.sift_cache import SiftOptions
    from bpcr.reranking.sift_tasks import image_keypoints

    def opencv_bf(query, db):  # the previous bf: OpenCV's BFMatcher, pair by pair
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(query.desc.astype(np.float32), db.desc.astype(np.float32), k=2)
        return [p for p in pairs if len(p) == 2 and p[1].distance > 0 and p[0].distance <= 0.8 * p[1].distance]

    run, db, queries = load_run(run_path), read_manifest(db_manifest), read_manifest(query_manifest)
    db_rows, q_rows = db.index(), queries.index()
    sift = SiftOptions(512, 250)
    chosen = [q for q in sorted(run.ranking) if q in q_rows][:n_queries]
    with reproducible_opencv():
        work = [(image_keypoints(str(queries.paths[q_rows[q]]), sift),
                 [image_keypoints(str(db.paths[db_rows[d]]), sift) for d in run.ranking[q][:top] if d in db_rows])
                for q in chosen]
    kernels = {
        "flann, pair by pair (OpenCV)": lambda q, ds: [match(q, d, matcher="flann") for d in ds],
        "bf, pair by pair (OpenCV BFMatcher)": lambda q, ds: [opencv_bf(q, d) for d in ds],
        "bf, batched (numpy)": lambda q, ds: match_many(q, ds, matcher="bf"),
        "bf, batched (torch, cpu)": lambda q, ds: match_many(q, ds, matcher="bf", device="cpu"),
    }
    best = {name: float("inf") for name in kernels}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1), reproducible_opencv():
            for _ in range(repeat):
                for name, kernel in kernels.items():
                    started = time.process_time()
                    for q, ds in work:
                        kernel(q, ds)
                    best[name] = min(best[name], (time.process_time() - started) / len(work))
    finally:
        torch.set_num_threads(threads)
    counts = {name: [len(m) for q, ds in work for m in kernel(q, ds)] for name, kernel in kernels.items()}
    pairs = sum(len(ds) for _, ds in work) / len(work)
    print(f"matchers on {len(work)} queries x {pairs:.0f} pairs, one thread, fastest of {repeat}:")
    flann = best["flann, pair by pair (OpenCV)"]
    for name, seconds in best.items():
        same = "same matches as numpy" if counts[name] == counts["bf, batched (numpy)"] else "other matches"
        print(f"  {name:<38} {1000 * seconds:>8.1f} CPU ms/query {1000 * seconds / pairs:>7.3f} ms/pair "
              f"{flann / seconds:>6.1f}x flann's speed  ({same})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bpcr_rerank_demo",
                        help="demo dataset folder (generated when missing)")
    parser.add_argument("--db-manifest", type=Path)
    parser.add_argument("--query-manifest", type=Path)
    parser.add_argument("--gt", type=Path)
    parser.add_argument("--run", type=Path, help="input run (default: random shortlists holding the relevant images)")
    parser.add_argument("--settings", nargs="+", default=["matcher=flann", "matcher=bf"],
                        help="rerank options (RerankOptions fields) per setting, e.g. matcher=bf,root_sift=1,max_side=320; "
                             "prefix old: to run it on --baseline-src")
    parser.add_argument("--baseline-src", type=Path, help="root of another checkout of the kit, for old: settings")
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--queries", type=int, default=100, help="number of queries (first by ID)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="run every setting this many times, interleaved")
    parser.add_argument("--no-warm", action="store_true", help="skip the second (warm cache) run")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the public/private split")
    parser.add_argument("--matcher-kernels", type=int, default=0, metavar="N",
                        help="also time the matchers in-process on the first N queries of --run (then stop)")
    args = parser.parse_args()

    if args.db_manifest and args.query_manifest and args.gt:
        db_manifest, query_manifest, gt_path = args.db_manifest, args.query_manifest, args.gt
    else:
        db_manifest, query_manifest, gt_path = demo_manifests(args.data, args.workers)
    if args.matcher_kernels:
        if not args.run:
            parser.error("--matcher-kernels needs --run")
        print(threads_info())
        matcher_kernels(args.run, db_manifest, query_manifest, args.matcher_kernels, args.top)
        return
    gt = read_ground_truth(gt_path)
    db_ids = read_manifest(db_manifest).ids
    query_ids = sorted(set(read_manifest(query_manifest).ids) & set(gt))[: args.queries]
    gt = {q: gt[q] for q in query_ids}
    split = QuerySplit(seed=args.split_seed)
    halves = {"all": query_ids, "public": split.half(query_ids, "public"), "private": split.half(query_ids, "private")}
    settings = [parse_setting(s) for s in args.settings]
    if any(old for old, _ in settings) and args.baseline_src is None:
        parser.error("old: settings need --baseline-src")

    def quality(run) -> str:
        maps = [map_at_k({q: run.ranking[q][:7] for q in ids}, {q: gt[q] for q in ids}) for ids in halves.values()]
        p1 = float(np.mean([precision_at_1(run.ranking[q], gt[q]) for q in query_ids]))
        return " ".join(f"{m:>7.4f}" for m in maps) + f" {p1:>6.3f}"

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
        pairs = sum(min(len(v), args.top) for v in ranking.values())
        print(f"{len(query_ids)} queries x top {args.top} ({pairs} pairs), {len(db_ids)} database images, "
              f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), workers {args.workers or os.cpu_count()}; "
              f"public/private queries {len(halves['public'])}/{len(halves['private'])} (split seed {args.split_seed})")
        print(threads_info())
        print("cold/warm s: wall seconds of a run with an empty / the filled descriptor cache (fresh process each); "
              "desc, match: the cold run's two phases; cpu: CPU seconds of all its processes")
        header = (f"{'setting':<34} {'imgs':>5} {'desc s':>7} {'match s':>7} {'cold s':>7} {'cpu':>6} "
                  f"{'warm s':>7} {'cpu':>6} {'mAP@7':>7} {'public':>7} {'private':>7} {'P@1':>6}")
        print(header)
        print(f"{'input run':<34} {'':>5} {'':>7} {'':>7} {'':>7} {'':>6} {'':>7} {'':>6} {quality(before)}")
        print("-" * len(header))
        for rep in range(args.repeat):
            for k, (old, kwargs) in enumerate(settings):
                label = ("old " if old else "") + (",".join(f"{a}={b}" for a, b in kwargs.items()) or "defaults")
                name = f"s{k}-r{rep}"
                child_args = {"run": str(tmp_path / "input.trec"), "db": str(db_manifest), "queries": str(query_manifest),
                              "name": name, "out": str(tmp_path), "cache": str(tmp_path / f"cache-{name}"),
                              "no_warm": args.no_warm,
                              "kwargs": {"top": args.top, "workers": args.workers, **kwargs}}
                src = args.baseline_src if old else ROOT
                done = subprocess.run([sys.executable, "-c", CHILD, str(Path(src).resolve()), json.dumps(child_args)],
                                      capture_output=True, text=True, cwd=str(src))
                if done.returncode != 0:
                    print(f"{label:<34} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                report = json.loads(done.stdout.strip().splitlines()[-1])
                cold, warm = report["cold"], report.get("warm", {"wall": float("nan"), "cpu": float("nan")})
                sec = cold["seconds"]
                print(f"{label:<34} {cold['sift_cache']['computed']:>5} {sec['descriptors']:>7.1f} "
                      f"{sec['matching']:>7.1f} {cold['wall']:>7.1f} {cold['cpu']:>6.1f} {warm['wall']:>7.1f} "
                      f"{warm['cpu']:>6.1f} {quality(load_run(cold['trec']))}", flush=True)
                if "trec" in warm:
                    same = trec_rows(cold["trec"]) == trec_rows(warm["trec"])
                    if not same:
                        print(f"{'':<34} warning: the warm run's .trec differs from the cold run's")


if __name__ == "__main__":
    main()
