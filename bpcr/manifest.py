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

from .errors import BadInput
from .fileio import write_text_atomic
from .ids import check_id
from .textio import read_lines

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
    path = Path(path)
    lines = read_lines(path)
    if not lines:
        raise BadInput(path, None, "empty manifest")
    rows = list(csv.reader(io.StringIO("\n".join(lines) + "\n")))
    if rows[0] != COLUMNS:
        raise BadInput(path, 1, f"manifest header must be {','.join(COLUMNS)}")
    root = path.parent.resolve()
    manifest = Manifest(path=path)
    seen: set[str] = set()
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(COLUMNS):
            raise BadInput(path, number, f"expected {len(COLUMNS)} columns, found {len(row)}")
        image_id = check_id(row[0], path, number)
        if image_id in seen:
            raise BadInput(path, number, f"ID {image_id!r} listed twice")
        seen.add(image_id)
        if row[1] == "":
            raise BadInput(path, number, "empty image path")
        rel = PurePosixPath(row[1])
        try:
            width, height = int(row[2]), int(row[3])
        except ValueError:
            raise BadInput(path, number, "width and height must be integers") from None
        manifest.ids.append(image_id)
        manifest.paths.append(Path(os.path.normpath(root.joinpath(*rel.parts))))
        manifest.widths.append(width)
        manifest.heights.append(height)
        manifest.descriptions.append(row[4])
    return manifest


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
