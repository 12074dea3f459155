"""The ``rerank`` stage: SIFT re-ranking of each query's shortlist.

Paper 000 (``000_6803ae82f1e53bfd.txt``) §3.4.2: the top-N (N = 100) images of
a first-stage run are re-ranked by SIFT matching with the query (§3.1.1:
FLANN k-d forest, Lowe's ratio test 0.8, score = number of matches, ties broken
by the matches' distances). Kernels live in :mod:`bpcr.sift`; this module
chooses the shortlists, caches database descriptors, spreads queries over the
cores and writes the run.

Scores written to ``NAME.trec`` (higher = better; the order they give is the
re-ranked order):

- ``matches`` / ``inliers``: ``count + (1 - d/1024)/2`` where ``count`` is the
  number of ratio-test matches (or RANSAC homography inliers among them) and
  ``d`` their mean descriptor distance (:func:`bpcr.sift.local_score`). A
  shortlisted image with no match scores ``(N - r)/(2N)`` (``r`` = its 0-based
  input rank, ``N`` = shortlist length), so it stays below every matched
  image and keeps its input order.
- ``blend``: ``(1-λ)·v + λ·s``, where ``v`` is the input run's score and ``s``
  the ``matches`` or ``inliers`` score above, each min-max normalised to [0, 1]
  over the query's shortlist (a constant list normalises to 0). A run read
  without scores (CSV only) uses ``v = -rank``.
- Results below the shortlist keep the input order with scores ``-1, -2, ...``;
  a query that cannot be re-ranked (image unreadable or missing from the query
  manifest) keeps its whole input order with scores ``-rank``.

Reproducible: the same inputs give the same bytes in ``NAME.csv`` and
``NAME.trec`` with any number of workers, with a cold or a warm cache, and on
any x86-64 machine with the same OpenCV build (:mod:`bpcr.sift`: OpenCV on one
thread with its baseline code paths, canonical keypoint order, FLANN and
RANSAC reseeded with ``seed`` on every pair, exact distances summed exactly;
scores are sorted as written, ties by ID). With ``matcher="bf"`` the matches
do not even depend on the OpenCV build's random number generator.

Cached database descriptors (:mod:`bpcr.sift_cache`) are checked in this
process before any matching starts; an entry that is damaged or was made
from other image bytes is computed again and counted (``sift_cache`` in
``NAME.json``: ``computed``, ``reused``, ``recomputed_invalid``) with a warning.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from .errors import BadInput
from .fileio import sha256_file
from .ids import check_id
from .manifest import read_manifest
from .progress import Progress
from .progress import start as start_progress
from .ranges import check_range, check_seed
from .runs import Run, RunResult, check_run_output, load_run, order_by_score, provenance, run_files, write_run
from .sift import FLANN_CHECKS, FLANN_TREES, MATCHERS, SIFT_VERSION, local_score, reproducible_opencv
from .sift_cache import SiftOptions, cache_file, check_entry
from .sift_tasks import MatchOptions, extract_task, init_worker, match_task

# The keypoint cap was measured with benchmarks/rerank_cost.py on the demo data
# (30 queries x top 100, FLANN, "matches"): mAP@7 0.371 / 0.256 / 0.246 / 0.237
# at caps 250 / 500 / 1000 / 2000. Shop images there rarely give more than ~250
# keypoints at 512 px, so a larger cap mostly adds keypoints from the clutter of
# the query photo, which match distractors, and matching time grows with it.
DEFAULT_TOP = 100
DEFAULT_MAX_KEYPOINTS = 250
# Shop images are a few hundred pixels on a side; phone photos are shrunk to
# match their scale, and SIFT time grows with the pixel count (~30 ms a 512 px
# image on one core).
DEFAULT_MAX_SIDE = 512
DEFAULT_CACHE_DIR = Path("work") / "cache" / "sift"
MAX_WARNING_EXAMPLES = 20


@dataclass(frozen=True)
class Scorer:
    description: str
    local: str | None  # the SIFT score it ranks by; None: the one named by blend_of


SCORERS: dict[str, Scorer] = {
    "matches": Scorer("number of ratio-test SIFT matches, ties by mean match distance (paper 000 §3.1.1)", "matches"),
    "inliers": Scorer("RANSAC homography inliers among the ratio-test matches (spatial verification)", "inliers"),
    "blend": Scorer("(1-λ)·input score + λ·SIFT score, both min-max normalised per shortlist", None),
}
LOCAL_SCORERS = ("matches", "inliers")


# ---------------------------------------------------------------- scores and order


def sift_scores(counts: Sequence[int], mean_distances: Sequence[float]) -> list[float]:
    """Scores of one shortlist given in input order (module docstring).

    counts, mean_distances: one entry per shortlisted image. Matched images score
    :func:`bpcr.sift.local_score` (>= 1); unmatched ones ``(N - r)/(2N)`` in
    (0, 0.5], keeping their input order below every matched image.
    """
    n = len(counts)
    return [
        local_score(c, d) if c > 0 else 0.5 * (n - r) / n
        for r, (c, d) in enumerate(zip(counts, mean_distances))
    ]


def _minmax(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    span = x.max() - x.min() if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def blend_scores(visual: Sequence[float], local: Sequence[float], weight: float) -> list[float]:
    """``(1-λ)·minmax(visual) + λ·minmax(local)`` over one shortlist (λ = ``weight``)."""
    return list((1.0 - weight) * _minmax(visual) + weight * _minmax(local))


def finish_query(shortlist: Sequence[str], scores: Sequence[float], tail: Sequence[str]) -> tuple[list[str], list[float]]:
    """Sort the shortlist by score (as written, ties by ID), then the tail in input order at -1, -2, ..."""
    ids, sc = order_by_score(shortlist, scores)
    return ids + list(tail), sc + [-float(i) for i in range(1, len(tail) + 1)]


def _input_order(ids: Sequence[str]) -> tuple[list[str], list[float]]:
    return list(ids), [-float(r) for r in range(1, len(ids) + 1)]


def _final_order(run: Run, matched: dict[str, list[tuple[int, float]]], top: int, scorer: str,
                 blend_weight: float) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Every query's output list and written scores (module docstring)."""
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for query_id, ids in run.ranking.items():
        if query_id not in matched:
            ranking[query_id], scores[query_id] = _input_order(ids)
            continue
        shortlist, tail = ids[:top], ids[top:]
        pairs = matched[query_id]
        final = sift_scores([c for c, _ in pairs], [d for _, d in pairs])
        if SCORERS[scorer].local is None:
            visual = (run.scores[query_id][:top] if run.scores is not None
                      else [-float(r) for r in range(1, len(shortlist) + 1)])
            final = blend_scores(visual, final, blend_weight)
        ranking[query_id], scores[query_id] = finish_query(shortlist, final, tail)
    return ranking, scores


# ---------------------------------------------------------------- the stage


def _check_options(name: str, top: int, scorer: str, ratio: float, max_keypoints: int, max_side: int,
                   blend_weight: float, blend_of: str, matcher: str, ransac_threshold: float, seed: int = 0,
                   workers: int | None = None) -> None:
    check_id(name)
    if scorer not in SCORERS:
        raise BadInput(None, None, f"unknown scorer {scorer!r}; choose from {', '.join(SCORERS)}")
    if blend_of not in LOCAL_SCORERS:
        raise BadInput(None, None, f"unknown blend base {blend_of!r}; choose from {', '.join(LOCAL_SCORERS)}")
    if matcher not in MATCHERS:
        raise BadInput(None, None, f"unknown matcher {matcher!r}; choose from {', '.join(MATCHERS)}")
    if top < 1:
        raise BadInput(None, None, f"--top must be at least 1, got {top}")
    check_range("--ratio", ratio, 0, 1, low_open=True)
    if max_keypoints < 1:
        raise BadInput(None, None, f"--max-keypoints must be at least 1, got {max_keypoints}")
    if max_side < 32:
        raise BadInput(None, None, f"--max-side must be at least 32, got {max_side}")
    if not 0.0 <= blend_weight <= 1.0:
        raise BadInput(None, None, f"--blend-weight must be in [0, 1], got {blend_weight}")
    if not ransac_threshold > 0:
        raise BadInput(None, None, f"RANSAC threshold must be positive, got {ransac_threshold}")
    check_seed(seed)
    check_range("--workers", workers, 1, integer=True, optional=True)


def _remove_entry(target: Path) -> None:
    """Delete a cache entry that failed its check, whatever it is (a folder only inside the cache)."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)


def _pool_map(fn: Callable, tasks: list, pool, label: str, progress: Progress | None) -> Iterator:
    """Results of ``fn`` over ``tasks`` (completion order), reported to ``progress``.

    Without a pool each task runs here, with OpenCV set as in a worker (one
    thread, baseline code paths) and restored after it.
    """
    if not tasks:
        return
    with start_progress(progress, label, len(tasks)) as advance:
        if pool is None:
            for task in tasks:
                with reproducible_opencv():
                    result = fn(task)
                advance(1)
                yield result
        else:
            for result in pool.imap_unordered(fn, tasks, chunksize=1):
                advance(1)
                yield result


def rerank(
    run_path: str | Path,
    db_manifest: str | Path,
    query_manifest: str | Path,
    name: str,
    out: str | Path = "submissions",
    top: int = DEFAULT_TOP,
    scorer: str = "matches",
    ratio: float = 0.8,
    max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
    max_side: int = DEFAULT_MAX_SIDE,
    blend_weight: float = 0.5,
    blend_of: str = "matches",
    matcher: str = "flann",
    ransac_threshold: float = 5.0,
    seed: int = 0,
    workers: int | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    progress: Progress | None = None,
) -> RunResult:
    """Re-rank the top ``top`` of every query of a run by SIFT matching (paper 000 §3.4.2).

    Database descriptors are computed once per image (only for images in some
    shortlist) and cached under ``cache_dir`` as ``.npz`` (no pickle), keyed by
    image path, size, mtime and the SIFT options. Queries run in ``workers``
    processes (default: every core). Writes ``NAME.csv``, ``NAME.trec`` (as
    deep as the input run) and ``NAME.json`` into ``out``; returns what was
    written. Scores are described in the module docstring. ``progress``: see
    :mod:`bpcr.progress`.
    """
    check_run_output(out, name)  # before any work: the run's files are named after it
    _check_options(name, top, scorer, ratio, max_keypoints, max_side, blend_weight, blend_of, matcher, ransac_threshold,
                   seed=seed, workers=workers)
    started = time.perf_counter()
    files = run_files(run_path)
    run = load_run(run_path)
    out = Path(out)
    if any(f.resolve() == (out / f"{name}{suffix}").resolve() for suffix, f in files.items()):
        raise BadInput(run_path, None, f"output run {name!r} would overwrite the input run; choose another --name")
    db = read_manifest(db_manifest)
    queries = read_manifest(query_manifest)
    db_rows, query_rows = db.index(), queries.index()
    if not any(q in query_rows for q in run.ranking):
        raise BadInput(query_manifest, None, f"none of the {len(run.ranking)} queries of run {run.name!r} is in this manifest")
    shortlisted = sorted({d for ids in run.ranking.values() for d in ids[:top]})
    if not any(d in db_rows for d in shortlisted):
        raise BadInput(db_manifest, None, f"none of the images in run {run.name!r}'s shortlists is in this manifest")

    local = SCORERS[scorer].local or blend_of
    sift = SiftOptions(max_side=max_side, max_keypoints=max_keypoints)
    options = MatchOptions(ratio=ratio, matcher=matcher, geometry=local == "inliers",
                           ransac_threshold=ransac_threshold, seed=seed)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    cache_dir = Path(cache_dir)
    counts = {"query_unreadable": 0, "query_not_in_manifest": 0, "db_unreadable": 0, "db_not_in_manifest": 0,
              "sift_cache_invalid": 0}
    examples: list[str] = []

    def warn(kind: str, message: str) -> None:
        counts[kind] += 1
        if len(examples) < MAX_WARNING_EXAMPLES:
            examples.append(message)

    # Database descriptors: reuse the cache where an entry passes its check, compute the rest.
    t0 = time.perf_counter()
    target_of: dict[str, str | None] = {}
    to_compute: list[tuple[str, str, SiftOptions]] = []
    invalid: set[str] = set()
    reused = 0
    for db_id in shortlisted:
        if db_id not in db_rows:
            warn("db_not_in_manifest", f"database image {db_id} is not in {db_manifest}; scored as unmatched")
            target_of[db_id] = None
            continue
        path = db.paths[db_rows[db_id]]
        try:
            target = cache_file(cache_dir, path, sift)
        except OSError:
            warn("db_unreadable", f"database image {db_id}: file not found ({path}); scored as unmatched")
            target_of[db_id] = None
            continue
        target_of[db_id] = str(target)
        if os.path.lexists(target):
            try:
                why = check_entry(target, path, sift) if target.is_file() else "not a regular file"
            except OSError as exc:
                warn("db_unreadable", f"database image {db_id}: cannot read: {exc.strerror}; scored as unmatched")
                target_of[db_id] = None
                continue
            if why is None:
                reused += 1
                continue
            warn("sift_cache_invalid", f"SIFT cache entry of database image {db_id} ({target}): {why}; "
                                       "computed again")
            _remove_entry(target)
            invalid.add(str(target))
        to_compute.append((str(path), str(target), sift))
    id_of_target = {t: d for d, t in target_of.items() if t is not None}
    t_check = time.perf_counter() - t0

    context = multiprocessing.get_context("spawn")
    pool = context.Pool(workers, initializer=init_worker) if workers > 1 else None
    finished = False
    try:
        t0 = time.perf_counter()
        computed = recomputed = 0
        for target, reason in _pool_map(extract_task, to_compute, pool, "SIFT database", progress):
            if reason is None:
                if target in invalid:
                    recomputed += 1
                else:
                    computed += 1
            else:
                db_id = id_of_target[target]
                warn("db_unreadable", f"database image {db_id}: {reason}; scored as unmatched")
                target_of[db_id] = None
        t_descriptors = time.perf_counter() - t0

        t0 = time.perf_counter()
        tasks = []
        for query_id in sorted(run.ranking):
            if query_id not in query_rows:
                warn("query_not_in_manifest", f"query {query_id} is not in {query_manifest}; input order kept")
                continue
            shortlist = run.ranking[query_id][:top]
            tasks.append((query_id, str(queries.paths[query_rows[query_id]]),
                          [target_of[d] for d in shortlist], sift, options))
        matched: dict[str, list[tuple[int, float]]] = {}
        for query_id, reason, pairs, cache_failure in _pool_map(match_task, tasks, pool, "SIFT matching", progress):
            if cache_failure is not None:
                raise BadInput(cache_dir, None, f"a SIFT cache entry changed while re-ranking query {query_id} "
                                                f"({cache_failure}); run again")
            if reason is not None:
                warn("query_unreadable", f"query {query_id}: {reason}; input order kept")
            else:
                matched[query_id] = pairs
        t_matching = time.perf_counter() - t0
        finished = True
    finally:
        if pool is not None:
            if finished:
                pool.close()
            else:
                pool.terminate()
            pool.join()

    ranking, scores = _final_order(run, matched, top, scorer, blend_weight)

    params = {
        "top": top,
        "scorer": scorer,
        "blend_weight": blend_weight if scorer == "blend" else None,
        "blend_of": blend_of if scorer == "blend" else None,
        "ratio": ratio,
        "matcher": matcher,
        "flann": ({"algorithm": "kdtree", "trees": FLANN_TREES, "checks": FLANN_CHECKS, "k": 2}
                  if matcher == "flann" else None),
        "ransac_threshold": ransac_threshold if options.geometry else None,
        "seed": seed,
        "workers": workers,
        "cache_dir": str(cache_dir),
        **asdict(sift),
        "sift_version": SIFT_VERSION,
        "opencv": cv2.__version__,
        "input_scores": "trec" if run.scores is not None else "rank",
    }
    summary = f"SIFT rerank ({scorer}{'/' + blend_of if scorer == 'blend' else ''}) of top {top} of {run.name}"
    inputs = [*files.values(), Path(db_manifest), Path(query_manifest)]
    prov = provenance(name, "rerank", params, inputs,
                      {"cache_check": t_check, "descriptors": t_descriptors, "matching": t_matching,
                       "total": time.perf_counter() - started},
                      summary)
    prov["input_run"] = {"name": run.name,
                         "files": [{"path": str(f), "sha256": sha256_file(f)} for f in files.values()]}
    prov["sift_cache"] = {"computed": computed, "reused": reused, "recomputed_invalid": recomputed}
    prov["warnings"] = {**counts, "examples": examples}
    prov["queries"] = {"total": len(run.ranking), "reranked": len(matched)}
    depth = max(run.depth, 1)
    written = write_run(out, name, ranking, scores, prov, depth=depth)
    return RunResult(name, written, prov, warnings=examples)
