"""Manifests of usable images, written by ``prepare`` and read by every later stage.

A manifest is a CSV with the header ``id,path,width,height,description``; the
path is relative to the manifest's own folder (POSIX separators, ``..`` allowed),
so a dataset and its prepared folder can be moved together. Width and height are after EXIF orientation.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

from bpcr.errors import BadInput
from bpcr.io.fileio import write_text_atomic
from bpcr.io.ids import check_id
from bpcr.io.textio import iter_lines, parse_int

COLUMNS = ["id", "path", "width", "height", "description"]


@dataclass
class Manifest:
    path: Path
    ids: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # absolute
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self) -> dict[str, int]:
        return {image_id: row for row, image_id in enumerate(self.ids)}


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest, strictly: the header, 5 columns per row, valid unique IDs, positive integer sizes.

    The CSV is parsed in strict mode, streamed: a quote that is never closed
    is refused at the line that opens it rather than swallowing the rows after
    it into one description.
    """
    path = Path(path)
    root = str(path.parent.resolve())
    manifest = Manifest(path=path)
    seen: set[str] = set()
    # csv.reader reads physical lines and counts them in line_num; a record starts after the previous one.
    lines = (line + "\n" for _, line in iter_lines(path, "manifest"))
    reader = csv.reader(lines, strict=True)
    start = 1
    header = True
    try:
        for row in reader:
            number, start = start, reader.line_num + 1
            if header:
                if row != COLUMNS:
                    raise BadInput(path, number, f"manifest header must be {','.join(COLUMNS)}")
                header = False
                continue
            if not row:
                continue
            _add_row(manifest, path, number, row, root, seen)
    except csv.Error as exc:
        raise BadInput(path, start, _csv_problem(exc)) from None
    if header:
        raise BadInput(path, None, "empty manifest")
    return manifest


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "unexpected end of data" in text:
        return "a quote opened on this line is never closed"
    if "field larger than field limit" in text:
        return f"a field longer than {csv.field_size_limit()} characters (a quote opened on this line never closed?)"
    return f"malformed CSV: {text}"


def _add_row(manifest: Manifest, path: Path, number: int, row: list[str], root: str, seen: set[str]) -> None:
    if len(row) != len(COLUMNS):
        raise BadInput(path, number, f"expected {len(COLUMNS)} columns, found {len(row)}")
    image_id = check_id(row[0], path, number)
    if image_id in seen:
        raise BadInput(path, number, f"ID {image_id!r} listed twice")
    seen.add(image_id)
    if row[1] == "":
        raise BadInput(path, number, "empty image path")
    sizes = []
    for text in row[2:4]:
        try:
            sizes.append(parse_int(text, "size", path, number))
        except BadInput:
            raise BadInput(path, number, f"width and height must be integers, found {text[:20]!r}") from None
    if min(sizes) < 1:
        raise BadInput(path, number, f"width and height must be positive integers, found {sizes[0]} x {sizes[1]}")
    manifest.ids.append(image_id)
    # String joins: three Path objects per row cost seconds on a 10^6-image manifest.
    rel = row[1] if os.sep == "/" else os.path.join(*PurePosixPath(row[1]).parts)
    manifest.paths.append(Path(os.path.normpath(os.path.join(root, rel))))
    manifest.widths.append(sizes[0])
    manifest.heights.append(sizes[1])
    manifest.descriptions.append(row[4])


def write_manifest(path: str | Path, ids: Sequence[str], paths: Sequence[Path], widths: Sequence[int],
                   heights: Sequence[int], descriptions: Sequence[str]) -> None:
    """Write rows sorted by ID, paths made relative to the manifest's folder."""
    path = Path(path)
    root = path.parent.resolve()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(zip(ids, paths, widths, heights, descriptions), key=lambda r: r[0]):
        rel = Path(os.path.relpath(Path(row[1]).resolve(), root))
        writer.writerow([row[0], rel.as_posix(), int(row[2]), int(row[3]), row[4]])
    write_text_atomic(path, buf.getvalue())
