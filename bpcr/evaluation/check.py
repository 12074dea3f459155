"""`bpcr check`: what a team runs before uploading a submission, or before trusting a ground truth.

Stricter than the scoring reader, and it reports every problem with its line
instead of stopping at the first: every query of the query set present once,
exactly 7 distinct IDs per line, every ID in the database manifest, lines
sorted by query ID, no header. Cosmetic departures (spaces after commas, BOM,
CRLF, a trailing comma) are reported as warnings: the scorer tolerates them.

``check_ground_truth`` does the same for a ground-truth file (DESIGN.md,
"Ground truth"): a header row (detected by shape, as the reader does), then
one row per query with one or more relevant IDs; every query once, every ID
valid, relevant IDs in the database manifest and queries in the query set
when those are given. The challenge's own file comes with a BOM and CRLF line
ends: warnings, read as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bpcr.errors import BadInput
from bpcr.dataset.gt import is_header
from bpcr.io.ids import is_valid_id
from bpcr.dataset.manifest import read_manifest
from bpcr.io.textio import LineReader, exists_as_input

DEPTH = 7
MAX_REPORTED = 50
# Per line and kind of problem: a line of 200,000 unknown IDs is one problem, not 200,000.
MAX_PER_LINE = 7


@dataclass
class CheckReport:
    path: Path
    errors: list[tuple[int | None, str]] = field(default_factory=list)
    warnings: list[tuple[int | None, str]] = field(default_factory=list)
    n_lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_submission(path: str | Path, db_manifest: str | Path, query_manifest: str | Path | None = None,
                     query_ids: Iterable[str] | None = None) -> CheckReport:
    """Check ``path`` against the database manifest and the query set.

    The query set is ``query_ids``, or ``query_manifest``'s IDs, or those of
    ``queries.csv`` beside the database manifest when that exists; without one,
    query coverage is not checked.
    The file is streamed once and each line is checked in time linear in its
    length; the reader's limits refuse absurd files and lines.
    """
    path = Path(path)
    db_manifest = Path(db_manifest)
    db_ids = set(read_manifest(db_manifest).ids)
    if query_ids is not None:
        query_ids = set(query_ids)
    else:
        if query_manifest is None and exists_as_input(db_manifest.parent / "queries.csv"):
            query_manifest = db_manifest.parent / "queries.csv"
        query_ids = set(read_manifest(query_manifest).ids) if query_manifest is not None else None
    report = CheckReport(path=path)
    reader = LineReader(path, "submission")  # refuses a missing or special file, binary data, bad UTF-8
    seen: dict[str, int] = {}
    previous = None
    for number, line in reader:
        if line.strip() == "":
            report.warnings.append((number, "blank line"))
            continue
        report.n_lines += 1
        _check_line(report, number, line, seen, previous, db_ids, query_ids)
        query = line.split(",", 1)[0].strip()
        if is_valid_id(query):
            previous = query
    _line_end_warnings(report, reader)
    if report.n_lines == 0:
        report.errors.append((None, "empty submission"))
    if query_ids is not None:
        absent = sorted(query_ids - set(seen))
        if absent:
            report.errors.append((None, f"{len(absent)} queries of the query set missing, e.g. {absent[0]!r}"))
    if report.ok:
        _check_run_group(report, path)
    return report


def _check_run_group(report: CheckReport, path: Path) -> None:
    """A run's ``NAME.csv`` against the rest of its group: a write cut short, or files of two writes.

    The group (``.csv``, ``.trec``, ``.json``) is committed by its journal (:mod:`bpcr.io.fileio`): while
    ``.bpcr-journal.json`` is in the folder the files may be a mix, until a bpcr reader completes it.
    """
    from bpcr.io.fileio import JOURNAL
    from bpcr.io.runs import SUBMISSION_DEPTH, read_submission, read_trec

    if (path.parent / JOURNAL).exists():
        report.errors.append((None, f"a write of this folder's runs was cut short ({JOURNAL} is here): these files "
                                    "may come from two writes; any bpcr command that reads the run completes it"))
        return
    trec = path.with_suffix(".trec")
    if path.suffix != ".csv" or not exists_as_input(trec):
        return
    try:
        ranked, _ = read_trec(trec)
    except BadInput as exc:
        report.errors.append((None, f"{trec.name}, beside it, is unreadable: {exc.reason}"))
        return
    answers = read_submission(path)
    for query in sorted(set(answers) | set(ranked)):
        if answers.get(query) != ranked.get(query, [])[:SUBMISSION_DEPTH]:
            report.errors.append((None, f"{trec.name}, beside it, answers query {query!r} otherwise: the two "
                                        "files are not of one run (a write cut short, or one file replaced)"))
            return


def _check_line(report: CheckReport, number: int, line: str, seen: dict[str, int], previous: str | None,
                db_ids: set[str], query_ids: set[str] | None) -> None:
    """Every problem of one line, in one pass over its cells."""
    cells = line.split(",")
    stripped = [c.strip() for c in cells]
    if stripped != cells:
        report.warnings.append((number, "spaces around commas"))
    cells = stripped
    if len(cells) > 1 and cells[-1] == "":
        report.warnings.append((number, "trailing comma"))
        cells.pop()
    query = cells[0]
    if not is_valid_id(query):
        hint = " (a header row? submissions have none)" if number == 1 else ""
        report.errors.append((number, f"invalid query ID {_shown(query)}{hint}"))
        return
    if query in seen:
        report.errors.append((number, f"query {query!r} already on line {seen[query]}"))
    seen.setdefault(query, number)
    if query_ids is not None and query not in query_ids:
        report.errors.append((number, f"query {query!r} is not in the query set"))
    if previous is not None and query < previous:
        report.errors.append((number, f"not sorted: {query!r} comes after {previous!r}"))
    predictions = cells[1:]
    if len(predictions) != DEPTH:
        report.errors.append((number, f"{len(predictions)} predictions, exactly {DEPTH} required"))
    invalid = unknown = 0
    first_repeat = None
    met: set[str] = set()
    for pred in predictions:
        if pred in met:
            first_repeat = first_repeat if first_repeat is not None else pred
            continue
        met.add(pred)
        if not is_valid_id(pred):
            invalid += 1
            if invalid <= MAX_PER_LINE:
                report.errors.append((number, f"invalid ID {_shown(pred)}"))
        elif pred not in db_ids:
            unknown += 1
            if unknown <= MAX_PER_LINE:
                report.errors.append((number, f"ID {pred!r} is not in the database manifest"))
    for count, what in ((invalid, "invalid IDs"), (unknown, "IDs not in the database manifest")):
        if count > MAX_PER_LINE:
            report.errors.append((number, f"{count - MAX_PER_LINE} more {what} on this line"))
    if first_repeat is not None:
        report.errors.append((number, f"ID {first_repeat!r} repeated"))


def check_ground_truth(path: str | Path, db_manifest: str | Path | None = None,
                       query_manifest: str | Path | None = None) -> CheckReport:
    """Check a ground-truth file line by line, reporting every problem with its line.

    With ``db_manifest``, relevant IDs must be database images (and
    ``query_manifest``, or ``queries.csv`` beside it, gives the query set).
    """
    path = Path(path)
    db_ids = set(read_manifest(db_manifest).ids) if db_manifest is not None else None
    if query_manifest is None and db_manifest is not None and exists_as_input(Path(db_manifest).parent / "queries.csv"):
        query_manifest = Path(db_manifest).parent / "queries.csv"
    query_ids = set(read_manifest(query_manifest).ids) if query_manifest is not None else None
    report = CheckReport(path=path)
    reader = LineReader(path, "ground truth")
    rows = [(number, line) for number, line in reader]
    cells_of = [(number, [c.strip() for c in line.split(",")]) for number, line in rows if line.strip() != ""]
    for number, line in rows:
        if line.strip() == "":
            report.warnings.append((number, "blank line"))
    first_queries = [cells[0] for _, cells in cells_of[1:] if cells]
    if cells_of and is_header([c for c in cells_of[0][1] if c], first_queries):
        cells_of = cells_of[1:]
    else:
        report.warnings.append((None, "no header row (the challenge's file starts with "
                                      "'Validation Image ID,Training Image ID')"))
    seen: dict[str, int] = {}
    for number, cells in cells_of:
        report.n_lines += 1
        while len(cells) > 1 and cells[-1] == "":
            cells.pop()
        query, relevant = cells[0], cells[1:]
        if not is_valid_id(query):
            report.errors.append((number, f"invalid query ID {_shown(query)}"))
            continue
        if query in seen:
            report.errors.append((number, f"query {query!r} already on line {seen[query]}"))
        seen.setdefault(query, number)
        if query_ids is not None and query not in query_ids:
            report.errors.append((number, f"query {query!r} is not in the query set"))
        if not relevant:
            report.errors.append((number, f"query {query!r} has no relevant ID"))
        met: set[str] = set()
        unknown = 0
        for cell in relevant:
            if not is_valid_id(cell):
                report.errors.append((number, f"invalid relevant ID {_shown(cell)}"))
            elif cell in met:
                report.errors.append((number, f"relevant ID {cell!r} listed twice"))
            elif db_ids is not None and cell not in db_ids:
                unknown += 1
                if unknown <= MAX_PER_LINE:
                    report.errors.append((number, f"relevant ID {cell!r} is not in the database manifest"))
            met.add(cell)
        if unknown > MAX_PER_LINE:
            report.errors.append((number, f"{unknown - MAX_PER_LINE} more relevant IDs not in the database manifest"))
        if len(met) > DEPTH:
            report.warnings.append((number, f"{len(met)} relevant IDs: AP@7 divides by min(|G|, 7) = 7"))
    _line_end_warnings(report, reader)
    if report.n_lines == 0:
        report.errors.append((None, "no ground-truth rows"))
    if query_ids is not None:
        absent = sorted(query_ids - set(seen))
        if absent:
            report.warnings.append((None, f"{len(absent)} queries of the query set have no ground truth, "
                                          f"e.g. {absent[0]!r}"))
    return report


def _line_end_warnings(report: CheckReport, reader: LineReader) -> None:
    """What the reader tolerated of the file as a whole: a BOM, CRLF or CR line ends."""
    if reader.bom:
        report.warnings.insert(0, (1, "UTF-8 byte order mark at the start of the file"))
    if reader.first_crlf is not None:
        report.warnings.append((reader.first_crlf, "CRLF line ends"))
    if reader.first_cr is not None:
        report.warnings.append((reader.first_cr, "CR line ends"))


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def first_error(report: CheckReport) -> BadInput:
    line, reason = report.errors[0]
    more = f" (and {len(report.errors) - 1} more problems)" if len(report.errors) > 1 else ""
    return BadInput(report.path, line, reason + more)
