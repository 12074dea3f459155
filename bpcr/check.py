"""`bpcr check`: what a team runs before uploading a submission.

Stricter than the scoring reader, and it reports every problem with its line
instead of stopping at the first: every query of the query set present once,
exactly 7 distinct IDs per line, every ID in the database manifest, lines
sorted by query ID, no header. Cosmetic departures (spaces after commas, BOM,
CRLF, a trailing comma) are reported as warnings: the scorer tolerates them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInput
from .ids import is_valid_id
from .manifest import read_manifest
from .textio import read_lines

DEPTH = 7
MAX_REPORTED = 50


@dataclass
class CheckReport:
    path: Path
    errors: list[tuple[int | None, str]] = field(default_factory=list)
    warnings: list[tuple[int | None, str]] = field(default_factory=list)
    n_lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_submission(path: str | Path, db_manifest: str | Path, query_manifest: str | Path | None = None) -> CheckReport:
    """Check ``path`` against the database manifest and the query set.

    The query set is ``query_manifest``, or ``queries.csv`` beside the database
    manifest when that exists; without one, query coverage is not checked.
    """
    path = Path(path)
    db_manifest = Path(db_manifest)
    db_ids = set(read_manifest(db_manifest).ids)
    if query_manifest is None and (db_manifest.parent / "queries.csv").is_file():
        query_manifest = db_manifest.parent / "queries.csv"
    query_ids = set(read_manifest(query_manifest).ids) if query_manifest is not None else None
    report = CheckReport(path=path)
    raw = path.read_bytes() if path.is_file() else b""
    lines = read_lines(path)  # raises on missing file, binary data, bad UTF-8
    if raw.startswith(b"\xef\xbb\xbf"):
        report.warnings.append((1, "UTF-8 byte order mark at the start of the file"))
    if b"\r\n" in raw:
        report.warnings.append((None, "CRLF line ends"))
    seen: dict[str, int] = {}
    previous = None
    for number, line in enumerate(lines, start=1):
        if line.strip() == "":
            report.warnings.append((number, "blank line"))
            continue
        report.n_lines += 1
        cells = line.split(",")
        if any(c != c.strip() for c in cells):
            report.warnings.append((number, "spaces around commas"))
        cells = [c.strip() for c in cells]
        if len(cells) > 1 and cells[-1] == "":
            report.warnings.append((number, "trailing comma"))
            cells.pop()
        query = cells[0]
        if not is_valid_id(query):
            hint = " (a header row? submissions have none)" if number == 1 else ""
            report.errors.append((number, f"invalid query ID {query!r}{hint}"))
            continue
        if query in seen:
            report.errors.append((number, f"query {query!r} already on line {seen[query]}"))
        seen.setdefault(query, number)
        if query_ids is not None and query not in query_ids:
            report.errors.append((number, f"query {query!r} is not in the query set"))
        if previous is not None and query < previous:
            report.errors.append((number, f"not sorted: {query!r} comes after {previous!r}"))
        previous = query
        predictions = cells[1:]
        if len(predictions) != DEPTH:
            report.errors.append((number, f"{len(predictions)} predictions, exactly {DEPTH} required"))
        for pred in predictions:
            if not is_valid_id(pred):
                report.errors.append((number, f"invalid ID {pred!r}"))
            elif pred not in db_ids:
                report.errors.append((number, f"ID {pred!r} is not in the database manifest"))
        repeated = sorted({p for p in predictions if predictions.count(p) > 1})
        if repeated:
            report.errors.append((number, f"ID {repeated[0]!r} repeated"))
    if report.n_lines == 0:
        report.errors.append((None, "empty submission"))
    if query_ids is not None:
        absent = sorted(query_ids - set(seen))
        if absent:
            report.errors.append((None, f"{len(absent)} queries of the query set missing, e.g. {absent[0]!r}"))
    return report


def first_error(report: CheckReport) -> BadInput:
    line, reason = report.errors[0]
    more = f" (and {len(report.errors) - 1} more problems)" if len(report.errors) > 1 else ""
    return BadInput(report.path, line, reason + more)
