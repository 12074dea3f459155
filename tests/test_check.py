"""`bpcr check`: every problem a team must fix before uploading, with its line."""
from __future__ import annotations

from pathlib import Path

import pytest

from bpcr.check import check_submission
from bpcr.manifest import write_manifest


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
