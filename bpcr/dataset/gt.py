"""Ground truth in the challenge format (DESIGN.md, "Ground truth").

::

    Validation Image ID,Training Image ID
    v000101,n0292431
    v000104,n0185640,n0535953,n0186115

Tolerated: UTF-8 BOM, CRLF, spaces around commas, trailing empty cells, a
missing header row. Errors: a query listed twice, a row with no relevant ID,
a relevant ID listed twice in one row, an invalid ID.

The header is recognised by its shape, not its text. The first non-blank row
is the header when its first cell is not empty, holds no ASCII digit, and
either

- some cell of it is not a valid ID (column names with spaces, such as the
  challenge's ``Validation Image ID,Training Image ID``), or
- every later row's first cell holds a digit (column names that happen to be
  valid IDs, such as ``query,relevant`` or ``qid,docid``, above image IDs such
  as ``v000101``, which all carry a number).

Otherwise it is data, read and checked like every other row: a file whose
query IDs carry no digits (``alpha``, ``beta``) never loses its first row,
and a first row such as ``v 1,n1`` is an invalid ID, not a header.
"""
from __future__ import annotations

import re
from pathlib import Path

from bpcr.errors import BadInput
from bpcr.io.ids import check_id, is_valid_id
from bpcr.io.textio import read_lines

HEADER = "Validation Image ID,Training Image ID"

_DIGIT = re.compile(r"[0-9]")


def _cells(line: str) -> list[str]:
    cells = [c.strip() for c in line.split(",")]
    while cells and cells[-1] == "":
        cells.pop()
    return cells


def is_header(first: list[str], later_queries: list[str]) -> bool:
    """The rule of the module docstring: is ``first`` (a row's cells) a header above rows whose first cells are ``later_queries``?"""
    if not first or first[0] == "" or _DIGIT.search(first[0]):
        return False
    if not all(is_valid_id(cell) for cell in first):
        return True
    return all(_DIGIT.search(query) for query in later_queries)


def read_ground_truth(path: str | Path) -> dict[str, list[str]]:
    """Read a ground-truth file into ``{query_id: [relevant db IDs]}``."""
    path = Path(path)
    rows = [(number, _cells(line)) for number, line in enumerate(read_lines(path, "ground truth"), start=1)
            if line.strip() != ""]
    if rows and is_header(rows[0][1], [cells[0] for _, cells in rows[1:] if cells]):
        rows = rows[1:]
    gt: dict[str, list[str]] = {}
    for number, cells in rows:
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
