"""Ground truth in the challenge format (DESIGN.md, "Ground truth").

::

    Validation Image ID,Training Image ID
    v000101,n0292431
    v000104,n0185640,n0535953,n0186115

Tolerated: UTF-8 BOM, CRLF, spaces around commas, trailing empty cells, a
missing header row. Errors: a query listed twice, a row with no relevant ID,
a relevant ID listed twice in one row, an invalid ID.
"""
from __future__ import annotations

from pathlib import Path

from .errors import BadInput
from .ids import check_id
from .textio import read_lines

HEADER = "Validation Image ID,Training Image ID"


def _cells(line: str) -> list[str]:
    cells = [c.strip() for c in line.split(",")]
    while cells and cells[-1] == "":
        cells.pop()
    return cells


def read_ground_truth(path: str | Path) -> dict[str, list[str]]:
    """Read a ground-truth file into ``{query_id: [relevant db IDs]}``."""
    path = Path(path)
    gt: dict[str, list[str]] = {}
    first_row = True
    for number, line in enumerate(read_lines(path), start=1):
        if line.strip() == "":
            continue
        cells = _cells(line)
        if first_row and cells and " " in cells[0]:
            first_row = False
            continue  # the header row: its first cell has a space, which no ID can
        first_row = False
        if not cells or cells[0] == "":
            raise BadInput(path, number, "row has no query ID")
        query = check_id(cells[0], path, number)
        if query in gt:
            raise BadInput(path, number, f"query {query!r} listed twice")
        relevant = cells[1:]
        if not relevant:
            raise BadInput(path, number, f"query {query!r} has no relevant ID")
        seen: set[str] = set()
        for cell in relevant:
            if cell == "":
                raise BadInput(path, number, "empty cell between relevant IDs")
            check_id(cell, path, number)
            if cell in seen:
                raise BadInput(path, number, f"relevant ID {cell!r} listed twice for query {query!r}")
            seen.add(cell)
        gt[query] = relevant
    if not gt:
        raise BadInput(path, None, "no ground-truth rows")
    return gt


def write_ground_truth(path: str | Path, gt: dict[str, list[str]]) -> None:
    """Write ``gt`` in the challenge format, queries sorted, with the header row."""
    rows = [HEADER]
    for query in sorted(gt):
        if not gt[query]:
            raise ValueError(f"query {query!r} has no relevant ID")
        rows.append(",".join([check_id(query), *(check_id(r) for r in gt[query])]))
    Path(path).write_text("\n".join(rows) + "\n", encoding="utf-8")
