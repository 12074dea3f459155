"""Hostile output targets, by class, for every command that writes: each is refused
before any work with exit code 2 and one stderr line naming the option (and the
path), and no file anywhere is changed or left behind.

Class 1, output paths: a file where a folder is expected and the reverse, a
name too long for the file system, a path under /proc, a path below a file,
a user's file or folder where the kit would replace its own (extract's
OUT/<pooling>, index, text-index, prepare). Class 2, special files: FIFOs,
character devices (/dev/null, /dev/full: refused, never touched) and links,
which are followed to a regular file and written through, and refused otherwise.
Class 3 (all-or-nothing groups under SIGKILL) is tests/hostile/test_kill.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from bpcr.retrieval.index import build_index
from bpcr.dataset.manifest import write_manifest
from bpcr.io.runs import write_run
from bpcr.io.store import write_store
from bpcr.text.index import build_text_index
from bpcr.text.options import TextIndexOptions

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

META = {"backbone": "toy", "pooling": "gem", "dim": 4}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Valid inputs for every command: manifests, stores, shards, an index, a text index, runs, ground truth."""
    root = tmp_path_factory.mktemp("inputs")
    ids = [f"n{k}" for k in range(1, 9)]
    (root / "images" / "db").mkdir(parents=True)
    (root / "images" / "q").mkdir()
    write_manifest(root / "db.csv", ids, [root / f"{i}.jpg" for i in ids], [10] * 8, [10] * 8,
                   ["red lipstick matte", "red lipstick gloss", "shampoo 250 ml"] + [""] * 5)
    write_manifest(root / "q.csv", ["v1", "v2"], [root / "v1.jpg", root / "v2.jpg"], [10] * 2, [10] * 2, ["", ""])
    rng = np.random.default_rng(0)
    write_store(root / "stores" / "db", ids, rng.standard_normal((8, 4)).astype(np.float32), META)
    write_store(root / "stores" / "q", ["v1", "v2"], rng.standard_normal((2, 4)).astype(np.float32), META)
    for k in (1, 2):
        write_store(root / f"shard{k}" / "gem", ids, np.ones((8, 4), np.float32),
                    {**META, "shard": {"index": k, "count": 2, "rows": [0, 8]}})
    build_index(root / "stores" / "db", root / "index", log=lambda s: None)
    build_text_index(root / "db.csv", root / "ti", TextIndexOptions(tau=0.3))
    for name, order in (("A", ids[:7]), ("B", ids[::-1][:7])):
        write_run(root / "runs", name, {"v1": order, "v2": order[::-1]},
                  {"v1": list(range(7, 0, -1)), "v2": list(range(7, 0, -1))}, {"run": name, "method": "test"})
    (root / "gt.csv").write_text("Validation Image ID,Training Image ID\nv1,n1\nv2,n3\n")
    return root


def _argv(command: str, i: Path, out: object, name: str = "r") -> list[object]:
    return {
        "prepare": ["prepare", "--db", i / "images/db", "--queries", i / "images/q", "--out", out],
        "extract": ["extract", i / "db.csv", "--pooling", "gem", "--device", "cpu", "--out", out],
        "extract-merge": ["extract", "--merge", i / "shard1", i / "shard2", "--out", out],
        "index": ["index", i / "stores/db", "--out", out],
        "text-index": ["text-index", i / "db.csv", "--out", out],
        "search": ["search", "--index", i / "index", "--queries", i / "stores/q", "--name", name, "--out", out],
        "refine": ["refine", i / "runs/A.trec", "--text-index", i / "ti", "--name", name, "--out", out],
        "rerank": ["rerank", i / "runs/A.trec", "--db-manifest", i / "db.csv", "--query-manifest", i / "q.csv",
                   "--name", name, "--out", out, "--cache-dir", i / "never-made" / "cache"],
        "ensemble": ["ensemble", i / "runs/A.trec", i / "runs/B.trec", "--method", "rrf", "--name", name,
                     "--out", out],
    }[command]


FOLDER_COMMANDS = ["prepare", "extract", "extract-merge", "index", "text-index", "search", "refine", "rerank",
                   "ensemble"]
RUN_COMMANDS = ["search", "refine", "rerank", "ensemble"]


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Every entry below ``roots`` (links not followed): kind, and bytes, mode, mtime, target or device number."""
    seen: dict[str, tuple] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as handle:
                        digest = hashlib.sha256(handle.read()).hexdigest()
                    seen[path] = ("file", digest, st.st_mode, st.st_mtime_ns)
                elif stat.S_ISLNK(st.st_mode):
                    seen[path] = ("link", os.readlink(path))
                else:
                    seen[path] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_ino, st.st_rdev, st.st_mtime_ns)
    return seen


def _refused(cli, argv: list[object], roots: list[Path], *needles: str) -> str:
    """Run ``argv``: exit 2, one stderr line holding every needle, nothing changed or left under ``roots``."""
    before = _snapshot(*roots)
    result = cli(*argv)
    lines = result.err.strip().splitlines()
    assert result.code == 2, (result.code, result.err)
    assert len(lines) == 1, lines
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert _snapshot(*roots) == before
    return lines[0]


# ---------------------------------------------------------------- class 1: output folders


def _taken_by_file(t: Path) -> tuple[Path, str]:
    (t / "taken").write_text("a user's file\n")
    return t / "taken", "a folder is expected here"


def _fifo(t: Path) -> tuple[Path, str]:
    os.mkfifo(t / "pipe")
    return t / "pipe", "is a FIFO (named pipe)"


def _below_a_file(t: Path) -> tuple[Path, str]:
    (t / "plain").write_text("x")
    return t / "plain" / "out", "plain is a file, not a folder"


def _too_long(t: Path) -> tuple[Path, str]:
    return t / ("o" * 300), "bytes long; this file system allows at most"


def _proc(t: Path) -> tuple[Path, str]:
    return Path("/proc/bpcr-hostile-out"), "cannot create files in /proc"


def _dangling_link(t: Path) -> tuple[Path, str]:
    os.symlink(t / "nowhere", t / "link")
    return t / "link", "which does not exist"


FOLDER_TARGETS = {"file-for-folder": _taken_by_file, "fifo": _fifo, "below-a-file": _below_a_file,
                  "too-long-name": _too_long, "proc": _proc, "dangling-link": _dangling_link}


@pytest.mark.parametrize("target", FOLDER_TARGETS)
@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_output_folder_that_cannot_be_one(cli, tmp_path, inputs, command, target):
    out, reason = FOLDER_TARGETS[target](tmp_path)
    _refused(cli, _argv(command, inputs, out), [tmp_path, inputs], "--out", reason)


def _users_folder(t: Path) -> Path:
    (t / "mine").mkdir()
    (t / "mine" / "thesis.tex").write_text("precious")
    (t / "mine" / "data.csv").write_text("1,2\n")
    return t / "mine"


@pytest.mark.parametrize("command, label, verb", [
    ("index", "bpcr index folder", "replace"), ("text-index", "text index", "replace"),
    ("prepare", "bpcr prepare output folder", "write into")])
def test_a_users_folder_is_never_replaced(cli, tmp_path, inputs, command, label, verb):
    out = _users_folder(tmp_path)
    _refused(cli, _argv(command, inputs, out), [tmp_path, inputs], f"--out {out}",
             f"exists and is not a {label}; refusing to {verb} it")


@pytest.mark.parametrize("command", ["extract", "extract-merge"])
def test_extract_never_replaces_a_users_file_or_folder_under_out(cli, tmp_path, inputs, command):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "gem").write_text("a user's file named gem\n")
    _refused(cli, _argv(command, inputs, tmp_path / "o"), [tmp_path, inputs], f"--out {tmp_path / 'o' / 'gem'}",
             "is a file; a folder is expected here")
    assert not (tmp_path / "o" / ".gem.old").exists()
    (tmp_path / "o" / "gem").unlink()
    _users_folder(tmp_path / "o")
    (tmp_path / "o" / "mine").rename(tmp_path / "o" / "gem")
    _refused(cli, _argv(command, inputs, tmp_path / "o"), [tmp_path, inputs], f"--out {tmp_path / 'o' / 'gem'}",
             "exists and is not a bpcr feature store; refusing to replace it")
    os.mkfifo(tmp_path / "p")
    (tmp_path / "o" / "gem").rename(tmp_path / "o" / "thesis")
    os.rename(tmp_path / "p", tmp_path / "o" / "gem")
    _refused(cli, _argv(command, inputs, tmp_path / "o"), [tmp_path, inputs], "--out", "is a FIFO")


def test_extract_refuses_a_file_where_its_unfinished_work_goes(cli, tmp_path, inputs):
    (tmp_path / ".o.partial").write_text("not a folder")
    _refused(cli, _argv("extract", inputs, tmp_path / "o"), [tmp_path, inputs], f"--out {tmp_path / '.o.partial'}",
             "a folder is expected here")


# ---------------------------------------------------------------- class 1 and 2: a run's files


def _member_folder(t: Path) -> tuple[str, str]:
    (t / "out" / "r.csv").mkdir(parents=True)
    return "r.csv", "is a folder; a file is expected here"


def _member_fifo(t: Path) -> tuple[str, str]:
    (t / "out").mkdir()
    os.mkfifo(t / "out" / "r.trec")
    return "r.trec", "is a FIFO (named pipe), not a regular file"


def _member_device(t: Path) -> tuple[str, str]:
    (t / "out").mkdir()
    os.symlink("/dev/null", t / "out" / "r.json")
    return "r.json", "is a character device, not a regular file"


def _member_dangling(t: Path) -> tuple[str, str]:
    (t / "out").mkdir()
    os.symlink(t / "gone.csv", t / "out" / "r.csv")
    return "r.csv", "which does not exist"


RUN_TARGETS = {"member-folder": _member_folder, "member-fifo": _member_fifo,
               "member-char-device-link": _member_device, "member-dangling-link": _member_dangling}


@pytest.mark.parametrize("target", RUN_TARGETS)
@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_run_file_that_cannot_be_written(cli, tmp_path, inputs, command, target):
    member, reason = RUN_TARGETS[target](tmp_path)
    null = os.stat("/dev/null")
    _refused(cli, _argv(command, inputs, tmp_path / "out"), [tmp_path, inputs], f"--out {tmp_path / 'out' / member}",
             reason)
    assert os.stat("/dev/null").st_rdev == null.st_rdev and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_run_name_too_long(cli, tmp_path, inputs, command):
    _refused(cli, _argv(command, inputs, tmp_path / "out", name="r" * 300), [tmp_path, inputs],
             "--name: the run name is 300 characters long; at most 250")


# ---------------------------------------------------------------- class 1 and 2: score's files


def _score(inputs: Path, option: str, target: object, tmp_path: Path) -> list[object]:
    argv = ["score", inputs / "runs", "--gt", inputs / "gt.csv", "--resamples", "50"]
    if option != "--leaderboard":
        argv += ["--leaderboard", tmp_path / "board" / "leaderboard.md"]
    return argv + [option, target]


def _file_folder(t: Path) -> tuple[Path, str]:
    (t / "a-folder").mkdir()
    return t / "a-folder", "is a folder; a file is expected here"


def _file_fifo(t: Path) -> tuple[Path, str]:
    os.mkfifo(t / "pipe.out")
    return t / "pipe.out", "is a FIFO (named pipe), not a regular file"


def _file_long(t: Path) -> tuple[Path, str]:
    return t / ("s" * 300 + ".out"), "bytes long"


def _file_proc(t: Path) -> tuple[Path, str]:
    return Path("/proc/bpcr-hostile.out"), "cannot create files in /proc"


def _file_proc_self(t: Path) -> tuple[Path, str]:
    return Path("/proc/self/comm"), "cannot create files in /proc/self"


def _file_below_file(t: Path) -> tuple[Path, str]:
    (t / "plain").write_text("x")
    return t / "plain" / "x.out", "plain is a file, not a folder"


def _file_link_to_folder(t: Path) -> tuple[Path, str]:
    (t / "real").mkdir()
    os.symlink(t / "real", t / "link.out")
    return t / "link.out", "is a folder"


def _file_dangling(t: Path) -> tuple[Path, str]:
    os.symlink(t / "nowhere", t / "link.out")
    return t / "link.out", "which does not exist"


FILE_TARGETS = {"folder-for-file": _file_folder, "fifo": _file_fifo, "too-long-name": _file_long,
                "proc": _file_proc, "proc-self-file": _file_proc_self, "below-a-file": _file_below_file,
                "link-to-folder": _file_link_to_folder, "dangling-link": _file_dangling}


@pytest.mark.parametrize("target", FILE_TARGETS)
@pytest.mark.parametrize("option", ["--leaderboard", "--json", "--per-query"])
def test_score_output_that_cannot_be_a_file(cli, tmp_path, inputs, option, target):
    path, reason = FILE_TARGETS[target](tmp_path)
    _refused(cli, _score(inputs, option, path, tmp_path), [tmp_path, inputs], option, reason)


@pytest.mark.parametrize("option, device", [("--json", "/dev/null"), ("--per-query", "/dev/full")])
def test_score_refuses_a_character_device_and_leaves_it(cli, tmp_path, inputs, option, device):
    before = os.stat(device)
    _refused(cli, _score(inputs, option, device, tmp_path), [tmp_path, inputs], f"{option} {device}",
             "is a character device, not a regular file; refusing to write to it")
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


def test_score_refuses_a_leaderboard_whose_chart_cannot_be_written(cli, tmp_path, inputs):
    (tmp_path / "board.svg").mkdir()
    _refused(cli, _score(inputs, "--leaderboard", tmp_path / "board.md", tmp_path), [tmp_path, inputs],
             f"--leaderboard {tmp_path / 'board.svg'}", "is a folder")
    _refused(cli, _score(inputs, "--leaderboard", tmp_path / "chart.svg", tmp_path), [tmp_path, inputs],
             "--leaderboard", "would be written over the leaderboard's chart")


def test_score_refuses_two_outputs_in_one_file(cli, tmp_path, inputs):
    argv = _score(inputs, "--json", tmp_path / "same.out", tmp_path) + ["--per-query", tmp_path / "same.out"]
    _refused(cli, argv, [tmp_path, inputs], "--per-query", "would be written over the --json output")


# ---------------------------------------------------------------- class 2: links are written through


def test_score_writes_through_links(cli, tmp_path, inputs):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "scores.json").write_text("old")
    (tmp_path / "real" / "board.md").write_text("old")
    os.symlink(tmp_path / "real" / "scores.json", tmp_path / "scores.json")
    os.symlink(tmp_path / "real" / "board.md", tmp_path / "leaderboard.md")
    result = cli("score", inputs / "runs", "--gt", inputs / "gt.csv", "--resamples", "50",
                 "--leaderboard", tmp_path / "leaderboard.md", "--json", tmp_path / "scores.json")
    assert result.code == 0, result.err
    assert os.path.islink(tmp_path / "scores.json") and os.path.islink(tmp_path / "leaderboard.md")
    assert set(json.loads((tmp_path / "real" / "scores.json").read_text())["runs"]) == {"A", "B"}
    assert (tmp_path / "real" / "board.md").read_text().startswith("# Leaderboard")
    assert sorted(os.listdir(tmp_path)) == ["leaderboard.md", "leaderboard.svg", "real", "scores.json"]
    assert sorted(os.listdir(tmp_path / "real")) == ["board.md", "scores.json"]


def test_a_run_file_that_is_a_link_is_written_through(cli, tmp_path, inputs):
    (tmp_path / "out").mkdir()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "fused.csv").write_text("old")
    os.symlink(tmp_path / "kept" / "fused.csv", tmp_path / "out" / "r.csv")
    result = cli(*_argv("ensemble", inputs, tmp_path / "out"))
    assert result.code == 0, result.err
    assert os.path.islink(tmp_path / "out" / "r.csv")
    assert (tmp_path / "kept" / "fused.csv").read_text().startswith("v1,")
    assert sorted(os.listdir(tmp_path / "out")) == ["r.csv", "r.json", "r.trec"]
    assert sorted(os.listdir(tmp_path / "kept")) == ["fused.csv"]


def test_names_users_chose_never_become_markup_or_formulas(cli, tmp_path, monkeypatch):
    """A ground-truth file and a run named with backticks, HTML and a formula: shown as text everywhere."""
    import csv as csv_module
    import re

    monkeypatch.chdir(tmp_path)
    gt = "g`t<img src=x onerror=alert(1)>.csv"
    run = "=cmd`x`<b>.csv"
    Path(gt).write_text("Validation Image ID,Training Image ID\nv1,n1\nv2,n2\n")
    Path(run).write_text("v1,n1,n2,n3,n4,n5,n6,n7\nv2,n2,n1,n3,n4,n5,n6,n7\n")
    result = cli("score", run, "--gt", gt, "--csv", "board.csv", "--latex", "board.tex")
    assert result.code == 0, result.err
    board = Path("leaderboard.md").read_text()
    # each name sits whole inside one code span, whose fence outlasts its backticks: no raw HTML, no broken span
    assert "Ground truth: ``g`t<img src=x onerror=alert(1)>.csv`` (" in board
    assert "| 1 | ``=cmd`x`<b>`` |" in board
    outside_code = re.sub(r"(`+)(.+?)\1", "", board)
    assert "<img" not in outside_code and "<b>" not in outside_code
    svg = Path("leaderboard.svg").read_text()
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    with open("board.csv", newline="") as handle:
        cells = [cell for row in csv_module.reader(handle) for cell in row]
    assert "'=cmd`x`<b>" in cells and not [c for c in cells if c[:1] in ("=", "+", "@")]
    assert r"\texttt{=cmd`x`<b>}" in Path("board.tex").read_text()  # nothing in it is special to LaTeX
