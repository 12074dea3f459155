"""Readers and writers of ground truth and runs (DESIGN.md "Ground truth", "Runs"),
and the malformed-file corpus: each file gives exit code 2 and one line."""
from __future__ import annotations

from pathlib import Path

import pytest

from bpcr.errors import BadInput
from bpcr.gt import read_ground_truth, write_ground_truth
from bpcr.runs import load_run, read_submission, read_trec, write_run

DATA = Path(__file__).parent / "data"

MALFORMED = DATA / "malformed"


@pytest.fixture
def good_gt(tmp_path: Path) -> Path:
    path = tmp_path / "gt.csv"
    path.write_text("Validation Image ID,Training Image ID\nv1,n1,n2\nv2,n3\n")
    return path


@pytest.fixture
def good_run(tmp_path: Path) -> Path:
    path = tmp_path / "good.csv"
    path.write_text("v1,n1,n2,n3,n4,n5,n6,n7\nv2,n3,n1,n2,n4,n5,n6,n7\n")
    return path


# ---------------------------------------------------------------- ground truth


def test_gt_tolerates_bom_crlf_spaces_trailing_cells(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_bytes(b"\xef\xbb\xbfValidation Image ID,Training Image ID\r\nv000101 , n0292431\r\nv000104,n0185640, n0535953,n0186115,,\r\n")
    assert read_ground_truth(path) == {"v000101": ["n0292431"], "v000104": ["n0185640", "n0535953", "n0186115"]}


def test_gt_without_header(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("v1,n1\nv2,n2,n3\n")
    assert read_ground_truth(path) == {"v1": ["n1"], "v2": ["n2", "n3"]}


def test_gt_round_trip_sorted(tmp_path):
    path = tmp_path / "gt.csv"
    write_ground_truth(path, {"v2": ["n9", "n1"], "v1": ["n5"]})
    assert path.read_text() == "Validation Image ID,Training Image ID\nv1,n5\nv2,n9,n1\n"
    assert read_ground_truth(path) == {"v1": ["n5"], "v2": ["n9", "n1"]}


@pytest.mark.parametrize("name,line,reason", [
    ("duplicate_query.csv", 3, "listed twice"),
    ("no_relevant.csv", 3, "no relevant ID"),
    ("no_relevant_trailing_comma.csv", 3, "no relevant ID"),
    ("path_like_id.csv", 2, "looks like a path"),
    ("repeated_relevant.csv", 2, "listed twice"),
    ("non_utf8.csv", 2, "not valid UTF-8"),
    ("binary_junk.csv", 3, "binary data"),
    ("empty.csv", None, "no ground-truth rows"),
    ("header_only.csv", None, "no ground-truth rows"),
])
def test_gt_malformed_reader(name, line, reason):
    with pytest.raises(BadInput) as info:
        read_ground_truth(MALFORMED / "gt" / name)
    assert info.value.line == line
    assert reason in info.value.reason


# ---------------------------------------------------------------- submissions


def test_submission_tolerance_and_warnings(tmp_path):
    path = tmp_path / "r.csv"
    # spaces after commas as on the challenge page, BOM, CRLF, a trailing comma
    path.write_bytes(b"\xef\xbb\xbfv1, n1, n2, n3, n4, n5, n6, n7,\r\nv2,n1,n1,n2\r\nv3,a,b,c,d,e,f,g,h,i\r\n")
    warnings: list[str] = []
    sub = read_submission(path, warnings=warnings)
    assert sub == {"v1": ["n1", "n2", "n3", "n4", "n5", "n6", "n7"], "v2": ["n1", "n1", "n2"],
                   "v3": ["a", "b", "c", "d", "e", "f", "g"]}
    assert any("fewer than 7" in w for w in warnings)
    assert any("repeat" in w for w in warnings)
    assert any("truncated" in w for w in warnings)


@pytest.mark.parametrize("content,reason", [
    (b"v1,a,b,c,d,e,f,g,h\n", "at most 7"),
    (b"v1,a,a,b,c,d,e,f\n", "repeats a prediction"),
])
def test_submission_strict(tmp_path, content, reason):
    path = tmp_path / "r.csv"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=reason):
        read_submission(path, strict=True)


def test_trec_orders_by_score_then_id(tmp_path):
    path = tmp_path / "r.trec"
    # file ranks disagree with scores; equal scores break by ID
    path.write_text("v1 Q0 nb 1 0.5 t\nv1 Q0 nc 2 0.9 t\nv1 Q0 na 3 0.5 t\n")
    ranking, scores = read_trec(path)
    assert ranking == {"v1": ["nc", "na", "nb"]}
    assert scores == {"v1": [0.9, 0.5, 0.5]}


def test_write_run_round_trip_and_tie_order(tmp_path):
    ranking = {"v2": ["n3", "n1", "n2"], "v1": ["nb", "na", "nc"]}
    scores = {"v2": [0.3, 0.2, 0.1], "v1": [0.7, 0.7, 0.9]}
    written = write_run(tmp_path, "demo", ranking, scores, {"method": "test"})
    assert written[".csv"].read_text() == "v1,nc,na,nb\nv2,n3,n1,n2\n"
    assert written[".trec"].read_text().splitlines()[:3] == [
        "v1 Q0 nc 1 0.9 demo", "v1 Q0 na 2 0.7 demo", "v1 Q0 nb 3 0.7 demo"]
    run = load_run(tmp_path / "demo.csv")
    assert run.name == "demo" and run.ranking["v1"] == ["nc", "na", "nb"] and run.provenance == {"method": "test"}
    # writing twice gives the same bytes
    first = {k: p.read_bytes() for k, p in written.items()}
    again = write_run(tmp_path, "demo", ranking, scores, {"method": "test"})
    assert {k: p.read_bytes() for k, p in again.items()} == first


def test_write_run_refuses_bad_name_and_repeats(tmp_path):
    with pytest.raises(BadInput):
        write_run(tmp_path, "../evil", {"v1": ["a"]})
    with pytest.raises(ValueError):
        write_run(tmp_path, "ok", {"v1": ["a", "a"]})


SUBMISSION_CASES = [
    ("empty.csv", None, "empty submission"),
    ("only_blank_lines.csv", None, "empty submission"),
    ("binary_junk.csv", 1, "binary data"),
    ("non_utf8.csv", 2, "not valid UTF-8"),
    ("duplicate_query.csv", 3, "listed twice"),
    ("path_like_id.csv", 1, "looks like a path"),
    ("path_like_query.csv", 1, "looks like a path"),
    ("bad_id_chars.csv", 1, "invalid ID"),
    ("header_row.csv", 1, "invalid ID"),
    ("no_predictions.csv", 2, "no predictions"),
    ("empty_cell.csv", 1, "empty cell"),
    ("semicolons.csv", 1, "invalid ID"),
]
TREC_CASES = [
    ("empty.trec", None, "empty TREC run"),
    ("five_columns.trec", 1, "expected 6 columns"),
    ("bad_rank.trec", 2, "not an integer"),
    ("bad_score.trec", 1, "not a number"),
    ("nan_score.trec", 1, "not finite"),
    ("duplicate_doc.trec", 2, "listed twice"),
    ("path_like_doc.trec", 1, "looks like a path"),
    ("binary_junk.trec", 1, "binary data"),
    ("non_utf8.trec", 1, "not valid UTF-8"),
]


def _one_line_error(result, path: Path, line, reason):
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, lines
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert where in lines[0] and reason in lines[0]
    assert "Traceback" not in result.err


@pytest.mark.parametrize("name,line,reason", SUBMISSION_CASES)
def test_malformed_submission_cli(cli, good_gt, tmp_path, name, line, reason):
    path = MALFORMED / "submission" / name
    _one_line_error(cli("score", path, "--gt", good_gt, "--no-leaderboard"), path, line, reason)


@pytest.mark.parametrize("name,line,reason", TREC_CASES)
def test_malformed_trec_cli(cli, good_gt, name, line, reason):
    path = MALFORMED / "trec" / name
    _one_line_error(cli("score", path, "--gt", good_gt, "--no-leaderboard"), path, line, reason)


@pytest.mark.parametrize("name,line,reason", [
    ("duplicate_query.csv", 3, "listed twice"), ("no_relevant.csv", 3, "no relevant ID"),
    ("path_like_id.csv", 2, "looks like a path"), ("non_utf8.csv", 2, "not valid UTF-8"),
    ("binary_junk.csv", 3, "binary data"), ("empty.csv", None, "no ground-truth rows"),
])
def test_malformed_gt_cli(cli, good_run, name, line, reason):
    path = MALFORMED / "gt" / name
    _one_line_error(cli("score", good_run, "--gt", path, "--no-leaderboard"), path, line, reason)


def test_missing_run_file_cli(cli, good_gt, tmp_path):
    result = cli("score", tmp_path / "absent.csv", "--gt", good_gt, "--no-leaderboard")
    assert result.code == 2 and "file not found" in result.err


@pytest.mark.parametrize("content,line,reason", [
    (b'{"method": "x",\n  oops}\n', 2, "invalid JSON"),
    (b"[1, 2]\n", 1, "run provenance must be a JSON object"),
])
def test_malformed_provenance_cli(cli, good_gt, good_run, content, line, reason):
    path = good_run.with_suffix(".json")
    path.write_bytes(content)
    _one_line_error(cli("score", good_run, "--gt", good_gt, "--no-leaderboard"), path, line, reason)
