"""`bpcr report` on a tiny generated dataset: order, marks, AP figures, determinism, bad input.

The page as a browser shows it is checked in test_report_browser.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers.report_dataset import AP, DIFF_ORDER, GT, RUNS, WORST_FIRST, make_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Path]:
    return make_dataset(tmp_path / "data")


def _report(cli, data: dict[str, Path], out: Path, *extra: object, half: str = "all"):
    """``bpcr report`` of the dataset's runs; all queries unless ``half`` says otherwise (the default is public)."""
    args = ("--half", half) if half else ()
    return cli("report", data["runs"], "--gt", data["gt"], "--out", out, "--manifest-db", data["db"],
               "--thumb", 48, *args, *extra)


def _sections(html: str) -> list[tuple[str, dict[str, float], list[tuple[str, int]]]]:
    """(query ID, {run: AP shown}, [(ID, relevant mark) of the first run's row]) per query, in page order."""
    found = []
    for section in re.findall(r'<section class="query".*?</section>', html, re.S):
        query = re.search(r'data-query="([^"]+)"', section).group(1)
        rows = re.findall(r'<tr class="run" data-run="([^"]+)".*?AP@7 ([0-9.]+)</span>(.*?)</tr>', section, re.S)
        marks = re.findall(r'data-id="([^"]+)" data-rank="\d" data-relevant="(\d)"', rows[0][2])
        found.append((query, {run: float(ap) for run, ap, _ in rows}, [(i, int(m)) for i, m in marks]))
    return found


def test_report_shows_worst_first_with_marks_and_ap(cli, dataset, tmp_path):
    out = tmp_path / "report"
    result = _report(cli, dataset, out)
    assert result.code == 0, result.err
    assert f"wrote {out / 'index.html'}" in result.out
    assert "1 image could not be shown" in result.err  # n99: not in the manifest
    html = (out / "index.html").read_text()
    sections = _sections(html)
    assert [q for q, _, _ in sections] == WORST_FIRST
    for query, shown, marks in sections:
        assert shown == {run: pytest.approx(AP[run][query], abs=5e-5) for run in RUNS}
        first_run = next(iter(shown))
        assert marks == [(d, int(d in GT[query])) for d in RUNS[first_run][query]]
    assert "<script" not in html and "http" not in html
    thumbs = sorted(p.name for p in (out / "thumbs").iterdir())
    assert len(thumbs) == 4 + 10 and all(name.endswith(".jpg") for name in thumbs)
    record = json.loads((out / "report.json").read_text())
    assert record["queries_shown"] == WORST_FIRST and record["format"].startswith("bpcr-report/")


def test_same_inputs_give_the_same_bytes(cli, dataset, tmp_path):
    out = tmp_path / "report"
    assert _report(cli, dataset, out).code == 0
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert _report(cli, dataset, out).code == 0  # a report folder is replaced
    second = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert first == second
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left beside it


def test_diff_orders_by_gain_and_limit_keeps_the_largest_changes(cli, dataset, tmp_path):
    assert _report(cli, dataset, tmp_path / "d", "--diff", "base", "better").code == 0
    assert [q for q, _, _ in _sections((tmp_path / "d" / "index.html").read_text())] == DIFF_ORDER
    assert _report(cli, dataset, tmp_path / "l", "--diff", "base", "better", "--limit", 2).code == 0
    # the two largest changes are v2 (+0.667) and v3 (+0.556); shown largest gain first
    assert [q for q, _, _ in _sections((tmp_path / "l" / "index.html").read_text())] == ["v2", "v3"]
    assert _report(cli, dataset, tmp_path / "w", "--limit", 1).code == 0
    assert [q for q, _, _ in _sections((tmp_path / "w" / "index.html").read_text())] == ["v3"]


def test_manifests_come_from_a_runs_json(cli, dataset, tmp_path):
    (dataset["runs"] / "better.json").write_text(json.dumps(
        {"run": "better", "method": "rerank", "inputs": [{"path": str(dataset["db"]), "sha256": ""},
                                                         {"path": str(dataset["queries"]), "sha256": ""}]}))
    out = tmp_path / "report"
    result = cli("report", dataset["runs"], "--gt", dataset["gt"], "--out", out)
    assert result.code == 0, result.err
    assert json.loads((out / "report.json").read_text())["manifests"]["database"] == str(dataset["db"])


def test_names_are_escaped(cli, dataset, tmp_path):
    gt = dataset["gt"].with_name("a&b<i>.csv")
    gt.write_bytes(dataset["gt"].read_bytes())
    out = tmp_path / "report"
    assert cli("report", dataset["runs"], "--gt", gt, "--out", out, "--manifest-db", dataset["db"],
               "--thumb", 16).code == 0
    html = (out / "index.html").read_text()
    assert "a&amp;b&lt;i&gt;.csv" in html and "<i>" not in html


@pytest.mark.parametrize("extra,words", [
    (("--diff", "base", "nope"), "'nope' is not one of the runs"),
    (("--diff", "base", "base"), "two different runs"),
    (("--thumb", 8), "--thumb"),
    (("--limit", 0), "--limit"),
])
def test_bad_options_give_one_line_and_exit_2(cli, dataset, tmp_path, extra, words):
    out = tmp_path / "report"
    result = _report(cli, dataset, out, *extra)
    assert result.code == 2 and words in result.err and result.err.strip().count("\n") == 0
    assert not out.exists()


def test_refuses_without_manifest_and_a_folder_it_did_not_write(cli, dataset, tmp_path):
    result = cli("report", dataset["runs"], "--gt", dataset["gt"], "--out", tmp_path / "r")
    assert result.code == 2 and "--manifest-db" in result.err and not (tmp_path / "r").exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    result = _report(cli, dataset, other)
    assert result.code == 2 and "not a bpcr report folder" in result.err
    assert [p.name for p in other.iterdir()] == ["holiday.jpg"]


def test_equal_means_tie_by_id_whatever_the_order_of_the_sum():
    from bpcr.evaluation.report import order_queries

    # q1's APs sum to exactly 1.0 and q2's to 0.9999999999999999 in floating point: the same mean all the same
    ap = {"a": {"q1": 0.1, "q2": 0.7}, "b": {"q1": 0.2, "q2": 0.1}, "c": {"q1": 0.7, "q2": 0.2}}
    assert order_queries(ap, ["a", "b", "c"])[0] == ["q1", "q2"]
    assert order_queries(ap, ["a", "b", "c"], limit=1)[0] == ["q1"]


# The seed-0 split of the dataset's four queries: v2 and v4 public, v1 and v3 private.
PUBLIC, PRIVATE = ["v2", "v4"], ["v1", "v3"]


def test_the_report_shows_the_public_half_by_default_and_says_so(cli, dataset, tmp_path):
    from bpcr.evaluation.split import QuerySplit

    assert QuerySplit().half(GT, "public") == PUBLIC and QuerySplit().half(GT, "private") == PRIVATE
    out = tmp_path / "report"
    result = _report(cli, dataset, out, half="")
    assert result.code == 0, result.err
    html = (out / "index.html").read_text()
    # worst first among the public queries only: v2 (mean 0.667) before v4 (0.75)
    assert [q for q, _, _ in _sections(html)] == ["v2", "v4"]
    assert "<b>Queries shown</b>: the public half only: 2 of the 4 queries (split seed 0, public share 0.5)" in html
    record = json.loads((out / "report.json").read_text())
    assert record["half"] == "public" and record["n_half"] == 2 and record["queries_shown"] == ["v2", "v4"]
    # the private half only when asked, and the page says what that means
    assert _report(cli, dataset, tmp_path / "p", half="private").code == 0
    html = (tmp_path / "p" / "index.html").read_text()
    assert [q for q, _, _ in _sections(html)] == ["v3", "v1"] and "the private half only: 2 of the 4" in html
    assert _report(cli, dataset, tmp_path / "a", half="all").code == 0
    assert "all 4 queries, both halves" in (tmp_path / "a" / "index.html").read_text()
    # a diff within the public half: v2 (+0.667) then v4 (-0.5); --limit counts within the half
    assert _report(cli, dataset, tmp_path / "d", "--diff", "base", "better", "--limit", 1, half="").code == 0
    assert [q for q, _, _ in _sections((tmp_path / "d" / "index.html").read_text())] == ["v2"]
    # another split moves the halves: the page follows --split-seed, as `bpcr score` does
    other = QuerySplit(seed=5, public_share=0.5).half(GT, "public")
    assert other != PUBLIC
    assert _report(cli, dataset, tmp_path / "s", "--split-seed", 5, half="").code == 0
    assert sorted(q for q, _, _ in _sections((tmp_path / "s" / "index.html").read_text())) == other
    bad = _report(cli, dataset, tmp_path / "x", half="both")
    assert bad.code == 2 and "unknown half 'both'; choose from public, private, all" in bad.err


def test_the_pipeline_report_follows_its_half(tmp_path):
    """[report] half is a ReportOptions field: the config accepts it, refuses a wrong one, and keys the page by it."""
    from bpcr.errors import BadInput
    from bpcr.pipeline.config import validate_config

    base = {"prepare": {"demo": True}, "extract": [{"name": "e", "backbone": "b", "poolings": ["mac"]}],
            "search": [{"name": "s", "features": "e/mac"}]}
    validate_config(tmp_path / "c.toml", dict(base, report={"half": "private"}))
    with pytest.raises(BadInput, match="unknown half 'both'; choose from public, private, all"):
        validate_config(tmp_path / "c.toml", dict(base, report={"half": "both"}))
