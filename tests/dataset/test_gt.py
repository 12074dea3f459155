"""Ground truth in the challenge format (DESIGN.md "Ground truth"): tolerance, round trip, malformed files."""
from __future__ import annotations


import pytest

from bpcr.errors import BadInput
from bpcr.dataset.gt import read_ground_truth, write_ground_truth
from tests.helpers import DATA

MALFORMED = DATA / "malformed"


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


# ---------------------------------------------------------------- the header, recognised by its shape


@pytest.mark.parametrize("header", [
    "Validation Image ID,Training Image ID",   # the challenge's: cells with spaces
    "query,relevant", "qid,docid", "query_id,relevant_ids", "Query ID,Relevant", "#query,relevant",
])
def test_header_by_shape(tmp_path, header):
    path = tmp_path / "gt.csv"
    path.write_text(f"{header}\nv000101,n0292431\nv000104,n0185640,n0535953\n")
    assert read_ground_truth(path) == {"v000101": ["n0292431"], "v000104": ["n0185640", "n0535953"]}


def test_challenge_header_with_bom_and_crlf(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_bytes(b"\xef\xbb\xbfValidation Image ID,Training Image ID\r\nv000101,n0292431\r\n")
    assert read_ground_truth(path) == {"v000101": ["n0292431"]}


def test_first_row_of_digit_free_ids_is_data(tmp_path):
    # query IDs without digits: the first row is one of them, never dropped as a header
    path = tmp_path / "gt.csv"
    path.write_text("alpha,na\nbeta,nb\n")
    assert read_ground_truth(path) == {"alpha": ["na"], "beta": ["nb"]}
    path.write_text("query,relevant\nalpha,na\nv1,nb\n")  # 'alpha' has no digit either: 'query' is data
    assert set(read_ground_truth(path)) == {"query", "alpha", "v1"}


@pytest.mark.parametrize("first,line,reason", [
    ("v 1,n1", 1, "invalid ID 'v 1'"),         # a digit: a broken data row, not a header
    (",n1", 1, "row has no query ID"),
    ("v/1,n1", 1, "looks like a path"),
])
def test_broken_first_row_is_an_error_not_a_header(tmp_path, first, line, reason):
    path = tmp_path / "gt.csv"
    path.write_text(f"{first}\nv2,n2\n")
    with pytest.raises(BadInput) as info:
        read_ground_truth(path)
    assert info.value.line == line and reason in info.value.reason


def test_header_is_only_the_first_row(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("v1,n1\nquery,relevant\nv2 x,n2\n")
    with pytest.raises(BadInput) as info:
        read_ground_truth(path)
    assert info.value.line == 3
