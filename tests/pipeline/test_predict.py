"""`bpcr predict`: a config's frozen pipeline on a fresh folder of query photos, bad ones included."""
from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from bpcr.evaluation.check import check_submission
from bpcr.pipeline.runner import run_pipeline

pytestmark = pytest.mark.slow  # module fixtures build a dataset, a network or a pipeline run

CHAIN = """[[refine]]
name = "refined"
input = "mac"
[[rerank]]
name = "sift"
input = "mac"
top = 5
workers = 1
[[ensemble]]
name = "ens"
inputs = ["mac", "refined", "sift"]
method = "rrf"
tune = true
folds = 2
steps = 4
"""


@pytest.fixture(scope="module")
def tiny(tiny_demo_config) -> str:
    return tiny_demo_config(6, one_worker=True, then=CHAIN)


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny):
    """The tiny config after `bpcr run`: its folder (config, work, runs)."""
    folder = tmp_path_factory.mktemp("predict")
    (folder / "tiny.toml").write_text(tiny)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        run_pipeline("tiny.toml", log=lambda _: None)
    return folder


def _lines(path: Path) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for cells in (line.split(",") for line in path.read_text().splitlines())}


def _photos(ran: Path, folder: Path, good: int) -> list[str]:
    """``good`` demo queries copied to ``folder``, plus a truncated JPEG, a text file behind .png, and notes.txt."""
    folder.mkdir()
    queries = sorted((ran / "work" / "queries").iterdir())
    for photo in queries[:good]:
        shutil.copy(photo, folder / photo.name)
    whole = queries[-1].read_bytes()
    assert whole[:2] == b"\xff\xd8"  # a JPEG, cut in the middle of its pixel data
    (folder / "v900001.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "v900002.png").write_text("not an image\n")
    (folder / "notes.txt").write_text("not a query\n")
    return [p.stem for p in queries[:good]]


def test_predict_answers_every_query_as_the_run_did(ran, tmp_path, cli, monkeypatch):
    good = _photos(ran, tmp_path / "photos", 4)
    monkeypatch.chdir(ran)
    out = tmp_path / "out" / "answers.csv"
    result = cli("predict", "tiny.toml", tmp_path / "photos", out)
    assert result.code == 0, result.err
    assert "s per query" in result.out

    answers = _lines(out)
    assert list(answers) == sorted([*good, "v900001", "v900002"])
    report = check_submission(out, ran / "work" / "prepared" / "database.csv", query_ids=answers)
    assert report.ok and not report.warnings, (report.errors, report.warnings)
    # The good queries: exactly the lines `bpcr run` wrote for them, through search, refine, rerank and the
    # tuned ensemble (weights reused, not tuned again).
    for name in ("mac", "refined", "sift"):
        [folder] = (ran / "work" / "predict").glob(f"*/submissions/{name}.csv")
        written = _lines(folder)
        assert {q: written[q] for q in good} == {q: _lines(ran / "subs" / f"{name}.csv")[q] for q in good}, name
    run = _lines(ran / "subs" / "ens.csv")
    assert {q: answers[q] for q in good} == {q: run[q] for q in good}
    # The bad ones: the run's 7 most common answers, ties by ID.
    counts = Counter(d for ids in run.values() for d in ids)
    fallback = sorted(counts, key=lambda d: (-counts[d], d))[:7]
    assert answers["v900001"] == answers["v900002"] == fallback

    with open(tmp_path / "out" / "answers.rejected.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "file", "reason"]
    assert rows[1:] == [["notes", "notes.txt", "not an image suffix: .txt"],
                        ["v900001", "v900001.jpg", "truncated image data"],
                        ["v900002", "v900002.png", "not an image (or not a supported format)"]]
    [record] = (ran / "work" / "predict").glob("*/predict.json")
    assert json.loads(record.read_text())["fallback"]["ids"] == fallback


def test_a_folder_of_bad_images_is_answered_by_the_fallback(ran, tmp_path, cli, monkeypatch):
    _photos(ran, tmp_path / "photos", 0)
    os.symlink("v900003.jpg", tmp_path / "photos" / "v900003.jpg")  # a link to itself: that query only
    (tmp_path / "photos" / "=cmd|calc!A0.jpg").write_text("not an image\n")
    monkeypatch.chdir(ran)
    result = cli("predict", "tiny.toml", tmp_path / "photos", tmp_path / "answers.csv", "--run", "mac")
    assert result.code == 0, result.err
    answers = _lines(tmp_path / "answers.csv")
    assert list(answers) == ["v900001", "v900002", "v900003"] and answers["v900001"] == answers["v900003"]
    assert "3 of them by the fallback" in result.out
    with open(tmp_path / "answers.rejected.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert ["v900003", "v900003.jpg", "cannot be opened: too many levels of symbolic links"] in rows
    assert ["", "'=cmd|calc!A0.jpg", "invalid ID in file name: '=cmd|calc!A0'"] in rows  # shown, never run
    assert not [cell for row in rows for cell in row if cell[:1] in ("=", "+", "-", "@")]


def test_predict_refuses_what_bpcr_run_did_not_make(ran, tiny, tmp_path, cli, monkeypatch):
    _photos(ran, tmp_path / "photos", 1)
    monkeypatch.chdir(ran)
    out = tmp_path / "answers.csv"

    def refused(config: str, *extra: str) -> str:
        result = cli("predict", config, tmp_path / "photos", out, *extra)
        assert result.code == 2 and result.err.count("\n") == 1, (result.code, result.err)
        assert not out.exists()
        return result.err

    assert "--run 'nope' is not a run" in refused("tiny.toml", "--run", "nope")
    Path("elsewhere.toml").write_text(tiny.replace('work = "work"', 'work = "elsewhere"'))
    assert "run `bpcr run elsewhere.toml` first" in refused("elsewhere.toml")
    # Other extraction options than the database stores were made with: refused before any query is described.
    Path("other.toml").write_text(tiny.replace("size = 64", "size = 72"))
    assert "[extract] lite0-database: made with other options or data; run `bpcr run other.toml` first" in \
        refused("other.toml")
    # Its own config as OUT_CSV (directly or through a link): refused before anything is written over it.
    before = Path("tiny.toml").read_bytes()
    os.symlink(ran / "tiny.toml", tmp_path / "link.csv")
    for target in (ran / "tiny.toml", tmp_path / "link.csv"):
        result = cli("predict", "tiny.toml", tmp_path / "photos", target)
        assert result.code == 2 and "an input of this command" in result.err and result.err.count("\n") == 1
    assert Path("tiny.toml").read_bytes() == before


def test_query_features_must_match_the_database_stores(ran, tmp_path, cli, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(ran, copy, ignore=shutil.ignore_patterns("predict"))
    meta_path = copy / "work" / "features" / "lite0" / "database" / "mac" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["flip"] = True
    meta_path.write_text(json.dumps(meta))
    _photos(ran, tmp_path / "photos", 1)
    monkeypatch.chdir(copy)
    result = cli("predict", "tiny.toml", tmp_path / "photos", tmp_path / "answers.csv")
    assert result.code == 2 and result.err.count("error:") == 1, result.err
    last = result.err.splitlines()[-1]  # after the progress bars of the extraction
    assert last.startswith("error:") and "flip is False" in last and "the same options" in last
