"""`bpcr score`: leaderboard, JSON, per-query export, strictness, comparisons."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpcr.runs import write_run


@pytest.fixture
def scored(tmp_path: Path) -> Path:
    gt = tmp_path / "gt.csv"
    gt.write_text("Validation Image ID,Training Image ID\nv1,a,b\nv2,c\nv3,d,e,f\n")
    subs = tmp_path / "submissions"
    subs.mkdir()
    # base: v1 5/6, v2 1/2, v3 0  -> 4/9
    (subs / "base.csv").write_text("v1,a,x,b\nv2,x,c\nv3,x,y\n")
    # better: v1 1, v2 1, v3 1 -> 1; derived from base per its provenance
    write_run(subs, "better", {"v1": ["a", "b"], "v2": ["c"], "v3": ["d", "e", "f"]},
              {"v1": [2.0, 1.0], "v2": [1.0], "v3": [3.0, 2.0, 1.0]},
              {"method": "rerank", "summary": "SIFT rerank of base", "input_run": "submissions/base.trec",
               "created": "2026-11-01T10:00:00Z"})
    return tmp_path


def test_json_and_per_query_by_hand(cli, scored: Path):
    out = scored / "s.json"
    per_query = scored / "pq.csv"
    result = cli("score", scored / "submissions", "--gt", scored / "gt.csv", "--json", out,
                 "--per-query", per_query, "--leaderboard", scored / "leaderboard.md")
    assert result.code == 0, result.err
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"base", "better"}
    assert runs["base"]["map7"] == pytest.approx(4 / 9)
    assert runs["base"]["p_at_1"] == pytest.approx(1 / 3)
    assert runs["base"]["hit_at_7"] == pytest.approx(2 / 3)
    assert runs["base"]["n_queries"] == 3
    lo, hi = runs["base"]["ci95"]
    assert 0 <= lo <= 4 / 9 <= hi <= 1
    assert runs["better"]["map7"] == 1.0
    assert runs["better"]["vs_baseline"]["baseline"] == "base"
    assert runs["better"]["vs_baseline"]["improved"] == 1.0  # v1 5/6->1, v2 1/2->1, v3 0->1
    assert runs["better"]["vs_baseline"]["impaired"] == 0.0
    assert per_query.read_text().splitlines() == [
        "run,query_id,ap", "base,v1,0.833333", "base,v2,0.500000", "base,v3,0.000000",
        "better,v1,1.000000", "better,v2,1.000000", "better,v3,1.000000"]


def test_leaderboard_sorted_deterministic(cli, scored: Path):
    board = scored / "leaderboard.md"
    args = ("score", scored / "submissions", "--gt", scored / "gt.csv", "--leaderboard", board)
    assert cli(*args).code == 0
    first = board.read_bytes()
    chart = board.with_suffix(".svg").read_bytes()
    assert cli(*args).code == 0
    assert board.read_bytes() == first
    assert board.with_suffix(".svg").read_bytes() == chart
    text = first.decode()
    rows = [line for line in text.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows[0].startswith("| 1 | `better` | 1.0000")
    assert "SIFT rerank of base" in rows[0] and "2026-11-01" in rows[0] and "`base`" in rows[0]
    assert rows[1].startswith("| 2 | `base` | 0.4444")
    assert "(leaderboard.svg)" in text


def test_explicit_baseline_and_holm(cli, scored: Path, tmp_path):
    subs = scored / "submissions"
    (subs / "third.csv").write_text("v1,b,a\nv2,c\nv3,f\n")
    out = scored / "s.json"
    result = cli("score", subs, "--gt", scored / "gt.csv", "--baseline", subs / "base.csv", "--json", out,
                 "--no-leaderboard", "--resamples", "2000")
    assert result.code == 0
    runs = json.loads(out.read_text())["runs"]
    assert "vs_baseline" not in runs["base"]
    ps = sorted((runs[n]["vs_baseline"]["p_value"], runs[n]["vs_baseline"]["p_holm"]) for n in ("better", "third"))
    # Holm: the smaller p is doubled, the larger kept (then made monotone)
    assert ps[0][1] == pytest.approx(min(1.0, max(2 * ps[0][0], 0)))
    assert ps[1][1] == pytest.approx(max(ps[1][0], ps[0][1]))
    assert all(0 < p <= 1 for pair in ps for p in pair)


def test_missing_and_unknown_queries_warn_then_strict_fails(cli, scored: Path):
    run = scored / "partial.csv"
    run.write_text("v1,a,b\nv9,a\n")
    result = cli("score", run, "--gt", scored / "gt.csv", "--no-leaderboard")
    assert result.code == 0
    assert "2 ground-truth queries missing" in result.err and "1 queries not in the ground truth" in result.err
    strict = cli("score", run, "--gt", scored / "gt.csv", "--no-leaderboard", "--strict")
    assert strict.code == 2 and len(strict.err.strip().splitlines()) == 1


def test_variant_option(cli, scored: Path):
    out = scored / "s.json"
    assert cli("score", scored / "submissions" / "base.csv", "--gt", scored / "gt.csv", "--variant", "cutoff-mean",
               "--json", out, "--no-leaderboard").code == 0
    data = json.loads(out.read_text())["runs"]["base"]
    # cutoff-mean: v1 a@1,b@3 -> AP@n/|G|: n=1: .5, n=2: .5, n>=3: (1+2/3)/2 ; v2 c@2 -> 0, then 1/2 from n=2
    v1 = (0.5 + 0.5 + 5 * (5 / 6)) / 7
    v2 = 6 * 0.5 / 7
    assert data["map7"] == pytest.approx((v1 + v2 + 0) / 3)
    assert cli("score", scored / "submissions", "--gt", scored / "gt.csv", "--variant", "bogus",
               "--no-leaderboard").code == 2


def test_deep_run_top_k(cli, scored: Path):
    subs = scored / "deep"
    ranking = {"v1": [f"x{i:03d}" for i in range(30)] + ["a"], "v2": ["c"], "v3": ["d"]}
    scores = {q: [float(-i) for i in range(len(ids))] for q, ids in ranking.items()}
    write_run(subs, "deep", ranking, scores, {"method": "t"}, depth=100)
    out = scored / "s.json"
    assert cli("score", subs, "--gt", scored / "gt.csv", "--json", out, "--no-leaderboard").code == 0
    top_k = json.loads(out.read_text())["runs"]["deep"]["top_k"]
    # depth 31 < 100: acc@100 is not reported; acc@20 = v2, v3 hit = 2/3
    assert top_k["100"] is None and top_k["20"] == pytest.approx(2 / 3) and top_k["1"] == pytest.approx(2 / 3)


def test_cli_exit_code_in_subprocess(scored: Path):
    import subprocess
    import sys

    bad = scored / "bad.csv"
    bad.write_bytes(b"v1,../x\n")
    proc = subprocess.run([sys.executable, "-m", "bpcr", "score", str(bad), "--gt", str(scored / "gt.csv"),
                           "--no-leaderboard"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "bad.csv:1" in proc.stderr


@pytest.mark.parametrize("command", ["train", "report"])
def test_unbuilt_commands_say_so(cli, command):
    result = cli(command)
    assert result.code == 2 and "not built yet" in result.err


def test_version(cli):
    from bpcr import __version__

    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"bpcr {__version__}"


def test_demo_then_score_hand_written_runs(cli, tmp_path):
    """The first thing a new user does: make the demo, then score a few runs written by hand."""
    from bpcr.gt import read_ground_truth
    from bpcr.manifest import read_manifest

    demo = tmp_path / "demo"
    made = cli("prepare", "--demo", "--out", demo, "--n-products", 6, "--n-distractors", 20, "--n-queries", 5,
               "--workers", 1)
    assert made.code == 0, made.err
    gt = read_ground_truth(demo / "prepared" / "ground_truth.csv")
    db_ids = read_manifest(demo / "prepared" / "database.csv").ids
    runs = tmp_path / "runs"
    runs.mkdir()
    perfect = {q: (rel + [d for d in db_ids if d not in rel])[:7] for q, rel in gt.items()}
    wrong = {q: [d for d in db_ids if d not in rel][:7] for q, rel in gt.items()}
    (runs / "oracle.csv").write_text("".join(f"{q},{','.join(ids)}\n" for q, ids in sorted(perfect.items())))
    (runs / "wrong.csv").write_text("".join(f"{q},{','.join(ids)}\n" for q, ids in sorted(wrong.items())))
    board = tmp_path / "leaderboard.md"
    result = cli("score", runs, "--gt", demo / "ground_truth.csv", "--leaderboard", board, "--resamples", 500)
    assert result.code == 0, result.err
    text = board.read_text()
    assert "| 1 | `oracle` | 1.0000 |" in text and "| 2 | `wrong` | 0.0000 |" in text
    assert cli("check", runs / "oracle.csv", "--manifest", demo / "prepared" / "database.csv").code == 0
