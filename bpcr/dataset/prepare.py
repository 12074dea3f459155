"""``bpcr prepare``: check a Perfect-500K style dataset and write its manifests.

Input (DESIGN.md, "Dataset layout accepted by prepare"): a database image
folder and a query image folder with files ``<id>.<ext>``, an optional
descriptions CSV and optional ground truth in the challenge format.

Output, all in ``out`` and each written atomically:

- ``database.csv``, ``queries.csv``: manifests of the usable images
  (:mod:`bpcr.dataset.manifest`), queries with empty descriptions;
- ``rejected.csv``: ``set,id,path,reason`` for every file not usable, sorted;
- ``ground_truth.csv``: a byte copy of the ground truth once it has been read
  and checked against the manifests (removed when no ground truth is given);
- ``summary.json``: counts, notes, description and ground-truth findings;
  written last, so it is absent while a run is unfinished or after one failed;
- ``.check_cache.json``: one check result per image keyed by its path relative
  to ``out`` plus size and mtime, so a re-run decodes only changed files;
- with ``presize`` (:class:`bpcr.dataset.options.PresizeOptions`, off by default): the pre-sized image cache,
  ``presize/`` and ``presize.json`` beside the manifests (:mod:`bpcr.dataset.presize`), made after them; every
  run removes ``presize.json`` first, so a run without the option leaves none. The manifests are the same bytes
  with or without it.

Image folders:

- Subfolders (and anything else that is not a file) are ignored (counted as
  ``ignored``); hidden files (``.*``, e.g. ``.DS_Store``) are rejected unread,
  so each is listed in ``rejected.csv``.
- A file whose stem is not a valid ID, or whose suffix is not an image suffix
  (:data:`bpcr.dataset.images.IMAGE_SUFFIXES`), is rejected with that reason.
- Two files with one ID (``n1.jpg`` and ``n1.png``) are both rejected: which one
  is meant cannot be known.
- Every other file is decoded in full by :func:`bpcr.dataset.images.check_image`.

Descriptions CSV (optional): read and checked by :mod:`bpcr.dataset.descriptions`,
whose docstring gives every rule.

Ground truth (optional) is read with :func:`bpcr.dataset.gt.read_ground_truth` (its
format errors are :class:`BadInput`); queries without a usable query image and
relevant IDs without a usable database image are warnings, not errors.
"""
from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bpcr import __version__
from bpcr.dataset.descriptions import DescriptionStats, description_warnings, link_descriptions, read_descriptions
from bpcr.errors import BadInput
from bpcr.io.fileio import atomic_path, write_json_atomic, write_text_atomic
from bpcr.io.folders import PREPARED, check_output_file, check_output_folder
from bpcr.dataset.gt import read_ground_truth
from bpcr.io.ids import is_valid_id
from bpcr.io.textio import people_csv
from bpcr.dataset.imagecheck import CACHE_NAME, check_all
from bpcr.dataset.images import IMAGE_SUFFIXES, MAX_PIXELS
from bpcr.dataset.manifest import write_manifest
from bpcr.dataset.options import PrepareOptions, PresizeOptions, check_prepare_options
from bpcr.dataset.presize import FOLDER as PRESIZE_FOLDER, RESUME_NAME, SIDECAR, presize_images, remove_sidecar
from bpcr.progress import Progress

EXAMPLES = 5
PREPARE_INPUTS = ("db", "descriptions", "queries", "gt")  # prepare's inputs (a config's [prepare] keys beside its options)


@dataclass
class SetSummary:
    """One image folder: files seen, usable, rejected by reason kind, notes on usable ones."""

    folder: str
    seen: int = 0
    ignored: int = 0
    usable: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)


@dataclass
class GroundTruthStats:
    file: str
    queries: int = 0
    relevant: int = 0
    queries_without_image: int = 0
    queries_without_image_examples: list[str] = field(default_factory=list)
    relevant_without_image: int = 0
    relevant_without_image_examples: list[str] = field(default_factory=list)
    queries_without_usable_relevant: int = 0
    usable_queries_not_in_gt: int = 0


@dataclass
class PrepareSummary:
    """Returned by :func:`prepare` and written as ``summary.json``.

    ``decoded`` counts images decoded in this run, ``cached`` those whose check
    result came from ``.check_cache.json``.
    """

    out: str
    database: SetSummary
    queries: SetSummary
    descriptions: DescriptionStats
    ground_truth: GroundTruthStats | None
    decoded: int = 0
    cached: int = 0
    seconds: float = 0.0
    max_pixels: int = MAX_PIXELS
    warnings: list[str] = field(default_factory=list)
    presize: dict[str, Any] | None = None  # the pre-sized cache made (bpcr.dataset.presize.PresizeSummary), if asked

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["presize"] is None:
            del data["presize"]  # summary.json is as before without the option
        data["bpcr_version"] = __version__
        return data


@dataclass
class _File:
    set: str
    id: str
    path: Path
    key: str  # path relative to the output folder, POSIX separators


def prepare(db: Path, descriptions: Path | None, queries: Path, gt: Path | None, out: Path,
            options: PrepareOptions = PrepareOptions(), *, presize: PresizeOptions | None = None,
            progress: Progress | None = None) -> PrepareSummary:
    """Check every image of a dataset (the ``db`` and ``queries`` folders, the optional ``descriptions`` CSV and
    ``gt`` ground truth) and write manifests and reports to ``out``.

    ``options`` (:class:`bpcr.dataset.options.PrepareOptions`, where each is declared): ``workers`` processes
    decode images (default: one per CPU), ``max_pixels`` bounds an image; ``presize``
    (:class:`~bpcr.dataset.options.PresizeOptions`) with sizes makes the pre-sized image cache of both sets
    (:mod:`bpcr.dataset.presize`); ``progress`` is told of every image checked (:mod:`bpcr.progress`). See the
    module docstring for every rule applied to files, descriptions and ground truth.
    """
    started = time.perf_counter()
    check_prepare_options(options)
    presize = _checked_presize(presize)
    workers, max_pixels = options.workers, options.max_pixels
    db, queries, out = Path(db), Path(queries), Path(out)
    for folder in (db, queries):
        _check_folder(folder)
    out_resolved = out.resolve()
    if out_resolved in (db.resolve(), queries.resolve()):
        raise BadInput(out, None, "output folder must not be an image folder")
    out = check_outputs(out, presize is not None)

    db_set, db_files, db_rejected = _scan(db, "database", out_resolved)
    q_set, q_files, q_rejected = _scan(queries, "queries", out_resolved)
    # Text inputs are read before any image is decoded, so their errors come in seconds.
    db_stems = {f.path.stem for f in db_files} | {r[1] for r in db_rejected if r[1]}
    desc_map, desc_stats = (read_descriptions(Path(descriptions), db_stems) if descriptions is not None
                            else ({}, DescriptionStats()))
    gt_data = read_ground_truth(gt) if gt is not None else None

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)  # written last: present only after a finished run
    remove_sidecar(out)
    files = db_files + q_files
    results, decoded, cached = check_all(files, out, workers, progress, max_pixels)

    rejected = db_rejected + q_rejected
    usable, infos = _sort_results(files, results, rejected, {"database": db_set, "queries": q_set})
    db_ids = {f.id for f in usable["database"]}
    link_descriptions(desc_map, desc_stats, db_ids, EXAMPLES)
    for name, manifest_name in (("database", "database.csv"), ("queries", "queries.csv")):
        chosen = usable[name]
        write_manifest(out / manifest_name, [f.id for f in chosen], [f.path for f in chosen],
                       [infos[f.key]["width"] for f in chosen], [infos[f.key]["height"] for f in chosen],
                       [desc_map.get(f.id, "") if name == "database" else "" for f in chosen])
    _write_rejected(out / "rejected.csv", rejected)
    gt_stats = _copy_ground_truth(gt, gt_data, out, {f.id for f in usable["queries"]}, db_ids)
    made = None
    if presize is not None:
        made = presize_images(usable, {"database": out / "database.csv", "queries": out / "queries.csv"}, out,
                              presize, workers, progress, max_pixels).to_json()
    summary = PrepareSummary(out=str(out), database=db_set, queries=q_set, descriptions=desc_stats,
                             ground_truth=gt_stats, decoded=decoded, cached=cached,
                             max_pixels=max_pixels, presize=made)
    summary.warnings = _warnings(summary)
    summary.seconds = round(time.perf_counter() - started, 3)
    write_json_atomic(out / "summary.json", summary.to_json())
    return summary


def _sort_results(files: list[_File], results: dict[str, dict[str, Any]], rejected: list[tuple[str, str, str, str]],
                  sets: dict[str, SetSummary]) -> tuple[dict[str, list[_File]], dict[str, dict[str, Any]]]:
    """Split checked files into the usable ones of each set (with their check results) and ``rejected``
    (appended to); each set's summary counts them."""
    usable: dict[str, list[_File]] = {"database": [], "queries": []}
    infos: dict[str, dict[str, Any]] = {}
    for f in files:
        result = results[f.key]
        if "reason" in result:
            rejected.append((f.set, f.id, f.key, result["reason"]))
        else:
            usable[f.set].append(f)
            infos[f.key] = result
    for name, summary in sets.items():
        summary.usable = len(usable[name])
        summary.rejected = dict(sorted(Counter(_kind(r[3]) for r in rejected if r[0] == name).items()))
        summary.notes = dict(sorted(Counter(n for f in usable[name] for n in infos[f.key]["notes"]).items()))
    return usable, infos


def _copy_ground_truth(gt: Path | None, gt_data: Any, out: Path, query_ids: set[str], db_ids: set[str]) -> Any:
    """Check the ground truth against the usable images and copy it beside the manifests; its statistics."""
    if gt is not None and gt_data is not None:
        gt_stats = _check_ground_truth(Path(gt), gt_data, query_ids, db_ids)
        with atomic_path(out / "ground_truth.csv") as tmp:
            shutil.copyfile(gt, tmp)
        return gt_stats
    if (out / "ground_truth.csv").exists():
        # A ground truth left from an earlier run would no longer match these manifests.
        (out / "ground_truth.csv").unlink()
    return None


@dataclass
class QuerySet:
    """A query folder checked alone by :func:`prepare_queries`."""

    manifest: Path
    ids: list[str]  # the usable images' IDs, sorted
    rejected: list[tuple[str, str, str]]  # (ID, or "" when the file name is none; file name; reason), sorted
    presize: dict[str, Any] | None = None  # the pre-sized cache made (bpcr.dataset.presize.PresizeSummary), if asked


def prepare_queries(queries: Path, out: Path, options: PrepareOptions = PrepareOptions(), *,
                    presize: PresizeOptions | None = None, progress: Progress | None = None) -> QuerySet:
    """Check a folder of query images alone, by the rules of :func:`prepare` (``options`` and ``presize`` as
    there), and write ``out/queries.csv``.

    For new queries answered against a database prepared before (``bpcr
    predict``), whose stores were extracted from a pre-sized cache when ``presize`` is given: the new queries
    then get the same cache. Check results are cached in ``out`` as :func:`prepare` caches
    them; nothing else is written there but the cache.
    """
    check_prepare_options(options)
    presize = _checked_presize(presize)
    workers, max_pixels = options.workers, options.max_pixels
    queries, out = Path(queries), Path(out)
    _check_folder(queries)
    out = check_output_folder(out, "--out", PREPARED)
    check_output_file(out / "queries.csv", "--out")
    if presize is not None:
        _check_presize_outputs(out)
    _, files, rejected = _scan(queries, "queries", out.resolve())
    out.mkdir(parents=True, exist_ok=True)
    remove_sidecar(out)
    results, _, _ = check_all(files, out, workers, progress, max_pixels)
    usable = [f for f in files if "reason" not in results[f.key]]
    rejected += [(f.set, f.id, f.key, results[f.key]["reason"]) for f in files if "reason" in results[f.key]]
    write_manifest(out / "queries.csv", [f.id for f in usable], [f.path for f in usable],
                   [results[f.key]["width"] for f in usable], [results[f.key]["height"] for f in usable],
                   [""] * len(usable))
    made = None
    if presize is not None:
        made = presize_images({"queries": usable}, {"queries": out / "queries.csv"}, out, presize, workers,
                              progress, max_pixels).to_json()
    return QuerySet(out / "queries.csv", sorted(f.id for f in usable),
                    sorted((image_id, key.rsplit("/", 1)[-1], reason) for _, image_id, key, reason in rejected),
                    made)


def check_outputs(out: Path, presize: bool = False) -> Path:
    """Refuse, before any image is read, an ``--out`` that is not this stage's to write (module doc's files; with
    ``presize``, the cache's too)."""
    out = check_output_folder(out, "--out", PREPARED)
    for name in ("database.csv", "queries.csv", "rejected.csv", "ground_truth.csv", "summary.json", CACHE_NAME):
        check_output_file(out / name, "--out")
    if presize:
        _check_presize_outputs(out)
    return out


def _checked_presize(presize: PresizeOptions | None) -> PresizeOptions | None:
    """``presize`` checked (BadInput before anything is read or written), or None when it asks for no cache."""
    if presize is None:
        return None
    check_prepare_options(presize)
    return presize if presize.enabled else None


def _check_presize_outputs(out: Path) -> None:
    for name in (SIDECAR, RESUME_NAME):
        check_output_file(out / name, "--out")
    folder = out / PRESIZE_FOLDER
    if folder.exists() and not folder.is_dir():
        raise BadInput(folder, None, "is not a folder; the pre-sized image cache goes there")


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise BadInput(folder, None, "folder not found")
    if not folder.is_dir():
        raise BadInput(folder, None, "not a folder")


def _scan(folder: Path, name: str, out_resolved: Path) -> tuple[SetSummary, list[_File], list[tuple[str, str, str, str]]]:
    """List ``folder``: candidates to decode, and files rejected by name alone."""
    summary = SetSummary(folder=str(folder))
    rel_dir = Path(os.path.relpath(folder.resolve(), out_resolved)).as_posix()
    by_id: dict[str, list[_File]] = {}
    rejected: list[tuple[str, str, str, str]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise BadInput(folder, None, f"cannot list folder: {exc.strerror}") from None
    visible = 0
    for entry in entries:
        path = Path(entry.path)
        key = f"{rel_dir}/{entry.name}"
        stem, suffix = path.stem, path.suffix
        try:
            is_file = entry.is_file()
        except OSError as exc:  # a symbolic link loop (ELOOP), a name too long to follow: this file only
            summary.seen += 1
            rejected.append((name, stem if is_valid_id(stem) else "", key,
                             f"cannot be opened: {(exc.strerror or str(exc)).lower()}"))
            continue
        if not is_file:
            summary.ignored += 1
            continue
        summary.seen += 1
        if entry.name.startswith("."):
            # Listed, never read: a hidden file is usually a system's (.DS_Store, ._n1.jpg), and an
            # ID never starts with a dot, but a user looking for a missing image must find it here.
            rejected.append((name, "", key, "hidden file: name starts with a dot"))
            continue
        visible += 1
        if not is_valid_id(stem):
            rejected.append((name, "", key, f"invalid ID in file name: {stem!r}"))
        elif suffix.lower() not in IMAGE_SUFFIXES:
            rejected.append((name, stem, key, f"not an image suffix: {suffix or '(none)'}"))
        else:
            by_id.setdefault(stem, []).append(_File(name, stem, path, key))
    files = []
    for image_id, group in by_id.items():
        if len(group) == 1:
            files.extend(group)
            continue
        names = ", ".join(f.path.name for f in group)
        rejected.extend((name, image_id, f.key, f"ID has two files: {names}") for f in group)
    if visible == 0:
        raise BadInput(folder, None, "no image files found")
    return summary, files, rejected


def _kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def _check_ground_truth(path: Path, gt: dict[str, list[str]], query_ids: set[str],
                        db_ids: set[str]) -> GroundTruthStats:
    relevant = {r for rel in gt.values() for r in rel}
    no_query = sorted(set(gt) - query_ids)
    no_relevant = sorted(relevant - db_ids)
    return GroundTruthStats(
        file=str(path), queries=len(gt), relevant=len(relevant),
        queries_without_image=len(no_query), queries_without_image_examples=no_query[:EXAMPLES],
        relevant_without_image=len(no_relevant), relevant_without_image_examples=no_relevant[:EXAMPLES],
        queries_without_usable_relevant=sum(1 for rel in gt.values() if not db_ids.intersection(rel)),
        usable_queries_not_in_gt=len(query_ids - set(gt)),
    )


def _write_rejected(path: Path, rejected: list[tuple[str, str, str, str]]) -> None:
    write_text_atomic(path, people_csv(["set", "id", "path", "reason"], sorted(rejected)))


def _warnings(summary: PrepareSummary) -> list[str]:
    found = []
    for s in (summary.database, summary.queries):
        if s.usable == 0:
            found.append(f"{s.folder}: no usable image")
    found += description_warnings(summary.descriptions)
    g = summary.ground_truth
    if g is not None:
        if g.queries_without_image:
            found.append(f"{g.file}: {g.queries_without_image} queries have no usable query image "
                         f"(e.g. {', '.join(g.queries_without_image_examples)})")
        if g.relevant_without_image:
            found.append(f"{g.file}: {g.relevant_without_image} relevant IDs have no usable database image "
                         f"(e.g. {', '.join(g.relevant_without_image_examples)})")
        if g.queries_without_usable_relevant:
            found.append(f"{g.file}: {g.queries_without_usable_relevant} queries have no usable relevant image "
                         "and always score 0")
    return found
