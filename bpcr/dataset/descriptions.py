"""The descriptions CSV of a dataset (``bpcr prepare --descriptions``): read, checked, linked to the images.

Read strictly as UTF-8 (bad bytes are :class:`BadInput`):

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
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from bpcr.errors import BadInput
from bpcr.io.ids import is_valid_id
from bpcr.io.textio import read_lines


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


def read_descriptions(path: Path, db_stems: set[str]) -> tuple[dict[str, str], DescriptionStats]:
    """Image ID -> description, and what the file held; BadInput when it is not a descriptions CSV.

    ``db_stems``: the file stems of the database folder, to recognise a missing header row.
    """
    stats = DescriptionStats(file=str(path))
    lines = read_lines(path, "descriptions")
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


def link_descriptions(descriptions: dict[str, str], stats: DescriptionStats, db_ids: set[str],
                      examples: int) -> None:
    """Count in ``stats`` the rows without a usable image and the usable images without a row.

    ``examples``: how many IDs of each to keep in ``stats``.
    """
    if stats.file is None:
        return
    orphans = sorted(set(descriptions) - db_ids)
    stats.without_image = len(orphans)
    stats.without_image_examples = orphans[:examples]
    missing = sorted(db_ids - set(descriptions))
    stats.images_without_description = len(missing)
    stats.images_without_description_examples = missing[:examples]
    stats.used = len(db_ids) - len(missing)


def description_warnings(d: DescriptionStats) -> list[str]:
    """One line per kind of skipped or repeated record, naming the first line of each."""
    found = []
    if d.file is not None:
        if d.invalid_id:
            found.append(f"{d.file}: {d.invalid_id} rows with an invalid ID skipped (first on line {d.invalid_id_first_line})")
        if d.bad_columns:
            found.append(f"{d.file}: {d.bad_columns} rows with too many columns skipped "
                         f"(first on line {d.bad_columns_first_line})")
        if d.duplicates:
            found.append(f"{d.file}: {d.duplicates} repeated IDs, first row kept (first repeat on line "
                         f"{d.duplicates_first_line})")
    return found
