"""``bpcr prepare``: check a Perfect-500K style dataset and write its manifests.

Input (DESIGN.md, "Dataset layout accepted by prepare"): a database image
folder and a query image folder with files ``<id>.<ext>``, an optional
descriptions CSV and optional ground truth in the challenge format.

Output, all in ``out`` and each written atomically:

- ``database.csv``, ``queries.csv``: manifests of the usable images
  (:mod:`bpcr.manifest`), queries with empty descriptions;
- ``rejected.csv``: ``set,id,path,reason`` for every file not usable, sorted;
- ``ground_truth.csv``: a byte copy of the ground truth once it has been read
  and checked against the manifests (removed when no ground truth is given);
- ``summary.json``: counts, notes, description and ground-truth findings;
  written last, so it is absent while a run is unfinished or after one failed;
- ``.check_cache.json``: one check result per image keyed by its path relative
  to ``out`` plus size and mtime, so a re-run decodes only changed files.

Image folders:

- Hidden files (``.*``) and subfolders are ignored (counted as ``ignored``).
- A file whose stem is not a valid ID, or whose suffix is not an image suffix
  (:data:`bpcr.images.IMAGE_SUFFIXES`), is rejected with that reason.
- Two files with one ID (``n1.jpg`` and ``n1.png``) are both rejected: which one
  is meant cannot be known.
- Every other file is decoded in full by :func:`bpcr.images.check_image`.

Descriptions CSV (read strictly as UTF-8; bad bytes are :class:`BadInput`):

- The first non-blank record is the header. It must have at least two non-empty
  cells; a first record starting with the ID of a database file means the header
  is missing. Both are :class:`BadInput`.
- Column 1 is the image ID (spaces around it stripped), column 2 the
  description; further columns are ignored. Quoted commas and quoted line
  breaks are kept; runs of whitespace, line breaks included, become one space.
- Non-English text is kept as it is (``non_ascii`` counts it); filtering by
  language is a later stage's choice.
- A record shorter than the header has its missing cells taken as empty (writers
  drop trailing empty cells). With a two-column header, a longer record holds an
  unquoted comma: its extra cells are joined back with ``,`` and counted. With a
  wider header a longer record is ambiguous and skipped (``bad_columns``).
- A record with an invalid ID is skipped and counted; a repeated ID keeps its
  first record and the repeats are counted. If more than half of the records are
  skipped, the file is not an ``id,description`` CSV: :class:`BadInput` naming
  the first bad line.
- Empty descriptions are kept and counted; a usable database image with no
  record gets an empty description (counted); records whose ID has no usable
  database image are counted.

Ground truth (optional) is read with :func:`bpcr.gt.read_ground_truth` (its
format errors are :class:`BadInput`); queries without a usable query image and
relevant IDs without a usable database image are warnings, not errors.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import __version__
from .errors import BadInput
from .fileio import atomic_path, write_json_atomic, write_text_atomic
from .gt import read_ground_truth
from .ids import is_valid_id
from .images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, check_image
from .manifest import write_manifest
from .textio import read_lines

CACHE_NAME = ".check_cache.json"
CACHE_VERSION = 1
CHUNK = 32  # files per task sent to a worker: small enough for a smooth progress bar
EXAMPLES = 5


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
class DescriptionStats:
    """What the descriptions CSV held; ``*_first_line`` is 1-based, 0 when none."""

    file: str | None = None
    rows: int = 0
    used: int = 0
    empty: int = 0
    non_ascii: int = 0
    invalid_id: int = 0
    invalid_id_first_line: int = 0
    bad_columns: int = 0
    bad_columns_first_line: int = 0
    unquoted_commas: int = 0
    unquoted_commas_first_line: int = 0
    duplicates: int = 0
    duplicates_first_line: int = 0
    without_image: int = 0
    without_image_examples: list[str] = field(default_factory=list)
    images_without_description: int = 0
    images_without_description_examples: list[str] = field(default_factory=list)


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["bpcr_version"] = __version__
        return data


@dataclass
class _File:
    set: str
    id: str
    path: Path
    key: str  # path relative to the output folder, POSIX separators


def prepare(db_dir: Path, descriptions: Path | None, queries_dir: Path, gt: Path | None, out: Path,
            workers: int | None = None, progress: bool = True, max_pixels: int = MAX_PIXELS) -> PrepareSummary:
    """Check every image of a dataset and write manifests and reports to ``out``.

    ``workers`` processes decode images (default: one per CPU). See the module
    docstring for every rule applied to files, descriptions and ground truth.
    """
    started = time.perf_counter()
    db_dir, queries_dir, out = Path(db_dir), Path(queries_dir), Path(out)
    for folder in (db_dir, queries_dir):
        _check_folder(folder)
    out_resolved = out.resolve()
    if out_resolved in (db_dir.resolve(), queries_dir.resolve()):
        raise BadInput(out, None, "output folder must not be an image folder")
    if out.exists() and not out.is_dir():
        raise BadInput(out, None, "output path exists and is not a folder")

    db_set, db_files, db_rejected = _scan(db_dir, "database", out_resolved)
    q_set, q_files, q_rejected = _scan(queries_dir, "queries", out_resolved)
    # Text inputs are read before any image is decoded, so their errors come in seconds.
    db_stems = {f.path.stem for f in db_files} | {r[1] for r in db_rejected if r[1]}
    desc_map, desc_stats = (_read_descriptions(Path(descriptions), db_stems) if descriptions is not None
                            else ({}, DescriptionStats()))
    gt_data = read_ground_truth(gt) if gt is not None else None

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)  # written last: present only after a finished run
    files = db_files + q_files
    results, decoded, cached = _check_all(files, out, workers, progress, max_pixels)

    rejected = db_rejected + q_rejected
    usable: dict[str, list[_File]] = {"database": [], "queries": []}
    infos: dict[str, dict[str, Any]] = {}
    for f in files:
        result = results[f.key]
        if "reason" in result:
            rejected.append((f.set, f.id, f.key, result["reason"]))
        else:
            usable[f.set].append(f)
            infos[f.key] = result
    for summary, name in ((db_set, "database"), (q_set, "queries")):
        summary.usable = len(usable[name])
        summary.rejected = dict(sorted(Counter(_kind(r[3]) for r in rejected if r[0] == name).items()))
        summary.notes = dict(sorted(Counter(n for f in usable[name] for n in infos[f.key]["notes"]).items()))

    db_ids = {f.id for f in usable["database"]}
    _link_descriptions(desc_map, desc_stats, db_ids)
    for name, manifest_name in (("database", "database.csv"), ("queries", "queries.csv")):
        chosen = usable[name]
        write_manifest(out / manifest_name, [f.id for f in chosen], [f.path for f in chosen],
                       [infos[f.key]["width"] for f in chosen], [infos[f.key]["height"] for f in chosen],
                       [desc_map.get(f.id, "") if name == "database" else "" for f in chosen])
    _write_rejected(out / "rejected.csv", rejected)

    gt_stats = None
    if gt is not None and gt_data is not None:
        gt_stats = _check_ground_truth(Path(gt), gt_data, {f.id for f in usable["queries"]}, db_ids)
        with atomic_path(out / "ground_truth.csv") as tmp:
            shutil.copyfile(gt, tmp)
    elif (out / "ground_truth.csv").exists():
        # A ground truth left from an earlier run would no longer match these manifests.
        (out / "ground_truth.csv").unlink()

    summary = PrepareSummary(out=str(out), database=db_set, queries=q_set, descriptions=desc_stats,
                             ground_truth=gt_stats, decoded=decoded, cached=cached,
                             max_pixels=max_pixels)
    summary.warnings = _warnings(summary)
    summary.seconds = round(time.perf_counter() - started, 3)
    write_json_atomic(out / "summary.json", summary.to_json())
    return summary


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
    for entry in entries:
        if entry.name.startswith("."):
            summary.ignored += 1
            continue
        if not entry.is_file():
            summary.ignored += 1
            continue
        summary.seen += 1
        path = Path(entry.path)
        key = f"{rel_dir}/{entry.name}"
        stem, suffix = path.stem, path.suffix
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
    if summary.seen == 0:
        raise BadInput(folder, None, "no image files found")
    return summary, files, rejected


def _kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def _check_all(files: list[_File], out: Path, workers: int | None, progress: bool,
               max_pixels: int) -> tuple[dict[str, dict[str, Any]], int, int]:
    """Check result per file key, from the cache or by decoding; also how many of each."""
    cache_path = out / CACHE_NAME
    cache = _load_cache(cache_path, max_pixels)
    results: dict[str, dict[str, Any]] = {}
    entries: dict[str, list[Any]] = {}
    todo: list[tuple[str, str]] = []
    stamps: dict[str, tuple[int, int]] = {}
    failed_stat = 0
    for f in files:
        try:
            stat = f.path.stat()
        except OSError as exc:
            results[f.key] = {"reason": f"cannot read: {exc.strerror}"}
            failed_stat += 1
            continue
        stamps[f.key] = (stat.st_size, stat.st_mtime_ns)
        hit = _cached(cache.get(f.key), stat.st_size, stat.st_mtime_ns)
        if hit is None:
            todo.append((f.key, str(f.path)))
        else:
            results[f.key] = hit
            entries[f.key] = [stat.st_size, stat.st_mtime_ns, hit]
    del cache
    try:
        for key, result in _run_checks(todo, workers, progress, max_pixels):
            results[key] = result
            entries[key] = [*stamps[key], result]
    finally:
        # Written even when interrupted, so a re-run resumes instead of starting over.
        body = {"version": CACHE_VERSION, "max_pixels": max_pixels, "pillow": _pillow_version(),
                "entries": dict(sorted(entries.items()))}
        write_text_atomic(cache_path, json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n")
    return results, len(todo), len(files) - len(todo) - failed_stat


def _run_checks(todo: list[tuple[str, str]], workers: int | None, progress: bool,
                max_pixels: int) -> Iterable[tuple[str, dict[str, Any]]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    workers = max(1, workers or os.cpu_count() or 1)
    # Small sets still spread over every worker; large ones go in CHUNK-sized tasks.
    size = max(1, min(CHUNK, -(-len(todo) // (4 * workers))))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    workers = min(workers, max(1, len(chunks)))
    bar = Progress(TextColumn("checking images"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress or not todo)
    with bar:
        task = bar.add_task("check", total=len(todo))
        if workers == 1:
            for chunk in chunks:
                done = _check_chunk(chunk, max_pixels)
                bar.advance(task, len(done))
                yield from done
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: workers start clean, whatever threads or libraries the caller holds.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_check_chunk, chunk, max_pixels) for chunk in chunks]
            try:
                for future in as_completed(futures):
                    done = future.result()
                    bar.advance(task, len(done))
                    yield from done
            finally:
                for future in futures:
                    future.cancel()


def _check_chunk(chunk: list[tuple[str, str]], max_pixels: int) -> list[tuple[str, dict[str, Any]]]:
    done = []
    for key, path in chunk:
        try:
            info = check_image(Path(path), max_pixels)
        except ImageError as exc:
            done.append((key, {"reason": exc.reason}))
            continue
        except MemoryError:
            done.append((key, {"reason": "out of memory while decoding"}))
            continue
        done.append((key, {"width": info.width, "height": info.height, "format": info.format, "notes": info.notes}))
    return done


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


def _load_cache(path: Path, max_pixels: int) -> dict[str, Any]:
    """The cache's entries, or nothing when it is missing, damaged or made under other settings."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("max_pixels") != max_pixels
            or data.get("pillow") != _pillow_version() or not isinstance(data.get("entries"), dict)):
        return {}
    return data["entries"]


def _cached(entry: Any, size: int, mtime_ns: int) -> dict[str, Any] | None:
    if not (isinstance(entry, list) and len(entry) == 3 and entry[0] == size and entry[1] == mtime_ns):
        return None
    result = entry[2]
    if not isinstance(result, dict):
        return None
    if isinstance(result.get("reason"), str):
        return result
    ok = (isinstance(result.get("width"), int) and isinstance(result.get("height"), int)
          and isinstance(result.get("format"), str) and isinstance(result.get("notes"), list))
    return result if ok else None


def _read_descriptions(path: Path, db_stems: set[str]) -> tuple[dict[str, str], DescriptionStats]:
    stats = DescriptionStats(file=str(path))
    lines = read_lines(path)
    reader = csv.reader(io.StringIO("\n".join(lines) + "\n"))
    header: list[str] | None = None
    descriptions: dict[str, str] = {}
    first_bad: tuple[int, str] | None = None
    bad = 0
    line = last_start = 1
    try:
        for record in reader:
            start, line = line, reader.line_num + 1
            last_start = start
            if not record or all(cell.strip() == "" for cell in record):
                continue
            if header is None:
                header = _check_header(path, start, record, db_stems)
                continue
            stats.rows += 1
            problem = _take_record(record, len(header), start, stats, descriptions)
            if problem is not None:
                bad += 1
                first_bad = first_bad or (start, problem)
    except csv.Error as exc:
        raise BadInput(path, line, f"malformed CSV: {exc}") from None
    if header is None:
        raise BadInput(path, None, "empty file; expected a header row and one row per image")
    _check_last_quote(path, lines, last_start)
    if first_bad is not None and 2 * bad > stats.rows:
        raise BadInput(path, first_bad[0], f"not an ID,description CSV: {bad} of {stats.rows} rows are malformed, "
                                           f"the first: {first_bad[1]}")
    return descriptions, stats


def _check_last_quote(path: Path, lines: list[str], start: int) -> None:
    # Python's lenient csv reader lets a quote that is never closed swallow every
    # later row into one description; only the final record can have done so.
    if start >= len(lines):
        return
    try:
        list(csv.reader(io.StringIO("\n".join(lines[start - 1:]) + "\n"), strict=True))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise BadInput(path, start, "a quote opened on this line is never closed") from None


def _check_header(path: Path, line: int, record: list[str], db_stems: set[str]) -> list[str]:
    cells = [cell.strip() for cell in record]
    if cells[0] in db_stems:
        raise BadInput(path, line, f"missing header row: the first row is data for image {cells[0]!r}")
    if len(cells) < 2:
        raise BadInput(path, line, "header has 1 column; expected at least 2 comma-separated columns "
                                   "(image ID, description)")
    if not cells[0] or not cells[1] or not all(cell.isprintable() for cell in cells):
        raise BadInput(path, line, "garbled header row; expected column names such as 'id,description'")
    return cells


def _take_record(record: list[str], width: int, line: int, stats: DescriptionStats,
                 descriptions: dict[str, str]) -> str | None:
    """Store one record's description; return why it was skipped, or None."""
    image_id = record[0].strip()
    if not is_valid_id(image_id):
        stats.invalid_id += 1
        stats.invalid_id_first_line = stats.invalid_id_first_line or line
        return f"invalid ID {image_id[:40]!r}"
    cells = list(record)
    while len(cells) > width and cells[-1].strip() == "":
        cells.pop()
    if len(cells) > width:
        if width != 2:
            stats.bad_columns += 1
            stats.bad_columns_first_line = stats.bad_columns_first_line or line
            return f"{len(cells)} columns, header has {width}"
        cells = [cells[0], ",".join(cells[1:])]
        stats.unquoted_commas += 1
        stats.unquoted_commas_first_line = stats.unquoted_commas_first_line or line
    if image_id in descriptions:
        stats.duplicates += 1
        stats.duplicates_first_line = stats.duplicates_first_line or line
        return None
    text = " ".join(cells[1].split()) if len(cells) > 1 else ""
    descriptions[image_id] = text
    if text == "":
        stats.empty += 1
    elif not text.isascii():
        stats.non_ascii += 1
    return None


def _link_descriptions(descriptions: dict[str, str], stats: DescriptionStats, db_ids: set[str]) -> None:
    if stats.file is None:
        return
    orphans = sorted(set(descriptions) - db_ids)
    stats.without_image = len(orphans)
    stats.without_image_examples = orphans[:EXAMPLES]
    missing = sorted(db_ids - set(descriptions))
    stats.images_without_description = len(missing)
    stats.images_without_description_examples = missing[:EXAMPLES]
    stats.used = len(db_ids) - len(missing)


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
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["set", "id", "path", "reason"])
    writer.writerows(sorted(rejected))
    write_text_atomic(path, buf.getvalue())


def _warnings(summary: PrepareSummary) -> list[str]:
    found = []
    for s in (summary.database, summary.queries):
        if s.usable == 0:
            found.append(f"{s.folder}: no usable image")
    d = summary.descriptions
    if d.file is not None:
        if d.invalid_id:
            found.append(f"{d.file}: {d.invalid_id} rows with an invalid ID skipped (first on line {d.invalid_id_first_line})")
        if d.bad_columns:
            found.append(f"{d.file}: {d.bad_columns} rows with too many columns skipped "
                         f"(first on line {d.bad_columns_first_line})")
        if d.duplicates:
            found.append(f"{d.file}: {d.duplicates} repeated IDs, first row kept (first repeat on line "
                         f"{d.duplicates_first_line})")
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


def render_summary(summary: PrepareSummary) -> list[Any]:
    """Rich renderables for the terminal: images per set, descriptions, timing (warnings are separate)."""
    from rich.table import Table

    images = Table(title=f"bpcr prepare -> {summary.out}", title_justify="left")
    for column in ("set", "files", "usable", "rejected", "top rejection reasons", "notes"):
        images.add_column(column, justify="right" if column in ("files", "usable", "rejected") else "left")
    for name, s in (("database", summary.database), ("queries", summary.queries)):
        reasons = sorted(s.rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        notes = sorted(s.notes.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        images.add_row(name, str(s.seen), str(s.usable), str(sum(s.rejected.values())),
                       "\n".join(f"{r} ({n})" for r, n in reasons) or "-",
                       "\n".join(f"{r} ({n})" for r, n in notes) or "-")
    rendered: list[Any] = [images]
    d = summary.descriptions
    if d.file is not None:
        text = Table(title="descriptions", title_justify="left", show_header=False)
        text.add_column("what")
        text.add_column("count", justify="right")
        for label, value in (("rows", d.rows), ("attached to usable images", d.used),
                             ("usable images without a row", d.images_without_description),
                             ("rows without a usable image", d.without_image), ("empty", d.empty),
                             ("non-ASCII (kept)", d.non_ascii), ("unquoted commas joined", d.unquoted_commas),
                             ("repeated IDs (first kept)", d.duplicates), ("invalid IDs (skipped)", d.invalid_id),
                             ("too many columns (skipped)", d.bad_columns)):
            text.add_row(label, str(value))
        rendered.append(text)
    rendered.append(f"decoded {summary.decoded} images, {summary.cached} from cache, {summary.seconds:.1f} s")
    return rendered
