"""Runs (DESIGN.md "Runs"): the submission CSV, the TREC deep run and the JSON provenance,
read tolerantly and written deterministically."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.io.runs import load_run, read_submission, read_trec, write_run


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


def test_missing_run_file_cli(cli, good_gt, tmp_path):
    result = cli("score", tmp_path / "absent.csv", "--gt", good_gt, "--no-leaderboard")
    assert result.code == 2 and "file not found" in result.err


# ---------------------------------------------------------------- strict: every tolerated problem is an error


@pytest.mark.parametrize("content,line,reason", [
    (b"v1,a,b,c,d,e,f,g,\n", 1, "trailing comma"),
    (b"v1,a,b,c,d,e,f,g\n\nv2,a,b,c,d,e,f,g\n", 2, "blank line"),
    (b"v1 ,a,b,c,d,e,f,g\n", 1, "spaces around commas"),
    (b"\xef\xbb\xbfv1,a,b,c,d,e,f,g\n", 1, "byte order mark"),
    (b"v1,a,b,c,d,e,f,g\r\nv2,a,b,c,d,e,f,g\r\n", 1, "CRLF line end"),
    (b"v2,a,b,c,d,e,f,g\nv1,a,b,c,d,e,f,g\n", 2, "not sorted"),
])
def test_submission_strict_refuses_cosmetics_too(tmp_path, content, line, reason):
    path = tmp_path / "r.csv"
    path.write_bytes(content)
    assert read_submission(path)  # tolerated
    with pytest.raises(BadInput) as info:
        read_submission(path, strict=True)
    assert info.value.line == line and reason in info.value.reason and "--strict" in info.value.reason


def test_fewer_than_seven_is_an_error_only_with_exact_depth(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("v1,a,b,c,d,e\n")
    assert read_submission(path, strict=True) == {"v1": ["a", "b", "c", "d", "e"]}
    with pytest.raises(BadInput, match="5 predictions for query 'v1', the challenge wants exactly 7"):
        read_submission(path, strict=True, exact_depth=True)


@pytest.mark.parametrize("score", ["1_000", "\u0661", "\uff11", "0x1", "1e999", "nan"])
def test_trec_scores_are_ascii_decimal(tmp_path, score):
    path = tmp_path / "r.trec"
    path.write_text(f"v1 Q0 n1 1 {score} t\n", encoding="utf-8")
    with pytest.raises(BadInput) as info:
        read_trec(path)
    assert info.value.line == 1 and info.value.reason.startswith(f"score {score!r} is not")


@pytest.mark.parametrize("rank", ["\uff11", "\u0661", "1_0", "1.0", " "])
def test_trec_ranks_are_ascii_decimal(tmp_path, rank):
    path = tmp_path / "r.trec"
    path.write_text(f"v1\tQ0\tn1\t{rank}\t0.5\tt\n", encoding="utf-8")
    with pytest.raises(BadInput) as info:
        read_trec(path)
    assert info.value.line == 1


def test_trec_strict_wants_what_the_kit_writes(tmp_path):
    path = tmp_path / "r.trec"
    path.write_text("v1 Q0 n1 1 0.9 t\nv1 Q0 n2 2 0.9 t\nv1 Q0 n3 3 0.1 t\n")
    assert read_trec(path, strict=True)[0] == {"v1": ["n1", "n2", "n3"]}
    path.write_text("v1 Q0 n1 2 0.9 t\n")
    with pytest.raises(BadInput, match="rank 2 where query 'v1' is at rank 1"):
        read_trec(path, strict=True)
    assert read_trec(path)[0] == {"v1": ["n1"]}


def test_a_run_file_that_is_not_regular_is_refused_not_skipped(tmp_path):
    import os

    (tmp_path / "r.csv").write_text("v1,a,b,c,d,e,f,g\n")
    os.mkfifo(tmp_path / "r.json")
    with pytest.raises(BadInput, match="named pipe"):
        load_run(tmp_path / "r.csv")
    os.unlink(tmp_path / "r.json")
    (tmp_path / "r.trec").mkdir()
    with pytest.raises(BadInput, match="is a folder"):
        load_run(tmp_path / "r")
