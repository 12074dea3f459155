"""Scale rehearsal: the demo's stages on a generated catalogue of N database images and 1,000 queries, each
stage timed in its own process, side by side with the same stage at N/10, so a stage that grows faster than N
stands out; each stage's cost extrapolated to Perfect-500K (500K) and to 5M images.

The catalogue (``scale_catalogue.py``): shop JPEGs at real sizes (800-1600 px, quality ~90, ~80 KB), products
of 1-6 images in families of look-alike shades, descriptions from a brand/product vocabulary, 1,000 query
photos per size (perturbed, cluttered photos of catalogue products) and their ground truth; deterministic from
``--seed``, rendered in parallel once and cached under ``--scratch`` (the catalogue of N is the first N images
of any larger one, so the 100K catalogue reuses the 10K one's images).

The stages, as ``configs/demo.toml`` chains them, each one ``python -m bpcr COMMAND ...`` process:
prepare (and prepare again: the cached re-check every ``bpcr run`` starts with), extract (EfficientNet-Lite0
at 224 px, GeM and GRMAC from one forward pass) of the database and of the queries, an IVF and a flat index of
each pooling, searches (IVF per pooling, the product fusion of both poolings on IVF and on flat), the textual
index, refinement (paper 001's text search, k-reciprocal, duplicate groups), SIFT re-ranking (RANSAC inliers)
of the top 100 of the first 100 queries, an RRF ensemble, score and report. The work folder is laid out as
``bpcr run``'s (``prepared/``, ``features/``, ``indexes/``, ``submissions/``, ...).

Why not ``bpcr run CONFIG``: (1) it runs every stage in one process, so per-stage CPU and peak memory cannot
be told apart (it has no stage selection); (2) a config has one ``[index]`` table, so an IVF and a flat index
of one store cannot both be in it; (3) ``rerank`` re-ranks every query of its input run and has no query
subset, so "SIFT on 100 of 1,000 queries" needs a run cut to 100 queries. The commands call the same stage
functions a config does (STYLE.md: the CLI and the config reach the same code).

Each step's figures (``process_meter.py`` says how each is measured and its limits): wall seconds, CPU
seconds (user + system over the process tree), peak memory (the larger of ru_maxrss and the polled PSS sum
of the tree), disk written (bytes of files created or changed in the work folder), and the bytes of its
inputs. ``--images N`` runs N/100 (when at least 100), N/10 and N, in that order, in one invocation, and
prints each size's figures, then N against N/10: the ratio of each figure; k, the exponent of N the time
grows with: log(ratio) / log(10), or with three sizes from the *increments*
log((t(N) - t(N/10)) / (t(N/10) - t(N/100))) / log(10), which removes the fixed start-up (imports, model
loading) that otherwise makes every stage look sub-linear at small N; dPeak/dIn, the growth of peak memory
over the growth of the step's input bytes (above 1: the step holds more than it reads); and a ``!`` where k
CPU exceeds the exponent N log N shows over the same sizes or dPeak/dIn exceeds 1. Last, an extrapolation to
500K and 5M images (printed as such): each figure by the power law fitted to it, anchored at N.

Resumable and bounded: each step's figures are kept in ``WORK/steps.json``; a rerun reuses the catalogue and
every step whose command and outputs are unchanged (its figures are reprinted, marked ``=``), and re-runs the
rest. ``--budget-hours`` stops before a step once the invocation has run that long (rerun to continue);
the free disk space is checked before images are rendered. ``--fresh`` starts over (catalogue included);
``--fresh-stages`` keeps the catalogue.

    .venv/bin/python benchmarks/scale_rehearsal.py --images 1000 --scratch /tmp/bpcr-scale   # ~10 min on 2 cores
    .venv/bin/python benchmarks/scale_rehearsal.py --images 100000 --scratch /data/bpcr-scale --budget-hours 8 \
        --json /data/rehearsal-100000.json
    .venv/bin/python benchmarks/scale_rehearsal.py --smoke --scratch /tmp/bpcr-scale-smoke   # the plumbing, ~1 min
    .venv/bin/python benchmarks/scale_rehearsal.py --show /data/rehearsal-100000.json       # reprint saved tables
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from process_meter import measure, tree_bytes  # a script's own folder is first on sys.path
from scale_catalogue import Catalogue, make_catalogue

ROOT = Path(__file__).resolve().parents[1]
MIB = float(1 << 20)
MIN_IMAGES = 100  # a smaller comparison size is left out (IVF lists, k-NN graphs: too few rows to mean much)
BYTES_PER_IMAGE = 100_000  # disk check: ~80 KB a JPEG, plus the work folder's stores, indexes and caches
TARGETS = (500_000, 5_000_000)
NOISE_BYTES = 32 << 20  # memory changes below this are noise (allocator, caches), not growth
FLAG_CPU_SECONDS = 10.0  # below this CPU time start-up dominates and k says nothing of the stage's work


@dataclass
class Step:
    """One stage command: its row label, ``bpcr`` arguments, what it reads and writes (paths)."""

    name: str
    argv: list[str]
    reads: list[Path]
    writes: list[Path]
    setup: Callable[[], None] | None = None  # unmeasured preparation in this process (the SIFT query subset)


def _runs(work: Path, *names: str) -> list[Path]:
    return [work / "submissions" / f"{n}.trec" for n in names]


def steps(work: Path, cat: Catalogue, sift_queries: int) -> list[Step]:
    """The demo's stages for one catalogue, in pipeline order, as ``bpcr run`` lays out its work folder."""
    prepared, feats, idx, runs = work / "prepared", work / "features" / "lite0", work / "indexes", work / "submissions"
    db_manifest, q_manifest = prepared / "database.csv", prepared / "queries.csv"
    extract = ["extract", "--backbone", "tf_efficientnet_lite0", "--size", "224", "--pooling", "gem,grmac"]
    prepare = ["prepare", "--db", str(cat.database), "--descriptions", str(cat.descriptions), "--queries",
               str(cat.queries), "--gt", str(cat.ground_truth), "--out", str(prepared)]
    out: list[Step] = [
        Step("prepare", prepare, [cat.database, cat.queries, cat.descriptions], [prepared / "summary.json"]),
        Step("prepare again (cached)", prepare,
             [cat.database, cat.queries, cat.descriptions], [prepared / "summary.json"]),
        Step("extract database", extract + [str(db_manifest), "--out", str(feats / "database")], [cat.database],
             [feats / "database" / p / "meta.json" for p in ("gem", "grmac")]),
        Step("extract queries", extract + [str(q_manifest), "--out", str(feats / "queries")], [cat.queries],
             [feats / "queries" / p / "meta.json" for p in ("gem", "grmac")]),
    ]
    for kind in ("ivf", "flat"):
        for pooling in ("gem", "grmac"):
            store, index = feats / "database" / pooling, idx / f"lite0-{pooling}-{kind}"
            out.append(Step(f"index {kind} {pooling}", ["index", str(store), "--kind", kind, "--out", str(index)],
                            [store], [index / "index.json"]))

    def search(name: str, kind: str, poolings: tuple[str, ...]) -> Step:
        argv = ["search", "--name", name, "--out", str(runs)]
        for p in poolings:
            argv += ["--index", str(idx / f"lite0-{p}-{kind}"), "--queries", str(feats / "queries" / p)]
        if len(poolings) > 1:
            argv += ["--fusion", "product"]
        reads = [idx / f"lite0-{p}-{kind}" for p in poolings] + [feats / "database" / p for p in poolings]
        return Step(f"search {name}", argv, reads, _runs(work, name))

    out += [search("ivf-gem", "ivf", ("gem",)), search("ivf-grmac", "ivf", ("grmac",)),
            search("fused", "ivf", ("gem", "grmac")), search("fused-flat", "flat", ("gem", "grmac"))]
    text = work / "text-index"
    # --force: a rerun after an earlier step changed measures the build, not the reuse of the kept index.
    out.append(Step("text index", ["text-index", str(db_manifest), "--out", str(text), "--force"], [db_manifest],
                    [text / "meta.json"]))
    fused, graphs = str(runs / "fused.trec"), str(work / "graphs")
    refine = ["refine", fused, "--out", str(runs), "--graph-dir", graphs]
    stores = [feats / "database" / p for p in ("gem", "grmac")]
    out += [
        Step("refine text", refine + ["--text-index", str(text), "--k-keep", "3", "--name", "fused-refined"],
             [text, *_runs(work, "fused"), *stores], _runs(work, "fused-refined")),
        Step("refine kreciprocal", refine + ["--method", "kreciprocal", "--name", "fused-kreciprocal"],
             [*_runs(work, "fused"), *stores], _runs(work, "fused-kreciprocal")),
        Step("refine dupgroup", refine + ["--method", "dupgroup", "--text-index", str(text), "--name", "fused-dupgroup"],
             [text, *_runs(work, "fused"), *stores], _runs(work, "fused-dupgroup")),
    ]
    subset = work / "subsets" / f"fused-q{sift_queries}"
    out.append(Step(f"rerank sift ({sift_queries} queries)",
                    ["rerank", f"{subset}.trec", "--db-manifest", str(db_manifest), "--query-manifest", str(q_manifest),
                     "--top", "100", "--scorer", "inliers", "--cache-dir", str(work / "sift-cache"),
                     "--name", "fused-sift", "--out", str(runs)],
                    [Path(f"{subset}.trec")], _runs(work, "fused-sift"),
                    setup=lambda: first_queries(runs / "fused", subset, sift_queries)))
    out += [
        Step("ensemble rrf", ["ensemble", *map(str, _runs(work, "fused", "fused-refined", "fused-sift")), "--method", "rrf",
                              "--name", "ensemble-rrf", "--out", str(runs)],
             _runs(work, "fused", "fused-refined", "fused-sift"), _runs(work, "ensemble-rrf")),
        Step("score", ["score", str(runs), "--gt", str(cat.ground_truth), "--json", str(work / "scores.json"),
                       "--leaderboard", str(work / "leaderboard.md")], [runs], [work / "scores.json"]),
        Step("report", ["report", *map(str, _runs(work, "ensemble-rrf", "fused", "fused-refined")), "--gt",
                        str(cat.ground_truth), "--manifest-db", str(db_manifest), "--out", str(work / "report"),
                        "--limit", "50"], _runs(work, "ensemble-rrf"), [work / "report" / "index.html"]),
    ]
    return out


def first_queries(run: Path, out: Path, n: int) -> None:
    """``out.csv`` and ``out.trec``: the run cut to its first ``n`` queries by ID (rerank has no query subset)."""
    keep = sorted({line.split(",", 1)[0] for line in run.with_suffix(".csv").read_text().splitlines() if line})[:n]
    wanted = set(keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, sep in ((".csv", ","), (".trec", None)):
        lines = [line for line in run.with_suffix(suffix).read_text().splitlines()
                 if line and line.split(sep, 1)[0] in wanted]
        out.with_suffix(suffix).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ running one size


def run_size(n: int, args: argparse.Namespace, started: float) -> tuple[dict[str, dict], Catalogue]:
    """Every step at catalogue size ``n``; returns each step's figures (reused ones marked ``cached``)."""
    cat = make_catalogue(args.scratch / "catalogue", n, seed=args.seed, workers=args.workers,
                         n_queries=args.queries, log=lambda s: print(f"  {s}", flush=True))
    for name, (count, seconds) in cat.rendered.items():
        if count:
            print(f"  catalogue N={n:,}: rendered {count:,} {name} images in {seconds:.1f} s "
                  f"({count / seconds:.1f} images/s)", flush=True)
    print(f"  catalogue N={n:,}: database {cat.bytes_db / MIB:.0f} MiB ({cat.bytes_db / max(n, 1) / 1024:.0f} KiB an "
          f"image), queries {cat.bytes_queries / MIB:.0f} MiB", flush=True)
    work = args.scratch / "work" / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    record_path = work / "steps.json"
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    results: dict[str, dict] = {}
    dirty = False  # once a step runs again, every later one does (it reads what that step wrote)
    for step in steps(work, cat, args.sift_queries):
        argv = [sys.executable, "-m", "bpcr", *step.argv]
        old = records.get(step.name)
        if not dirty and old and old["argv"] == argv and all(p.exists() for p in step.writes):
            results[step.name] = dict(old["result"], cached=True)
            continue
        if args.budget_hours and time.perf_counter() - started > args.budget_hours * 3600:
            raise SystemExit(f"stopped before {step.name!r} at N={n:,}: --budget-hours {args.budget_hours} spent; "
                             f"rerun the same command to continue")
        dirty = True
        if step.setup:
            step.setup()
        print(f"  [{n:,}] {step.name}: bpcr {' '.join(step.argv[:1])} ...", end="", flush=True)
        log = work / "logs" / f"{step.name.replace(' ', '_').replace('(', '').replace(')', '')}.log"
        m = measure(argv, work, log, env=env, cwd=work)
        if m.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise SystemExit(f"\n{step.name} failed (exit {m.returncode}); {log}:\n" + "\n".join(tail))
        result = dict(m.to_json(), input_bytes=tree_bytes(step.reads))
        print(f" {m.wall:.1f} s wall, {m.cpu:.1f} s CPU, {m.peak_bytes / MIB:.0f} MiB peak", flush=True)
        records[step.name] = {"argv": argv, "result": result}
        record_path.write_text(json.dumps(records, indent=1, sort_keys=True))
        results[step.name] = dict(result, cached=False)
    return results, cat


# ------------------------------------------------------------------ the table


def exponent(values: list[float], sizes: list[int], noise: float = 0.0) -> tuple[float | None, str]:
    """How a figure grows with N, from its values at ``sizes`` (ascending): with three sizes in equal ratios, from
    its increments (a fixed start-up removed) when both exceed ``noise``; else from the ratio of the last two."""
    if len(values) >= 3 and sizes[-1] * sizes[-3] == sizes[-2] ** 2:
        d1, d2 = values[-2] - values[-3], values[-1] - values[-2]
        if d1 > noise and d2 > noise:
            return math.log(d2 / d1) / math.log(sizes[-1] / sizes[-2]), "incr"
    if len(values) >= 2 and values[-2] > 0 and values[-1] > 0:
        return math.log(values[-1] / values[-2]) / math.log(sizes[-1] / sizes[-2]), "ratio"
    return None, ""


def extrapolate(values: list[float], sizes: list[int], target: int, noise: float) -> tuple[float | None, bool]:
    """The figure at ``target`` by the power law through its last increment, anchored at the largest size:
    v(N) + (v(N) - v(N/10)) (target^k - N^k) / (N^k - (N/10)^k), k from :func:`exponent`. Returns the value and
    whether it grew: a change up to ``noise`` is read as none and v(N) kept."""
    if len(values) < 2:
        return None, False
    if values[-1] - values[-2] <= noise:
        return values[-1], False
    k, _ = exponent(values, sizes, noise)
    n1, n2 = sizes[-2], sizes[-1]
    if k is None:
        return None, False
    growth = math.log(target / n2) / math.log(n2 / n1) if abs(k) < 1e-6 else \
        (target ** k - n2 ** k) / (n2 ** k - n1 ** k)
    return values[-1] + (values[-1] - values[-2]) * growth, True


# What a change between two sizes must exceed to count as growth (wall: of the smaller size's time).
def _noise(key: str, series: list[dict]) -> float:
    if key == "wall":
        return 0.02 * series[-2]["wall"]
    if key == "peak_bytes":
        return max(NOISE_BYTES, 0.15 * series[-1]["peak_bytes"])  # allocators, decoded image sizes per batch
    return float(1 << 20)


def nlogn_exponent(n1: int, n2: int) -> float:
    return 1 + math.log(math.log(n2) / math.log(n1)) / math.log(n2 / n1)


def _fmt(x: float | None, width: int, digits: int = 1) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _gib(value: tuple[float | None, bool]) -> str:
    x, grew = value
    return "-" if x is None else f"{'' if grew else '~'}{x / (1 << 30):.1f} GiB"


def table(all_results: dict[int, dict[str, dict]]) -> str:
    """The figures of every size, then the largest N against the next and the extrapolation to ``TARGETS``."""
    sizes = sorted(all_results)
    n = sizes[-1]
    names = list(all_results[n])
    lines = []
    for size in sizes:
        rows = all_results[size]
        lines += [f"\nN = {size:,} database images" + ("" if size == n else " (comparison size)"),
                  f"{'stage':34}{'wall s':>9}{'CPU s':>9}{'peak MiB':>10}{'disk MiB':>10}{'input MiB':>11}"]
        for name in names:
            r = rows[name]
            lines.append(f"{name:34}{r['wall']:9.1f}{r['cpu']:9.1f}{r['peak_bytes'] / MIB:10.0f}"
                         f"{r['disk_bytes'] / MIB:10.1f}{r['input_bytes'] / MIB:11.1f}{'  =' if r.get('cached') else ''}")
        lines.append(f"{'total':34}{sum(r['wall'] for r in rows.values()):9.1f}{sum(r['cpu'] for r in rows.values()):9.1f}"
                     f"{max(r['peak_bytes'] for r in rows.values()) / MIB:10.0f}"
                     f"{sum(r['disk_bytes'] for r in rows.values()) / MIB:10.1f}")
    if len(sizes) < 2:
        return "\n".join(lines)
    small = sizes[-2]
    limit = nlogn_exponent(small, n)
    lines += [(f"\nN = {n:,} against N = {small:,} (x{n / small:g}). k: the exponent of N the time grows with, "
               f"from the increments over three sizes (incr) or the last ratio; N log N shows k = {limit:.2f} here. "
               f"dPeak/dIn: peak memory's growth over the input's. ! marks a k CPU above N log N's (stages of "
               f"{FLAG_CPU_SECONDS:g} CPU s or more) or a dPeak/dIn above 1 (inputs growing {NOISE_BYTES >> 20} MiB "
               f"or more)"),
              f"{'stage':34}{'wall x':>8}{'CPU x':>8}{'peak x':>8}{'disk x':>8}{'k wall':>8}{'k CPU':>8}{'dPeak/dIn':>11}"]
    for name in names:
        series = [all_results[s][name] for s in sizes]
        a, b = series[-2], series[-1]
        kw, how = exponent([r["wall"] for r in series], sizes, _noise("wall", series))
        kc, _ = exponent([r["cpu"] for r in series], sizes, 0.02 * a["cpu"])
        din = b["input_bytes"] - a["input_bytes"]
        dpeak = (b["peak_bytes"] - a["peak_bytes"]) / din if din >= NOISE_BYTES else None
        flag = "!" if (kc is not None and kc > limit + 0.1 and b["cpu"] >= FLAG_CPU_SECONDS) or \
            (dpeak is not None and dpeak > 1) else ""
        ratios = "".join(_fmt(b[key] / a[key] if a[key] > 0 else None, 8, 2)
                         for key in ("wall", "cpu", "peak_bytes", "disk_bytes"))
        lines.append(f"{name:34}{ratios}{_fmt(kw, 8, 2)}{_fmt(kc, 8, 2)}{_fmt(dpeak, 11, 2)} "
                     f"{'(incr)' if how == 'incr' else ''}{flag}")
    lines += [(f"\nExtrapolation from N = {', '.join(f'{s:,}' for s in sizes)}, not a measurement: each figure by "
               f"the power law fitted to it per stage (as k above), anchored at N = {n:,}; ~: it did not grow beyond "
               f"noise (wall 2%, peak max({NOISE_BYTES >> 20} MiB, 15%), disk 1 MiB) and is kept"),
              f"{'stage':34}" + "".join(f"{f'wall {t // 1000:,}K':>12}" for t in TARGETS) +
              "".join(f"{f'peak {t // 1000:,}K':>13}" for t in TARGETS) + "".join(f"{f'disk {t // 1000:,}K':>13}" for t in TARGETS)]
    totals = [0.0] * len(TARGETS)
    for name in names:
        series = [all_results[s][name] for s in sizes]
        figures = {key: [extrapolate([r[key] for r in series], sizes, t, _noise(key, series)) for t in TARGETS]
                   for key in ("wall", "peak_bytes", "disk_bytes")}
        totals = [total + (w or 0) for total, (w, _) in zip(totals, figures["wall"])]
        lines.append(f"{name:34}" + "".join(f"{_duration(w):>12}" for w, _ in figures["wall"]) +
                     "".join(f"{_gib(p):>13}" for p in figures["peak_bytes"]) +
                     "".join(f"{_gib(d):>13}" for d in figures["disk_bytes"]))
    lines.append(f"{'total':34}" + "".join(f"{_duration(t):>12}" for t in totals))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="N, database images of the largest run")
    parser.add_argument("--queries", type=int, default=1000, help="query photos per size")
    parser.add_argument("--sift-queries", type=int, default=100, help="queries whose top 100 SIFT re-ranks")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bpcr-scale-rehearsal"),
                        help="catalogue and work folders (kept: a rerun reuses them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: one per core)")
    parser.add_argument("--budget-hours", type=float, default=None, help="stop before a step after this long")
    parser.add_argument("--fresh", action="store_true", help="start over: catalogue and every stage")
    parser.add_argument("--fresh-stages", action="store_true", help="run every stage again, keep the catalogue")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--show", type=Path, default=None, help="print the tables of a --json file; run nothing")
    parser.add_argument("--smoke", action="store_true", help="every stage once on 40 images, 30 queries, SIFT on 10")
    args = parser.parse_args()
    if args.show:
        saved = json.loads(args.show.read_text())
        print(table({int(size): rows for size, rows in saved["results"].items()}))
        return
    if args.smoke:
        args.images, args.queries, args.sift_queries = 40, 30, 10
        sizes = [40]
    else:
        sizes = [s for s in (args.images // 100, args.images // 10) if s >= MIN_IMAGES] + [args.images]
    started = time.perf_counter()
    if args.fresh and args.scratch.exists():
        shutil.rmtree(args.scratch)
    if args.fresh_stages and (args.scratch / "work").exists():
        shutil.rmtree(args.scratch / "work")
    args.scratch.mkdir(parents=True, exist_ok=True)
    pool = args.scratch / "catalogue" / "pool"
    have = len(os.listdir(pool)) if pool.is_dir() else 0
    need = max(0, args.images - have) * BYTES_PER_IMAGE + sum(sizes) * BYTES_PER_IMAGE // 2
    free = shutil.disk_usage(args.scratch).free
    if need > free - (2 << 30):
        raise SystemExit(f"{args.scratch}: about {need / (1 << 30):.1f} GiB needed, {free / (1 << 30):.1f} GiB free")
    print(f"scale rehearsal: N = {', '.join(f'{s:,}' for s in sizes)} database images, {args.queries:,} queries, "
          f"SIFT on {args.sift_queries}; {len(os.sched_getaffinity(0))} cores, load average "
          f"{os.getloadavg()[0]:.1f}; scratch {args.scratch}", flush=True)
    all_results, rates = {}, {"database": [0, 0.0], "query": [0, 0.0]}
    for size in sizes:
        all_results[size], cat = run_size(size, args, started)
        for name, (count, seconds) in cat.rendered.items():
            rates[name][0] += count
            rates[name][1] += seconds
    print(table(all_results))
    for name, (count, seconds) in rates.items():
        if count:
            print(f"catalogue: {count:,} {name} images rendered in this run, {count / seconds:.1f} images/s "
                  f"({len(os.sched_getaffinity(0))} cores)")
    print(f"load average now {os.getloadavg()[0]:.1f}; whole rehearsal {time.perf_counter() - started:.0f} s")
    if args.json:  # stages in pipeline order, as printed
        args.json.write_text(json.dumps({"sizes": sizes, "queries": args.queries, "sift_queries": args.sift_queries,
                                         "cores": len(os.sched_getaffinity(0)), "load_average_end": os.getloadavg(),
                                         "rendered": rates, "results": {str(s): r for s, r in all_results.items()}},
                                        indent=1))


if __name__ == "__main__":
    main()
