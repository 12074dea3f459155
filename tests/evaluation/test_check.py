"""`bpcr check`: every problem a team must fix before uploading, with its line."""
from __future__ import annotations

from pathlib import Path

import pytest

from bpcr.evaluation.check import check_submission
from bpcr.dataset.manifest import write_manifest


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    db = [f"n{i}" for i in range(10)]
    write_manifest(prepared / "database.csv", db, [tmp_path / f"{i}.jpg" for i in db], [1] * 10, [1] * 10, [""] * 10)
    qs = ["v1", "v2"]
    write_manifest(prepared / "queries.csv", qs, [tmp_path / f"{i}.jpg" for i in qs], [1] * 2, [1] * 2, [""] * 2)
    return prepared / "database.csv"


def test_valid_submission(cli, manifests, tmp_path):
    sub = tmp_path / "ok.csv"
    sub.write_text("v1,n0,n1,n2,n3,n4,n5,n6\nv2,n9,n8,n7,n6,n5,n4,n3\n")
    result = cli("check", sub, "--manifest", manifests)
    assert result.code == 0 and "OK, 2 queries, 0 warnings" in result.out


def test_every_problem_reported_with_its_line(manifests, tmp_path):
    sub = tmp_path / "bad.csv"
    sub.write_text("v2,n0,n1,n2,n3,n4,n5\nv1,n0,n0,n2,n3,n4,n5,n6\nv7,n0,n1,n2,n3,n4,n5,zz\n")
    report = check_submission(sub, manifests)
    problems = {(line, reason) for line, reason in report.errors}
    assert (1, "6 predictions, exactly 7 required") in problems
    assert (2, "not sorted: 'v1' comes after 'v2'") in problems
    assert (2, "ID 'n0' repeated") in problems
    assert (3, "query 'v7' is not in the query set") in problems
    assert (3, "ID 'zz' is not in the database manifest") in problems
    assert not report.ok


def test_header_missing_query_and_cosmetics(cli, manifests, tmp_path):
    sub = tmp_path / "h.csv"
    sub.write_bytes(b"\xef\xbb\xbfquery id,a,b,c,d,e,f,g\r\nv1, n0,n1,n2,n3,n4,n5,n6,\r\n")
    report = check_submission(sub, manifests)
    reasons = [r for _, r in report.errors]
    assert any("header row" in r for r in reasons)
    assert any("1 queries of the query set missing" in r for r in reasons)
    warnings = [r for _, r in report.warnings]
    assert "spaces around commas" in warnings and "trailing comma" in warnings and "CRLF line ends" in warnings
    result = cli("check", sub, "--manifest", manifests)
    assert result.code == 2 and "h.csv:1" in result.err.splitlines()[-1]


def test_binary_file_is_bad_input(cli, manifests, tmp_path):
    sub = tmp_path / "junk.csv"
    sub.write_bytes(b"\x00\x01\x02")
    result = cli("check", sub, "--manifest", manifests)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1


def test_a_long_line_costs_linear_time_and_few_lines(manifests, tmp_path):
    sub = tmp_path / "long.csv"
    ids = [f"x{i}" for i in range(20_000)] + ["n1", "n1"]
    sub.write_text("v1," + ",".join(ids) + "\nv2,n0,n1,n2,n3,n4,n5,n6\n")
    report = check_submission(sub, manifests)
    reasons = [reason for _, reason in report.errors]
    assert "20002 predictions, exactly 7 required" in reasons
    assert "19993 more IDs not in the database manifest on this line" in reasons
    assert "ID 'n1' repeated" in reasons
    assert len(reasons) < 15


def test_line_ends_and_bom_are_warnings_with_their_line(manifests, tmp_path):
    sub = tmp_path / "w.csv"
    sub.write_bytes(b"\xef\xbb\xbfv1,n0,n1,n2,n3,n4,n5,n6\nv2,n9,n8,n7,n6,n5,n4,n3\r\n")
    report = check_submission(sub, manifests)
    assert report.ok
    assert report.warnings == [(1, "UTF-8 byte order mark at the start of the file"), (2, "CRLF line ends")]


# ---------------------------------------------------------------- ground truth


def _gt_fixture(tmp_path):
    from bpcr.dataset.manifest import write_manifest

    db = tmp_path / "database.csv"
    write_manifest(db, ["n1", "n2", "n3"], [tmp_path / f"n{i}.jpg" for i in (1, 2, 3)], [5] * 3, [5] * 3, [""] * 3)
    write_manifest(tmp_path / "queries.csv", ["v1", "v2"], [tmp_path / "v1.jpg", tmp_path / "v2.jpg"], [5, 5], [5, 5],
                   ["", ""])
    return db


def test_check_gt_accepts_the_challenge_format_with_bom_and_crlf(cli, tmp_path):
    db = _gt_fixture(tmp_path)
    gt = tmp_path / "val.csv"
    gt.write_bytes("\ufeffValidation Image ID,Training Image ID\r\nv1,n1\r\nv2,n2,n3\r\n".encode())
    result = cli("check", "--gt", gt, "--manifest", db)
    assert result.code == 0, result.err
    assert "OK, 2 queries" in result.out
    assert "byte order mark" in result.err and "CRLF" in result.err


def test_check_gt_reports_every_problem_with_its_line(cli, tmp_path):
    db = _gt_fixture(tmp_path)
    gt = tmp_path / "bad.csv"
    gt.write_text("Validation Image ID,Training Image ID\nv1,n1,n9\nv1,n2\nv2\nzz,n1,n1\n../x,n1\n")
    result = cli("check", "--gt", gt, "--manifest", db)
    assert result.code == 2
    for expected in (f"{gt}:2: relevant ID 'n9' is not in the database manifest",
                     f"{gt}:3: query 'v1' already on line 2", f"{gt}:4: query 'v2' has no relevant ID",
                     f"{gt}:5: query 'zz' is not in the query set", f"{gt}:5: relevant ID 'n1' listed twice",
                     f"{gt}:6: invalid query ID '../x'"):
        assert expected in result.err
    assert result.err.strip().splitlines()[-1].startswith(f"error: {gt}:2:")


def test_check_needs_one_thing_to_check(cli, tmp_path):
    result = cli("check")
    assert result.code == 2 and "--gt" in result.err and len(result.err.strip().splitlines()) == 1
    result = cli("check", tmp_path / "x.csv")
    assert result.code == 2 and "--manifest" in result.err


def test_a_run_whose_files_disagree_is_reported(cli, manifests, tmp_path):
    """Killed between two renames, a run's .csv can be new and its .trec old: check names the mix."""
    import json

    from bpcr.io.fileio import JOURNAL
    from bpcr.io.runs import write_run

    db = [f"n{i}" for i in range(10)]
    scores = {"v1": [10.0 - i for i in range(10)], "v2": [10.0 - i for i in range(10)]}
    write_run(tmp_path / "runs", "r", {"v1": db, "v2": db[::-1]}, scores, {"k": 1})
    assert cli("check", tmp_path / "runs" / "r.csv", "--manifest", manifests).code == 0
    write_run(tmp_path / "other", "r", {"v1": db[::-1], "v2": db[::-1]}, scores, {"k": 1})
    (tmp_path / "other" / "r.trec").replace(tmp_path / "runs" / "r.trec")  # an old .trec beside a new .csv
    result = cli("check", tmp_path / "runs" / "r.csv", "--manifest", manifests)
    assert result.code != 0 and "r.trec, beside it, answers query 'v1' otherwise" in result.out + result.err
    (tmp_path / "runs" / "r.trec").unlink()
    (tmp_path / "runs" / JOURNAL).write_text(json.dumps({}))
    result = cli("check", tmp_path / "runs" / "r.csv", "--manifest", manifests)
    assert result.code != 0 and "was cut short" in result.out + result.err
