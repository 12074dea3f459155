"""bpcr.dataset.prepare and `bpcr prepare`: a messy dataset (tests/helpers/messy_dataset.py), every finding counted by hand."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from bpcr.errors import BadInput
from bpcr.dataset.images import MAX_PIXELS
from bpcr.dataset.manifest import read_manifest
from bpcr.dataset.options import PrepareOptions
from bpcr.dataset.prepare import CACHE_NAME, prepare
from tests.helpers import ROOT
from tests.helpers.images import noise
from tests.helpers.messy_dataset import make_dataset, run


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path)


@pytest.mark.slow
def test_counts_manifests_and_reports(dataset):
    summary = run(dataset, workers=2)  # the process pool path
    out = dataset["out"]
    db = summary.database
    assert (db.seen, db.ignored, db.usable) == (16, 1, 7)  # the subfolder is ignored, .DS_Store is listed
    assert db.rejected == {"ID has two files": 2, "decompression bomb": 1, "hidden file": 1, "invalid ID in file name": 1,
                           "not an image (or not a supported format)": 1, "not an image suffix": 1,
                           "truncated image data": 1, "zero-byte file": 1}
    assert db.notes == {"CMYK converted": 1, "EXIF-rotated": 1, "I;16 scaled to 8-bit": 1,
                        "P transparency composited on white": 1, "PNG data behind .jpg suffix": 1}
    q = summary.queries
    assert (q.seen, q.usable, q.rejected) == (3, 2, {"truncated image data": 1})
    assert (summary.decoded, summary.cached) == (14, 0)

    manifest = read_manifest(out / "database.csv")
    assert manifest.ids == ["n1", "n2", "n3", "n4", "n5", "n6", "n7"]
    assert list(zip(manifest.widths, manifest.heights)) == [(32, 24), (12, 10), (8, 6), (9, 5), (7, 3), (11, 13),
                                                             (20, 40)]
    assert manifest.descriptions == ["Maybelline, Super Stay, lipstick 24h", "Шампунь для волос 250 мл", "",
                                     "rouge,à lèvres,mat", "", "", ""]
    assert manifest.paths[0] == (dataset["db"] / "n1.jpg").resolve()
    queries = read_manifest(out / "queries.csv")
    assert (queries.ids, queries.descriptions) == (["v1", "v2"], ["", ""])
    assert (out / "database.csv").read_text().splitlines()[1] == (
        'n1,../data/database/n1.jpg,32,24,"Maybelline, Super Stay, lipstick 24h"')

    with open(out / "rejected.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["set", "id", "path", "reason"]
    assert rows[1:] == [
        ["database", "", "../data/database/.DS_Store", "hidden file: name starts with a dot"],
        ["database", "", "../data/database/bad name.jpg", "invalid ID in file name: 'bad name'"],
        ["database", "n10", "../data/database/n10.png", f"decompression bomb: 225000000 pixels > limit {MAX_PIXELS}"],
        ["database", "n11", "../data/database/n11.jpg", "not an image (or not a supported format)"],
        ["database", "n12", "../data/database/n12.jpg", "ID has two files: n12.jpg, n12.png"],
        ["database", "n12", "../data/database/n12.png", "ID has two files: n12.jpg, n12.png"],
        ["database", "n8", "../data/database/n8.jpg", "zero-byte file"],
        ["database", "n9", "../data/database/n9.jpg", "truncated image data"],
        ["database", "readme", "../data/database/readme.txt", "not an image suffix: .txt"],
        ["queries", "v3", "../data/queries/v3.jpg", "truncated image data"],
    ]
    assert (out / "ground_truth.csv").read_bytes() == dataset["gt"].read_bytes()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["database"]["usable"] == 7 and saved["decoded"] == 14


@pytest.mark.slow
def test_ground_truth_findings(dataset):
    summary = run(dataset)
    g = summary.ground_truth
    assert (g.queries, g.relevant) == (4, 5)
    assert (g.queries_without_image, g.queries_without_image_examples) == (2, ["v3", "v4"])
    assert (g.relevant_without_image, g.relevant_without_image_examples) == (1, ["n8"])
    assert (g.queries_without_usable_relevant, g.usable_queries_not_in_gt) == (1, 0)
    assert any("2 queries have no usable query image (e.g. v3, v4)" in w for w in summary.warnings)


def test_rerun_uses_cache_and_redecodes_only_changes(dataset):
    first = run(dataset)
    out = dataset["out"]
    manifest_bytes = (out / "database.csv").read_bytes()
    second = run(dataset)
    assert (second.decoded, second.cached) == (0, 14)
    assert (out / "database.csv").read_bytes() == manifest_bytes
    assert second.database.rejected == first.database.rejected

    Image.fromarray(noise(50, 60, 9)).save(dataset["db"] / "n1.jpg")  # changed size and mtime
    (dataset["db"] / "n6.jpg").unlink()
    third = run(dataset)
    assert (third.decoded, third.cached) == (1, 12)
    manifest = read_manifest(out / "database.csv")
    assert manifest.ids[0] == "n1" and (manifest.widths[0], manifest.heights[0]) == (60, 50)
    assert "n6" not in manifest.ids
    entries = json.loads((out / CACHE_NAME).read_text())["entries"]
    assert "../data/database/n6.jpg" not in entries and len(entries) == 13


def test_damaged_cache_is_rebuilt(dataset):
    run(dataset)
    (dataset["out"] / CACHE_NAME).write_text("{not json")
    assert run(dataset).decoded == 14
    assert run(dataset).decoded == 0


def test_without_descriptions_and_ground_truth(dataset):
    summary = prepare(dataset["db"], None, dataset["queries"], None, dataset["out"], PrepareOptions(workers=1))
    assert summary.ground_truth is None and summary.descriptions.file is None
    assert read_manifest(dataset["out"] / "database.csv").descriptions == [""] * 7
    assert not (dataset["out"] / "ground_truth.csv").exists()


@pytest.mark.slow
def test_cli_end_to_end_and_rerun(dataset, cli):
    args = ["prepare", "--db", dataset["db"], "--descriptions", dataset["descriptions"], "--queries",
            dataset["queries"], "--gt", dataset["gt"], "--out", dataset["out"], "--workers", "1"]
    result = cli(*args)
    assert result.code == 0, result.err
    assert "decoded 14 images, 0 from cache" in result.out
    assert "truncated" in result.out
    assert "warning: " + str(dataset["gt"]) + ": 2 queries have no usable query image (e.g. v3, v4)" in result.err
    for name in ("database.csv", "queries.csv", "rejected.csv", "summary.json", "ground_truth.csv", CACHE_NAME):
        assert (dataset["out"] / name).is_file()
    again = cli(*args)
    assert again.code == 0
    assert json.loads((dataset["out"] / "summary.json").read_text())["decoded"] == 0


@pytest.mark.slow
def test_cli_bad_input_is_one_line(dataset, cli, tmp_path):
    missing = tmp_path / "nowhere"
    result = cli("prepare", "--db", missing, "--queries", dataset["queries"], "--out", dataset["out"])
    assert result.code == 2
    assert result.err.strip().splitlines() == [f"error: {missing}: folder not found"]
    dataset["descriptions"].write_bytes(b"id,description\nn1,ok\n\xff\xfe\n")
    result = cli("prepare", "--db", dataset["db"], "--descriptions", dataset["descriptions"],
                 "--queries", dataset["queries"], "--out", dataset["out"])
    assert result.code == 2
    assert result.err.strip().splitlines() == [f"error: {dataset['descriptions']}:3: not valid UTF-8 (byte 0xff)"]
    result = cli("prepare", "--demo", "--db", dataset["db"], "--out", dataset["out"])
    assert (result.code, result.err.strip()) == (2, "error: --demo makes its own dataset; drop --db")
    result = cli("prepare", "--out", dataset["out"])
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    (dataset["queries"] / "v1.jpg").unlink()
    (dataset["queries"] / "v2.jpg").unlink()
    (dataset["queries"] / "v3.jpg").unlink()
    result = cli("prepare", "--db", dataset["db"], "--queries", dataset["queries"], "--out", dataset["out"])
    assert (result.code, result.err.strip()) == (2, f"error: {dataset['queries']}: no image files found")


def test_hidden_files_are_listed_in_rejected_csv_never_read(dataset):
    Image.fromarray(noise(16, 16, 9)).save(dataset["queries"] / ".v9.jpg")  # a real image, hidden
    (dataset["queries"] / "._v1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (dataset["queries"] / ".thumbnails").mkdir()  # a hidden folder is a folder: ignored
    summary = run(dataset)
    q = summary.queries
    assert (q.seen, q.ignored, q.usable) == (5, 1, 2)
    assert q.rejected == {"hidden file": 2, "truncated image data": 1}
    assert summary.decoded == 14  # hidden files are never decoded
    with open(dataset["out"] / "rejected.csv", newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row[0] == "queries"]
    assert rows == [["queries", "", "../data/queries/._v1.jpg", "hidden file: name starts with a dot"],
                    ["queries", "", "../data/queries/.v9.jpg", "hidden file: name starts with a dot"],
                    ["queries", "v3", "../data/queries/v3.jpg", "truncated image data"]]
    assert read_manifest(dataset["out"] / "queries.csv").ids == ["v1", "v2"]


def test_a_folder_of_hidden_files_only_has_no_images(dataset):
    for path in dataset["queries"].iterdir():
        path.rename(path.with_name(f".{path.name}"))
    with pytest.raises(BadInput, match="no image files found"):
        run(dataset)


@pytest.mark.slow
def test_python_m_bpcr_exit_code(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bpcr", "prepare", "--db", str(tmp_path / "none"), "--queries",
                           str(tmp_path), "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'none'}: folder not found"]
    assert done.stdout == ""


@pytest.mark.slow
def test_demo_dataset_messy_files_are_caught(tmp_path):
    from bpcr.demo import generate_demo

    demo = generate_demo(tmp_path / "demo", seed=0, n_products=5, n_distractors=20, n_queries=3, workers=1)
    root = tmp_path / "demo"
    summary = prepare(root / "database", root / "descriptions.csv", root / "queries", root / "ground_truth.csv",
                      root / "prepared", PrepareOptions(workers=1))
    with open(root / "prepared" / "rejected.csv", newline="", encoding="utf-8") as handle:
        rejected_ids = sorted(row["id"] for row in csv.DictReader(handle))
    assert rejected_ids == sorted(demo.unusable)
    assert summary.database.usable == demo.n_database - len(demo.unusable)
    assert summary.queries.usable == demo.n_queries
    assert set(demo.missing_descriptions) <= set(summary.descriptions.images_without_description_examples)


def test_bad_ground_truth_is_bad_input(dataset):
    dataset["gt"].write_text("Validation Image ID,Training Image ID\nv1,n1\nv1,n2\n")
    with pytest.raises(BadInput) as caught:
        run(dataset)
    assert str(caught.value) == f"{dataset['gt']}:3: query 'v1' listed twice"
    assert not dataset["out"].exists()


def test_a_symbolic_link_loop_rejects_that_file_only(tmp_path):
    db, queries = tmp_path / "db", tmp_path / "q"
    db.mkdir()
    queries.mkdir()
    Image.fromarray(noise(40, 40)).save(db / "n1.jpg")
    Image.fromarray(noise(40, 40, 1)).save(queries / "v1.jpg")
    os.symlink("n3.jpg", db / "n2.jpg")  # n2 -> n3 -> n2
    os.symlink("n2.jpg", db / "n3.jpg")
    os.symlink("self.jpg", queries / "self.jpg")
    summary = prepare(db, None, queries, None, tmp_path / "out", PrepareOptions(workers=1))
    assert summary.database.usable == 1 and summary.queries.usable == 1
    rows = (tmp_path / "out" / "rejected.csv").read_text().splitlines()
    assert rows[1:] == ["database,n2,../db/n2.jpg,cannot be opened: too many levels of symbolic links",
                        "database,n3,../db/n3.jpg,cannot be opened: too many levels of symbolic links",
                        "queries,self,../q/self.jpg,cannot be opened: too many levels of symbolic links"]


def test_rejects_csv_never_runs_as_a_spreadsheet_formula(tmp_path):
    db, queries = tmp_path / "db", tmp_path / "q"
    db.mkdir()
    queries.mkdir()
    Image.fromarray(noise(40, 40)).save(db / "n1.jpg")
    Image.fromarray(noise(40, 40, 1)).save(queries / "v1.jpg")
    (db / "=cmd|calc!A0.jpg").write_bytes(b"x")
    (db / "+1.jpg").write_bytes(b"x")
    (db / "@sum.jpg").write_bytes(b"x")
    prepare(db, None, queries, None, tmp_path / "out", PrepareOptions(workers=1))
    with open(tmp_path / "out" / "rejected.csv", newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells
    assert "'=cmd|calc!A0" in " ".join(cells) or any(c.endswith("=cmd|calc!A0.jpg") for c in cells)
