"""Scoring at scale: ``bpcr.evaluation.score.score_runs`` with the resampling of ``bpcr.evaluation.stats``
against the resampling it replaced, side by side in one run.

Two shapes, 10,000 resamples each:

1. many runs: 200 runs x 100 queries, scored alone and against a baseline run
   (199 paired randomisation tests, Holm-corrected);
2. many queries: 1 run x 100,000 queries (three bootstrap intervals: all
   queries and each half, 2 x 10^9 resampled values).

Each scoring runs in a fresh subprocess, so its peak resident memory is its
own; the "old" subprocess swaps the two functions below (the implementation
that drew 1,000 resamples x all queries at once) into ``bpcr.evaluation.score``. Printed:
seconds for the whole ``score_runs`` call, seconds inside the resampling
functions, peak memory, the ratios old / new, and whether every interval and
p-value is identical (they must be: the same seeded draws, consumed in blocks).
Scoring uses no BLAS, but the machine's kernel is printed beside the ratios.

    nice -n 10 .venv/bin/python benchmarks/score_scale.py
    nice -n 10 .venv/bin/python benchmarks/score_scale.py --queries 20000   # quick look
    nice -n 10 .venv/bin/python benchmarks/score_scale.py --ranx            # + ranx's first call, for reference
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from common import blas_kernel, peak_rss_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = float(1 << 30)


# ---------------------------------------------------------------- the replaced implementation


def old_bootstrap_ci(values: Sequence[float], n_resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):
        stop = min(start + 1000, n_resamples)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def old_paired_randomisation_test(a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000,
                                  seed: int = 0) -> float:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired values")
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    count = 0
    tol = 1e-12 * max(1.0, observed)
    for start in range(0, n_resamples, 1000):
        stop = min(start + 1000, n_resamples)
        signs = rng.integers(0, 2, size=(stop - start, d.size)) * 2 - 1
        count += int(np.count_nonzero(np.abs((signs * d).mean(axis=1)) >= observed - tol))
    return (1 + count) / (1 + n_resamples)


# ---------------------------------------------------------------- data


def generate(folder: Path, n_runs: int, n_queries: int, seed: int) -> None:
    """A ground truth of ``n_queries`` queries (1-3 relevant of 20,000 products) and ``n_runs``
    submissions of 7 predictions whose hits vary by run."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    n_db = 20_000
    n_rel = rng.integers(1, 4, size=n_queries)
    relevant = [rng.choice(n_db, size=k, replace=False) for k in n_rel]
    queries = [f"q{i:06d}" for i in range(n_queries)]
    (folder / "gt.csv").write_text("Validation Image ID,Training Image ID\n" + "".join(
        f"{q},{','.join(f'p{r:05d}' for r in rel)}\n" for q, rel in zip(queries, relevant)), encoding="utf-8")
    runs = folder / "runs"
    runs.mkdir()
    for run in range(n_runs):
        skill = 0.2 + 0.6 * run / max(1, n_runs - 1)
        lines = []
        for q, rel in zip(queries, relevant):
            predicted = [int(p) for p in rng.choice(n_db, size=7, replace=False) if p not in rel][:7]
            for r in rel:
                if rng.random() < skill:
                    predicted.insert(int(rng.integers(0, 7)), int(r))
            seen: list[int] = []
            for p in predicted:
                if p not in seen:
                    seen.append(p)
            lines.append(f"{q},{','.join(f'p{p:05d}' for p in seen[:7])}\n")
        (runs / f"run{run:03d}.csv").write_text("".join(lines), encoding="utf-8")


# ---------------------------------------------------------------- children (one scoring each)


def child_score(folder: Path, impl: str, baseline: bool) -> dict:
    import bpcr.evaluation.score as score

    if impl == "old":
        score.bootstrap_ci = old_bootstrap_ci
        score.paired_randomisation_test = old_paired_randomisation_test
    inside = {"seconds": 0.0}

    def timed(f):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                inside["seconds"] += time.perf_counter() - t
        return wrapper

    score.bootstrap_ci = timed(score.bootstrap_ci)
    score.paired_randomisation_test = timed(score.paired_randomisation_test)
    runs = sorted((folder / "runs").glob("*.csv"))
    t0 = time.perf_counter()
    scores = score.score_runs(runs, folder / "gt.csv", baseline=runs[0] if baseline else None)
    seconds = time.perf_counter() - t0
    figures = sorted((s.name, s.ci95, [(h, v.ci95) for h, v in sorted(s.halves.items())],
                      s.comparison and (s.comparison.p_value, s.comparison.p_holm)) for s in scores)
    digest = hashlib.sha256(json.dumps(figures).encode()).hexdigest()[:16]
    return {"seconds": seconds, "stats_seconds": inside["seconds"], "digest": digest, "n_runs": len(scores)}


def child_ranx(folder: Path) -> dict:
    t0 = time.perf_counter()
    from ranx import Qrels, Run, compare

    from bpcr.dataset.gt import read_ground_truth
    from bpcr.io.runs import read_submission

    gt = read_ground_truth(folder / "gt.csv")
    qrels = Qrels({q: {d: 1 for d in rel} for q, rel in gt.items()})
    runs = []
    for path in sorted((folder / "runs").glob("*.csv"))[:2]:
        ranking = read_submission(path)
        runs.append(Run({q: {d: 7.0 - i for i, d in enumerate(ids)} for q, ids in ranking.items()}, name=path.stem))
    t1 = time.perf_counter()
    compare(qrels, runs, metrics=["map@7"], stat_test="fisher", n_permutations=10_000)
    t2 = time.perf_counter()
    compare(qrels, runs, metrics=["map@7"], stat_test="fisher", n_permutations=10_000)
    return {"import_seconds": t1 - t0, "first_seconds": t2 - t1, "second_seconds": time.perf_counter() - t2}




def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="Runs in the many-runs shape.")
    parser.add_argument("--run-queries", type=int, default=100, help="Queries in the many-runs shape.")
    parser.add_argument("--queries", type=int, default=100_000, help="Queries in the many-queries shape.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranx", action="store_true", help="Also time ranx's first compare() (numba compiles).")
    parser.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        role, folder, *rest = args.child
        if role == "score":
            result = child_score(Path(folder), rest[0], rest[1] == "baseline")
        else:
            result = child_ranx(Path(folder))
        result["peak_bytes"] = peak_rss_bytes()
        print(json.dumps(result))
        return

    np.asarray([1.0]) @ np.asarray([1.0])  # loads the BLAS, so that its kernel can be named
    kernel = blas_kernel()
    scratch = Path(tempfile.mkdtemp(prefix="bpcr-score-bench-"))
    try:
        many = scratch / "many"
        large = scratch / "large"
        t0 = time.perf_counter()
        generate(many, args.runs, args.run_queries, args.seed)
        generate(large, 1, args.queries, args.seed)
        print(f"generated {args.runs} runs x {args.run_queries} queries and 1 run x {args.queries} queries "
              f"in {time.perf_counter() - t0:.0f} s; 10,000 resamples; BLAS {kernel}")
        shapes = [(f"{args.runs} runs x {args.run_queries} queries", many, "alone"),
                  (f"{args.runs} runs x {args.run_queries} queries vs baseline", many, "baseline"),
                  (f"1 run x {args.queries:,} queries", large, "alone")]
        print(f"{'':44}{'impl':>5}{'seconds':>9}{'in stats':>10}{'peak GiB':>10}")
        for label, folder, mode in shapes:
            # new, old, new: the new one's figure is the better of two, taken on either side of the old
            results = {"new": [], "old": []}
            for impl in ("new", "old", "new"):
                results[impl].append(run_child("score", str(folder), impl, mode))
            new = min(results["new"], key=lambda r: r["seconds"])
            old = results["old"][0]
            for impl, r in (("old", old), ("new", new)):
                print(f"{label:44}{impl:>5}{r['seconds']:9.2f}{r['stats_seconds']:10.2f}{r['peak_bytes'] / GIB:10.3f}")
            same = all(r["digest"] == old["digest"] for r in results["new"])
            print(f"{'':44}old / new: time {old['seconds'] / new['seconds']:.2f}x (in stats "
                  f"{old['stats_seconds'] / max(new['stats_seconds'], 1e-9):.2f}x), peak memory "
                  f"{old['peak_bytes'] / new['peak_bytes']:.2f}x; identical intervals and p-values: "
                  f"{'yes' if same else 'NO'}; BLAS {kernel}")
        if args.ranx:
            r = run_child("ranx", str(many))
            print(f"ranx compare(), 2 runs x {args.run_queries} queries, fisher 10,000 permutations, for reference: "
                  f"import {r['import_seconds']:.1f} s, first call {r['first_seconds']:.1f} s, "
                  f"second {r['second_seconds']:.2f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
