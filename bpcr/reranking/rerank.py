"""The ``rerank`` stage: SIFT re-ranking of each query's shortlist.

Paper 000 (``000_6803ae82f1e53bfd.txt``) §3.4.2: the top-N (N = 100) images of
a first-stage run are re-ranked by SIFT matching with the query (§3.1.1:
FLANN k-d forest, Lowe's ratio test 0.8, score = number of matches, ties broken
by the matches' distances). Kernels live in :mod:`bpcr.reranking.sift`; this module
chooses the shortlists, caches the descriptors of database and query images,
spreads the work over the cores and writes the run.

Where the time goes: describing an image (decoding, SIFT) costs ~25 ms of CPU
at the demo's ~400 px and is paid once per image and setting (the cache).
FLANN builds its forest for every pair; ``matcher="bf"`` scores a query
against its whole shortlist in one matrix product, and matched 9-15x faster
on the demo (benchmarks/rerank_cost.py). Phone photos are decoded in JPEG
draft mode near ``max_side`` (benchmarks/sift_fullsize.py).

Scores written to ``NAME.trec`` (higher = better; the order they give is the
re-ranked order):

- ``matches`` / ``inliers``: ``count + (1 - d/1024)/2`` where ``count`` is the
  number of ratio-test matches (or RANSAC homography inliers among them) and
  ``d`` their mean descriptor distance (:func:`bpcr.reranking.sift.local_score`). A
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
any x86-64 machine with the same OpenCV build (:mod:`bpcr.reranking.sift`: OpenCV on one
thread with its baseline code paths, canonical keypoint order, FLANN and
RANSAC reseeded with ``seed`` on every pair, exact distances summed exactly;
scores are sorted as written, ties by ID). With ``matcher="bf"`` the matches
do not even depend on the OpenCV build's random number generator.

Cached descriptors (:mod:`bpcr.reranking.sift_cache`) are checked and read in this
process before any matching starts; an entry that is damaged or was made
from other image bytes is computed again and counted (``sift_cache`` for
database images and ``sift_cache_queries`` for queries in ``NAME.json``:
``computed``, ``reused``, ``recomputed_invalid``) with a warning. What was
read or computed goes into one pack of flat files for the run
(:class:`bpcr.reranking.sift_tasks.Pack`), so workers never read an entry again, and
a changed entry cannot reach the matching unchecked.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2

from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file
from bpcr.io.ids import check_id
from bpcr.dataset.manifest import read_manifest
from bpcr.progress import Progress
from bpcr.progress import start as start_progress
from bpcr.ranges import check_range, check_seed
from bpcr.reranking.order import LOCAL_SCORERS, SCORERS, final_order
from bpcr.io.runs import RunResult, check_run_output, load_run, provenance, run_files, write_run
from bpcr.reranking.sift import FLANN_CHECKS, FLANN_TREES, MATCHERS, SIFT_VERSION, reproducible_opencv
from bpcr.reranking.sift_cache import BadEntry, SiftOptions, cache_file, read_entry
from bpcr.reranking.sift_tasks import MatchOptions, PackWriter, extract_task, init_worker, match_task

# The keypoint cap was chosen on the public half of the demo's queries (seed 0, 384 px, bf):
# `bpcr sweep configs/demo.toml --grid rerank.fused-sift.max_keypoints=250,500,1000 --run fused-sift`
# gave mAP@7 0.383 / 0.362 / 0.361 (the private half, reported only: 0.421 / 0.410 / 0.406). A larger
# cap mostly adds keypoints from the clutter of the query photo, which match distractors, and matching
# time grows with it.
DEFAULT_TOP = 100
DEFAULT_MAX_KEYPOINTS = 250
# Shop images are a few hundred pixels on a side; phone photos are shrunk to
# match their scale, and SIFT time grows with the pixel count. Measured with
# benchmarks/rerank_cost.py on demo seed 1 (200 queries x top 100 of the fused
# Lite0+Lite1 run, bf, "matches"), mAP@7 public / private half: 0.424 / 0.425
# at 512 px, 0.458 / 0.460 at 384, 0.449 / 0.476 at 320, 0.446 / 0.426 at 256;
# 384 scored best on the public half, and describes an image in ~0.7x the CPU
# time of 512.
DEFAULT_MAX_SIDE = 384
DEFAULT_CACHE_DIR = Path("work") / "cache" / "sift"
# Same demo and runs: FLANN 0.416 / 0.432, exact "bf" 0.424 / 0.425 (public /
# private), with matching ~15x faster (one product per query and shortlist);
# with RootSIFT, FLANN 0.494 / 0.493, bf 0.501 / 0.495.
DEFAULT_MATCHER = "bf"
MAX_WARNING_EXAMPLES = 20


# ---------------------------------------------------------------- the stage


@dataclass
class _Image:
    """An image the run describes: a shortlisted database image or a query."""

    kind: str  # "db" or "query"
    id: str
    path: Path | None  # None: a database image missing from the manifest
    also: list["_Image"] = field(default_factory=list)  # the same file under its other role

    @property
    def label(self) -> str:
        return f"{'database' if self.kind == 'db' else 'query'} image {self.id}"

    def unreadable(self, warn: Callable[[str, str], None], reason: str) -> None:
        if self.kind == "db":
            warn("db_unreadable", f"database image {self.id}: {reason}; scored as unmatched")
        else:
            warn("query_unreadable", f"query {self.id}: {reason}; input order kept")


def _match_device(device: str, matcher: str) -> str | None:
    """The torch device the exact matcher runs on, or None for numpy in the worker processes."""
    if device == "cpu":
        return None
    from bpcr.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cpu" or (device == "auto" and matcher != "bf"):
        return None
    if matcher != "bf":
        raise BadInput(None, None, f"--device {device} matches on a GPU with the exact matcher; add --matcher bf")
    return str(resolved)


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
    matcher: str = DEFAULT_MATCHER,
    root_sift: bool = False,
    jpeg_draft: bool = True,
    ransac_threshold: float = 5.0,
    seed: int = 0,
    workers: int | None = None,
    device: str = "cpu",
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    progress: Progress | None = None,
) -> RunResult:
    """Re-rank the top ``top`` of every query of a run by SIFT matching (paper 000 §3.4.2).

    Descriptors are computed once per image (database images in some
    shortlist, and the queries) and cached under ``cache_dir`` as ``.npz`` (no
    pickle), keyed by image path, size, mtime and the SIFT options.
    ``root_sift``: match RootSIFT descriptors (computed from the cached SIFT
    ones). ``jpeg_draft``: decode JPEGs at a reduced scale near ``max_side``
    (:mod:`bpcr.reranking.sift_tasks`). Images are described in ``workers`` processes
    (default: every core), and queries matched there too; ``device`` other than
    ``"cpu"`` (``"cuda"``, ``"cuda:N"``, ``"auto"``) matches with the exact
    matcher (``bf``) through torch on that device, in this process, with the same
    results. Writes ``NAME.csv``, ``NAME.trec`` (as deep as the input run) and
    ``NAME.json`` into ``out``; returns what was written. Scores are described
    in the module docstring. ``progress``: see :mod:`bpcr.progress`.
    """
    check_run_output(out, name)  # before any work: the run's files are named after it
    _check_options(name, top, scorer, ratio, max_keypoints, max_side, blend_weight, blend_of, matcher, ransac_threshold,
                   seed=seed, workers=workers)
    match_device = _match_device(device, matcher)
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
    sift = SiftOptions(max_side=max_side, max_keypoints=max_keypoints, jpeg_draft=jpeg_draft)
    options = MatchOptions(ratio=ratio, matcher=matcher, geometry=local == "inliers",
                           ransac_threshold=ransac_threshold, seed=seed, device=match_device)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    cache_dir = Path(cache_dir)
    counts = {"query_unreadable": 0, "query_not_in_manifest": 0, "db_unreadable": 0, "db_not_in_manifest": 0,
              "sift_cache_invalid": 0}
    examples: list[str] = []

    def warn(kind: str, message: str) -> None:
        counts[kind] += 1
        if len(examples) < MAX_WARNING_EXAMPLES:
            examples.append(message)

    query_ids = []
    for query_id in sorted(run.ranking):
        if query_id in query_rows:
            query_ids.append(query_id)
        else:
            warn("query_not_in_manifest", f"query {query_id} is not in {query_manifest}; input order kept")
    images = [_Image("db", d, db.paths[db_rows[d]] if d in db_rows else None) for d in shortlisted]
    images += [_Image("query", q, queries.paths[query_rows[q]]) for q in query_ids]

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pack-", dir=cache_dir) as scratch:
        # Descriptors: reuse the cache where an entry passes its check, compute the rest; all go to one pack.
        t0 = time.perf_counter()
        writer = PackWriter(Path(scratch), root_sift)
        span_of: dict[tuple[str, str], tuple[int, int] | None] = {}
        cache = {kind: {"computed": 0, "reused": 0, "recomputed_invalid": 0} for kind in ("db", "query")}
        to_compute: list[tuple[str, str, SiftOptions]] = []
        pending: dict[str, _Image] = {}
        invalid: set[str] = set()
        for image in images:
            key = (image.kind, image.id)
            span_of[key] = None
            if image.path is None:
                warn("db_not_in_manifest", f"database image {image.id} is not in {db_manifest}; scored as unmatched")
                continue
            try:
                target = cache_file(cache_dir, image.path, sift)
            except OSError:
                image.unreadable(warn, f"file not found ({image.path})")
                continue
            if os.path.lexists(target):
                try:
                    if not target.is_file():
                        raise BadEntry("not a regular file")
                    span_of[key] = writer.add(read_entry(target, image.path, sift))
                    cache[image.kind]["reused"] += 1
                    continue
                except OSError as exc:
                    image.unreadable(warn, f"cannot read: {exc.strerror}")
                    continue
                except BadEntry as why:
                    warn("sift_cache_invalid", f"SIFT cache entry of {image.label} ({target}): {why}; computed again")
                    _remove_entry(target)
                    invalid.add(str(target))
            if str(target) in pending:  # the same file named twice (as a query and in the database)
                pending[str(target)].also.append(image)
                continue
            pending[str(target)] = image
            to_compute.append((str(image.path), str(target), sift))
        t_check = time.perf_counter() - t0

        context = multiprocessing.get_context("spawn")
        pool = context.Pool(workers, initializer=init_worker) if workers > 1 else None
        finished = False
        try:
            t0 = time.perf_counter()
            for target, reason, keypoints in _pool_map(extract_task, to_compute, pool, "SIFT descriptors", progress):
                image = pending[target]
                if reason is not None:
                    for each in (image, *image.also):
                        each.unreadable(warn, reason)
                    continue
                span = writer.add(keypoints)
                for each in (image, *image.also):
                    span_of[(each.kind, each.id)] = span
                    cache[each.kind]["recomputed_invalid" if target in invalid else "computed"] += 1
            pack = writer.close()
            t_descriptors = time.perf_counter() - t0

            t0 = time.perf_counter()
            tasks = []
            for query_id in query_ids:
                query_span = span_of[("query", query_id)]
                if query_span is None:
                    continue  # unreadable, warned about
                tasks.append((query_id, query_span, [span_of[("db", d)] for d in run.ranking[query_id][:top]],
                              pack, options))
            matched: dict[str, list[tuple[int, float]]] = {}
            match_pool = None if match_device is not None else pool
            for query_id, pairs in _pool_map(match_task, tasks, match_pool, "SIFT matching", progress):
                matched[query_id] = pairs
            t_matching = time.perf_counter() - t0
            finished = True
        finally:
            writer.close()
            if pool is not None:
                if finished:
                    pool.close()
                else:
                    pool.terminate()
                pool.join()

    ranking, scores = final_order(run, matched, top, scorer, blend_weight)

    params = {
        "top": top,
        "scorer": scorer,
        "blend_weight": blend_weight if scorer == "blend" else None,
        "blend_of": blend_of if scorer == "blend" else None,
        "ratio": ratio,
        "matcher": matcher,
        "root_sift": root_sift,
        "device": "cpu" if match_device is None else match_device,
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
    prov["sift_cache"] = cache["db"]
    prov["sift_cache_queries"] = cache["query"]
    prov["warnings"] = {**counts, "examples": examples}
    prov["queries"] = {"total": len(run.ranking), "reranked": len(matched)}
    depth = max(run.depth, 1)
    written = write_run(out, name, ranking, scores, prov, depth=depth)
    return RunResult(name, written, prov, warnings=examples)
