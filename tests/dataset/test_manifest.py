"""Manifests (bpcr/dataset/manifest.py): rows sorted by ID, paths relative to the manifest's folder."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.dataset.manifest import read_manifest, write_manifest


def test_round_trip_sorted_with_relative_paths(tmp_path):
    images = tmp_path / "data" / "db"
    path = tmp_path / "prepared" / "database.csv"
    path.parent.mkdir()
    write_manifest(path, ["n2", "n1"], [images / "n2.png", images / "n1.jpg"], [30, 10], [40, 20],
                   ["blue, shampoo", 'say "red"'])
    assert path.read_text() == ("id,path,width,height,description\n"
                                "n1,../data/db/n1.jpg,10,20,\"say \"\"red\"\"\"\n"
                                "n2,../data/db/n2.png,30,40,\"blue, shampoo\"\n")
    manifest = read_manifest(path)
    assert manifest.ids == ["n1", "n2"]
    assert manifest.paths == [images / "n1.jpg", images / "n2.png"]
    assert (manifest.widths, manifest.heights) == ([10, 30], [20, 40])
    assert manifest.descriptions == ['say "red"', "blue, shampoo"]
    assert manifest.index() == {"n1": 0, "n2": 1} and len(manifest) == 2


def test_moved_together_the_paths_follow(tmp_path):
    path = tmp_path / "a" / "database.csv"
    path.parent.mkdir()
    write_manifest(path, ["n1"], [tmp_path / "a" / "img" / "n1.jpg"], [1], [1], [""])
    moved = tmp_path / "b"
    (tmp_path / "a").rename(moved)
    assert read_manifest(moved / "database.csv").paths == [moved / "img" / "n1.jpg"]


def test_crlf_bom_and_blank_lines_tolerated(tmp_path):
    path = tmp_path / "database.csv"
    path.write_bytes(b"\xef\xbb\xbfid,path,width,height,description\r\nn1,n1.jpg,1,2,\"two\r\nlines\"\r\n\r\n")
    manifest = read_manifest(path)
    assert manifest.ids == ["n1"] and manifest.descriptions == ["two\nlines"]


def test_error_names_file_and_line(tmp_path):
    path = tmp_path / "database.csv"
    path.write_text("id,path,width,height,description\nn1,n1.jpg,1,1,\nn1,n1.png,1,1,\n")
    with pytest.raises(BadInput) as info:
        read_manifest(path)
    assert (info.value.file, info.value.line) == (str(path), 3) and "listed twice" in info.value.reason


HEADER = "id,path,width,height,description\n"


@pytest.mark.parametrize("rows,line,reason", [
    ('n1,a.jpg,4,4,"red\nn2,b.jpg,4,4,blue\nn3,c.jpg,4,4,green\n', 2, "a quote opened on this line is never closed"),
    ('n1,a.jpg,4,4,"red"x\n', 2, "malformed CSV"),
    ("n1,a.jpg,\uff14,4,red\n", 2, "width and height must be integers"),
    ("n1,a.jpg,4,1_0,red\n", 2, "width and height must be integers"),
    ("n1,a.jpg,4,0,red\n", 2, "width and height must be positive integers"),
])
def test_strict_rows(tmp_path, rows, line, reason):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    with pytest.raises(BadInput) as info:
        read_manifest(path)
    assert (info.value.file, info.value.line) == (str(path), line) and reason in info.value.reason


def test_quoted_line_breaks_and_commas_are_kept(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + 'n1,a.jpg,4,4,"red,\nmatte"\nn2,b.jpg,+5,4,\n')
    manifest = read_manifest(path)
    assert manifest.descriptions == ["red,\nmatte", ""] and manifest.widths == [4, 5]
