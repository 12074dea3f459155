"""Hostile input, by class: each case exits 2 with one line on stderr that names the file
(and the line when known), never a traceback, never a hang, and leaves every file as it was.

- special files on input: a FIFO, a device, a socket or a folder where a file is read;
- feature stores of the wrong kind: dtypes, shapes, meta that lies, no rows, NaN rows;
- numbers that are not numbers: only ASCII decimal, as trec_eval reads them;
- ground truth and strictness: a header found by its shape, and ``--strict`` refusing
  every problem the scorer otherwise tolerates;
- cost: files and lines beyond each kind's limit are refused before they are read whole.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pytest

from bpcr.errors import BadInput

GT = "Validation Image ID,Training Image ID\nv1,n1,n2\nv2,n3\n"
GOOD_CSV = "v1,n1,n2,n3,n4,n5,n6,n7\nv2,n3,n1,n2,n4,n5,n6,n7\n"
GOOD_TREC = "".join(f"{q} Q0 n{d} {r} {1 - r / 10:.1f} t\n" for q in ("v1", "v2") for r, d in enumerate(range(1, 8), 1))
MANIFEST_HEADER = "id,path,width,height,description\n"


@pytest.fixture(autouse=True)
def no_hang():
    """A case that blocks (on a FIFO, say) fails after 60 s instead of hanging the suite."""
    def hung(signum, frame):
        raise TimeoutError("blocked on input")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _snapshot(folder: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        out[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return out


def refused(cli, folder: Path, path: Path | str, *args, line: int | None = None, reason: str = ""):
    """Run ``bpcr ARGS``: exit 2, one line naming ``path`` (and ``line``) with ``reason``; nothing under ``folder`` changed."""
    before = _snapshot(folder)
    result = cli(*args)
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, lines
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert where in lines[0] and reason in lines[0], lines[0]
    assert "Traceback" not in result.err
    assert _snapshot(folder) == before
    return lines[0]


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path


SPECIAL = {
    "fifo": (_fifo, "is a named pipe (FIFO), not a regular file"),
    "socket": (_socket, "is a socket, not a regular file"),
    "folder": (lambda p: (p.mkdir(), p)[1], "is a folder, expected a file"),
}


def _special(kind: str, path: Path) -> tuple[Path, str]:
    make, reason = SPECIAL[kind]
    if path.exists() or path.is_symlink():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return make(path), reason


# ---------------------------------------------------------------- special files on input


@pytest.fixture
def scoring(tmp_path: Path) -> Path:
    (tmp_path / "gt.csv").write_text(GT)
    (tmp_path / "run.csv").write_text(GOOD_CSV)
    (tmp_path / "database.csv").write_text(MANIFEST_HEADER + "".join(f"n{i},db/n{i}.jpg,4,4,x\n" for i in range(1, 8)))
    return tmp_path


def _score(t: Path, run: str = "run.csv", gt: str = "gt.csv", *more):
    return ("score", t / run, "--gt", t / gt, "--json", t / "out.json", "--leaderboard", t / "lb.md", *more)


@pytest.mark.parametrize("kind", sorted(SPECIAL))
@pytest.mark.parametrize("target,args", [
    ("run.csv", lambda t: _score(t)),
    ("run.trec", lambda t: _score(t, "run.trec")),
    ("run.json", lambda t: _score(t)),  # provenance beside a valid run.csv: refused, not skipped
    ("gt.csv", lambda t: _score(t)),
    ("sub.csv", lambda t: ("check", t / "sub.csv", "--manifest", t / "database.csv")),
    ("database.csv", lambda t: ("check", t / "run.csv", "--manifest", t / "database.csv")),
    ("queries.csv", lambda t: ("check", t / "run.csv", "--manifest", t / "database.csv")),  # found beside it
    ("q.csv", lambda t: ("check", t / "run.csv", "--manifest", t / "database.csv", "--queries", t / "q.csv")),
])
def test_special_file_as_text_input(cli, scoring, kind, target, args):
    if target == "run.trec":
        (scoring / "run.csv").unlink()
    path, reason = _special(kind, scoring / target)
    if kind == "folder" and target in ("run.csv", "run.trec"):
        reason = "folder holds no run"  # a folder named as a run is a folder of runs
    refused(cli, scoring, path, *args(scoring), reason=reason)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_device_as_ground_truth(cli, scoring, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    refused(cli, scoring, device, *_score(scoring, gt=device), reason="is a character device, not a regular file")


def test_symlink_to_a_regular_file_is_read_and_to_a_fifo_refused(cli, scoring):
    (scoring / "link.csv").symlink_to(scoring / "gt.csv")
    assert cli("score", scoring / "run.csv", "--gt", scoring / "link.csv", "--no-leaderboard").code == 0
    fifo = _fifo(scoring / "pipe")
    (scoring / "pipe.csv").symlink_to(fifo)
    refused(cli, scoring, scoring / "pipe.csv", *_score(scoring, gt="pipe.csv"), reason="named pipe")


def _valid_store(folder: Path, rows: int = 2, dim: int = 4) -> Path:
    from bpcr.io.store import write_store

    x = np.eye(max(rows, dim), dtype=np.float16)[:rows, :dim]
    return write_store(folder, [f"n{i}" for i in range(1, rows + 1)], x, {"pooling": "gem"}).path


@pytest.mark.parametrize("kind", ["fifo", "socket", "folder"])
@pytest.mark.parametrize("name", ["features.npy", "ids.txt", "meta.json"])
def test_special_file_in_a_store(cli, tmp_path, kind, name):
    store = _valid_store(tmp_path / "db")
    path, reason = _special(kind, store / name)
    refused(cli, tmp_path, path, "index", store, "--out", tmp_path / "index", reason=reason)


def test_special_index_sidecar(cli, tmp_path):
    from bpcr.retrieval.index import build_index

    build_index(_valid_store(tmp_path / "db", 3), tmp_path / "index", log=lambda _: None)
    queries = _valid_store(tmp_path / "q")
    path, reason = _special("fifo", tmp_path / "index" / "index.json")
    refused(cli, tmp_path, path, "search", "--index", tmp_path / "index", "--queries", queries, "--name", "s",
            "--out", tmp_path / "out", reason=reason)


@pytest.mark.parametrize("reader", ["whitening", "text_index", "json", "descriptions", "manifest"])
def test_special_file_in_library_readers(tmp_path, reader):
    from bpcr.dataset.descriptions import read_descriptions
    from bpcr.dataset.manifest import read_manifest
    from bpcr.text.index import load_text_index
    from bpcr.io.textio import read_json
    from bpcr.features.whitening import read_whitening

    if reader == "text_index":
        folder = tmp_path / "ti"
        folder.mkdir()
        (folder / "ids.txt").write_text("n1\n")
        (folder / "meta.json").write_text('{"format": "bpcr-text-index/1"}\n')
        path = _fifo(folder / "neighbours.npz")
        call = lambda: load_text_index(folder)  # noqa: E731
    else:
        path = _fifo(tmp_path / "input")
        call = {"whitening": lambda: read_whitening(path), "json": lambda: read_json(path),
                "descriptions": lambda: read_descriptions(path, set()), "manifest": lambda: read_manifest(path)}[reader]
    with pytest.raises(BadInput) as info:
        call()
    assert info.value.file == str(path) and "named pipe" in info.value.reason


# ---------------------------------------------------------------- feature stores of the wrong kind


def _replace_features(store: Path, array: np.ndarray, meta: str | None = None) -> None:
    np.save(store / "features.npy", array)
    (store / "meta.json").write_text(meta or '{"pooling": "gem"}\n')


STORE_CASES = [
    ("int8", np.ones((2, 4), np.int8), "features.npy", "holds |i1 values"),
    ("bool", np.ones((2, 4), bool), "features.npy", "holds |b1 values"),
    ("complex", np.ones((2, 4), np.complex64), "features.npy", "holds <c8 values"),
    ("strings", np.array([["a"] * 4] * 2), "features.npy", "holds <U1 values"),
    ("big_endian", np.ones((2, 4), ">f4"), "features.npy", "native byte order"),
    ("zero_columns", np.ones((2, 0), np.float32), "features.npy", "0 columns"),
    ("three_dims", np.ones((2, 4, 1), np.float32), "features.npy", "does not match 2 IDs"),
    ("nan_row", np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]], np.float32), "features.npy", "row 2 (ID 'n2')"),
    ("inf_row", np.array([[np.inf, 0, 0, 0], [1, 0, 0, 0]], np.float16), "features.npy", "NaN or infinity"),
]


@pytest.mark.parametrize("name,array,file,reason", STORE_CASES, ids=[c[0] for c in STORE_CASES])
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_wrong_database_store(cli, tmp_path, name, array, file, reason, kind):
    store = _valid_store(tmp_path / "db")
    _replace_features(store, array)
    refused(cli, tmp_path, store / file, "index", store, "--out", tmp_path / "index", "--kind", kind, reason=reason)


META_CASES = [
    ("count_mismatch", '{"count": 3}', "count 3 but features have 2 rows"),
    ("count_not_an_integer", '{"count": "2"}', "count must be an integer"),
    ("dim_a_boolean", '{"dim": true}', "dim must be an integer"),
    ("dtype_mismatch", '{"dtype": "float32"}', "dtype 'float32' but features.npy holds float16"),
]


@pytest.mark.parametrize("name,meta,reason", META_CASES, ids=[c[0] for c in META_CASES])
def test_store_meta_that_lies(cli, tmp_path, name, meta, reason):
    store = _valid_store(tmp_path / "db")
    (store / "meta.json").write_text(meta + "\n")
    refused(cli, tmp_path, store / "meta.json", "index", store, "--out", tmp_path / "index", reason=reason)


def test_empty_features_file(cli, tmp_path):
    store = _valid_store(tmp_path / "db")
    (store / "features.npy").write_bytes(b"")
    refused(cli, tmp_path, store / "features.npy", "index", store, "--out", tmp_path / "index",
            reason="not a plain .npy array")


def test_store_without_rows_where_rows_are_needed(cli, tmp_path):
    from bpcr.retrieval.index import build_index
    from bpcr.io.store import write_store

    empty = write_store(tmp_path / "empty", [], np.zeros((0, 4), np.float16), {"pooling": "gem"}).path
    refused(cli, tmp_path, empty, "index", empty, "--out", tmp_path / "index",
            reason="the database feature store holds no rows")
    build_index(_valid_store(tmp_path / "db", 3), tmp_path / "index", log=lambda _: None)
    refused(cli, tmp_path, empty, "search", "--index", tmp_path / "index", "--queries", empty, "--name", "s",
            "--out", tmp_path / "out", reason="the query feature store holds no rows")


def test_nan_query_rows(cli, tmp_path):
    from bpcr.retrieval.index import build_index
    from bpcr.io.store import write_store

    build_index(_valid_store(tmp_path / "db", 3), tmp_path / "index", log=lambda _: None)
    queries = write_store(tmp_path / "q", ["v1", "v2"], np.array([[1, 0, 0, 0], [0, np.nan, 0, 0]], np.float16),
                          {"pooling": "gem"}).path
    refused(cli, tmp_path, queries / "features.npy", "search", "--index", tmp_path / "index", "--queries", queries,
            "--name", "s", "--out", tmp_path / "out", reason="row 2 (ID 'v2') of the query store holds NaN")


# ---------------------------------------------------------------- numbers that are not numbers


TREC_NUMBER_CASES = [
    ("score_underscore", "v1 Q0 n1 1 1_000 t", "score '1_000' is not a number"),
    ("score_arabic_indic", "v1 Q0 n1 1 \u0661\u0662 t", "is not a number"),
    ("score_full_width", "v1 Q0 n1 1 \uff10.\uff15 t", "is not a number"),
    ("score_hex", "v1 Q0 n1 1 0x10 t", "is not a number"),
    ("score_overflow", "v1 Q0 n1 1 1e999 t", "is not finite"),
    ("score_infinity", "v1 Q0 n1 1 -Infinity t", "is not finite"),
    ("rank_full_width", "v1 Q0 n1 \uff11 0.5 t", "rank '\uff11' is not an integer"),
    ("rank_arabic_indic", "v1 Q0 n1 \u0663 0.5 t", "is not an integer"),
    ("rank_underscore", "v1 Q0 n1 1_0 0.5 t", "is not an integer"),
    ("rank_decimal", "v1 Q0 n1 1.0 0.5 t", "is not an integer"),
    ("unicode_space", "v1\u2003Q0 n1 1 0.5 t", "expected 6 columns"),
]


@pytest.mark.parametrize("name,line,reason", TREC_NUMBER_CASES, ids=[c[0] for c in TREC_NUMBER_CASES])
def test_trec_numbers(cli, scoring, name, line, reason):
    (scoring / "run.csv").unlink()
    path = scoring / "run.trec"
    path.write_text("v1 Q0 n2 1 0.9 t\n" + line + "\n", encoding="utf-8")
    refused(cli, scoring, path, *_score(scoring, "run.trec"), line=2, reason=reason)


def test_trec_numbers_trec_eval_reads_are_accepted(cli, scoring):
    (scoring / "run.csv").unlink()
    (scoring / "run.trec").write_text("v1 Q0 n1 +1 1e-3 t\nv1 Q0 n2 2 .5E+1 t\nv1\tQ0\tn3\t3\t-7.\tt\nv2 Q0 n3 1 0 t\n")
    result = cli("score", scoring / "run.trec", "--gt", scoring / "gt.csv", "--no-leaderboard")
    assert result.code == 0, result.err


MANIFEST_NUMBER_CASES = [
    ("full_width", "\uff16\uff14\uff10", "width and height must be integers"),
    ("arabic_indic", "\u0666\u0664\u0660", "width and height must be integers"),
    ("underscore", "6_40", "width and height must be integers"),
    ("spaces", " 640", "width and height must be integers"),
    ("zero", "0", "positive integers"),
    ("negative", "-640", "positive integers"),
]


@pytest.mark.parametrize("name,width,reason", MANIFEST_NUMBER_CASES, ids=[c[0] for c in MANIFEST_NUMBER_CASES])
def test_manifest_numbers(cli, scoring, name, width, reason):
    path = scoring / "database.csv"
    path.write_text(MANIFEST_HEADER + f"n1,db/n1.jpg,4,4,x\nn2,db/n2.jpg,{width},4,x\n", encoding="utf-8")
    refused(cli, scoring, path, "check", scoring / "run.csv", "--manifest", path, line=3, reason=reason)


# ---------------------------------------------------------------- ground truth header and --strict


@pytest.mark.parametrize("header", ["query,relevant", "qid,docid", "query_id,image_id", "Query ID,Relevant",
                                    "Validation Image ID,Training Image ID"])
def test_gt_header_by_shape(cli, scoring, header):
    path = scoring / "gt.csv"
    path.write_text(GT.replace("Validation Image ID,Training Image ID", header))
    result = cli("score", scoring / "run.csv", "--gt", path, "--no-leaderboard", "--strict")
    assert result.code == 0, result.err
    assert "missing" not in result.err


STRICT_CASES = [
    # (name, csv, trec, file, line, reason); the run is tolerated without --strict
    ("five_predictions", "v1,n1,n2,n3,n4,n5\nv2,n3,n1,n2,n4,n5,n6,n7\n", None, "run.csv", 1,
     "5 predictions for query 'v1'"),
    ("eight_predictions", "v1,n1,n2,n3,n4,n5,n6,n7,n8\nv2,n3,n1,n2,n4,n5,n6,n7\n", None, "run.csv", 1,
     "8 predictions, at most 7"),
    ("repeated_prediction", "v1,n1,n1,n3,n4,n5,n6,n7\nv2,n3,n1,n2,n4,n5,n6,n7\n", None, "run.csv", 1,
     "repeats a prediction"),
    ("trailing_comma", "v1,n1,n2,n3,n4,n5,n6,n7,\nv2,n3,n1,n2,n4,n5,n6,n7\n", None, "run.csv", 1, "trailing comma"),
    ("spaces", "v1, n1, n2, n3, n4, n5, n6, n7\nv2,n3,n1,n2,n4,n5,n6,n7\n", None, "run.csv", 1, "spaces around commas"),
    ("blank_line", "v1,n1,n2,n3,n4,n5,n6,n7\n\nv2,n3,n1,n2,n4,n5,n6,n7\n", None, "run.csv", 2, "blank line"),
    ("bom", "\ufeff" + GOOD_CSV, None, "run.csv", 1, "byte order mark"),
    ("crlf", GOOD_CSV.replace("\n", "\r\n"), None, "run.csv", 1, "CRLF line end"),
    ("unsorted", "v2,n3,n1,n2,n4,n5,n6,n7\nv1,n1,n2,n3,n4,n5,n6,n7\n", None, "run.csv", 2, "not sorted"),
    ("missing_query", "v1,n1,n2,n3,n4,n5,n6,n7\n", None, "run.csv", None, "1 ground-truth queries missing"),
    ("unknown_query", GOOD_CSV + "v3,n1,n2,n3,n4,n5,n6,n7\n", None, "run.csv", None, "1 queries not in the ground truth"),
    ("csv_and_trec_differ", GOOD_CSV, GOOD_TREC.replace("v2 ", "v3 "), "run.trec", None, "answers other queries"),
    ("trec_not_q0", None, GOOD_TREC.replace("v2 Q0 n1", "v2 q0 n1"), "run.trec", 8, "column 2 is 'q0'"),
    ("trec_rank_gap", None, GOOD_TREC.replace("v1 Q0 n3 3", "v1 Q0 n3 4"), "run.trec", 3, "rank 4 where"),
    ("trec_score_rises", None, GOOD_TREC.replace("v1 Q0 n2 2 0.8", "v1 Q0 n2 2 0.95"), "run.trec", 2,
     "above the score at rank 1"),
    ("trec_only_five", None, "".join(line + "\n" for line in GOOD_TREC.splitlines() if not line.split()[3] in "67"),
     "run.trec", None, "has 5 results"),
]


@pytest.mark.parametrize("name,csv,trec,file,line,reason", STRICT_CASES, ids=[c[0] for c in STRICT_CASES])
def test_strict_refuses_every_tolerated_problem(cli, scoring, name, csv, trec, file, line, reason):
    (scoring / "run.csv").unlink()
    if csv is not None:
        (scoring / "run.csv").write_bytes(csv.encode("utf-8"))
    if trec is not None:
        (scoring / "run.trec").write_text(trec)
    run = "run.csv" if csv is not None else "run.trec"
    tolerated = cli("score", scoring / run, "--gt", scoring / "gt.csv", "--no-leaderboard")
    assert tolerated.code == 0, tolerated.err
    refused(cli, scoring, scoring / file, *_score(scoring, run, "gt.csv", "--strict"), line=line, reason=reason)


# ---------------------------------------------------------------- cost: absurd sizes and lines


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


SIZE_CASES = [
    ("submission", "run.csv", 300 << 20, "file is 300 MiB; a submission is at most 256 MiB"),
    ("trec", "run.trec", 3 << 30, "file is 3 GiB; a TREC run is at most 2 GiB"),
    ("ground_truth", "gt.csv", 1 << 30, "a ground-truth file is at most 256 MiB"),
    ("provenance", "run.json", 100 << 20, "a JSON file is at most 64 MiB"),
    ("manifest", "database.csv", 2 << 30, "a manifest is at most 1 GiB"),
]


@pytest.mark.parametrize("name,target,size,reason", SIZE_CASES, ids=[c[0] for c in SIZE_CASES])
def test_absurd_file_size_is_refused_before_reading(cli, scoring, name, target, size, reason):
    if target == "run.trec":
        (scoring / "run.csv").unlink()
    path = _sparse(scoring / target, size, b"v1")
    args = (("check", scoring / "run.csv", "--manifest", path) if target == "database.csv"
            else _score(scoring, "run.trec" if target == "run.trec" else "run.csv"))
    refused(cli, scoring, path, *args, reason=reason)


LINE_CASES = [
    ("submission_score", "run.csv", "v1," + ",".join(f"n{i:07d}" for i in range(120_000)), 2, "submission"),
    ("submission_check", "sub.csv", "v1," + ",".join(f"n{i:07d}" for i in range(120_000)), 2, "submission"),
    ("ground_truth_no_newline", "gt.csv", "v1," + "n" * (2 << 20), 2, "ground-truth file"),
    ("trec", "run.trec", "v1 Q0 n1 1 0.5 " + "t" * 70_000, 2, "TREC run"),
    ("manifest", "database.csv", "n9,db/n9.jpg,4,4," + "x" * (1100 << 10), 2, "manifest"),
]


@pytest.mark.parametrize("name,target,long_line,line,what", LINE_CASES, ids=[c[0] for c in LINE_CASES])
def test_absurd_line_is_refused(cli, scoring, name, target, long_line, line, what):
    first = {"run.csv": GOOD_CSV.splitlines()[0], "sub.csv": GOOD_CSV.splitlines()[0], "gt.csv": "v2,n3",
             "run.trec": GOOD_TREC.splitlines()[0], "database.csv": MANIFEST_HEADER.strip()}[target]
    path = scoring / target
    path.write_text(first + "\n" + long_line + ("" if target == "gt.csv" else "\n"))
    if target == "run.trec":
        (scoring / "run.csv").unlink()
        args = _score(scoring, "run.trec")
    elif target in ("sub.csv", "database.csv"):
        args = ("check", scoring / ("sub.csv" if target == "sub.csv" else "run.csv"), "--manifest",
                scoring / "database.csv")
    else:
        args = _score(scoring)
    refused(cli, scoring, path, *args, line=line, reason=f"the most a {what} allows")


def test_long_check_line_is_one_problem_per_kind(cli, scoring):
    # 20,000 IDs in one line (180 KB, under the line limit): checked in one linear pass, reported in a few lines
    path = scoring / "sub.csv"
    path.write_text("v1," + ",".join(f"n{i:07d}" for i in range(20_000)) + "\nv2,n1,n2,n3,n4,n5,n6,n7\n")
    result = cli("check", path, "--manifest", scoring / "database.csv")
    assert result.code == 2 and "20000 predictions, exactly 7 required" in result.err
    assert "19993 more IDs not in the database manifest on this line" in result.err
    assert len(result.err.strip().splitlines()) < 20
