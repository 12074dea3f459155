"""`bpcr score`: leaderboard, JSON, per-query export, strictness, comparisons."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpcr.io.runs import write_run


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
    # No date: a re-made run on another day gives the same leaderboard.
    assert "SIFT rerank of base" in rows[0] and "2026-11-01" not in text and "`base`" in rows[0]
    # The seed-0 split puts v1 and v3 in the private half: base scores (5/6 + 0) / 2 there, 1/2 on v2, 4/9 on all.
    assert rows[1].startswith("| 2 | `base` | 0.4167 | ") and "| 0.5000 | 0.4444 |" in rows[1]
    assert "(leaderboard.svg)" in text and "private half (2)" in text and "public half (1)" in text


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


def test_version(cli):
    from bpcr import __version__

    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"bpcr {__version__}"


def test_demo_then_score_hand_written_runs(cli, tmp_path):
    """The first thing a new user does: make the demo, then score a few runs written by hand."""
    from bpcr.dataset.gt import read_ground_truth
    from bpcr.dataset.manifest import read_manifest

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


def test_public_private_columns_and_in_sample_marks(cli, scored: Path):
    subs = scored / "submissions"
    # A run that says it was tuned on v2 (the public half) and v1 (private): in-sample on both halves and on all.
    write_run(subs, "tuned", {"v1": ["a", "b"], "v2": ["c"], "v3": ["x"]}, None,
              {"method": "ensemble:rrf", "tuned_on": {"query_ids": ["v1", "v2"], "half": "all"}})
    # Tuned on the public half only: its private figure is held out.
    write_run(subs, "honest", {"v1": ["a"], "v2": ["c"], "v3": ["x"]}, None,
              {"method": "ensemble:rrf", "tuned_on": {"query_ids": ["v2"], "half": "public"}})
    out = scored / "s.json"
    result = cli("score", subs, "--gt", scored / "gt.csv", "--json", out, "--leaderboard", scored / "lb.md")
    assert result.code == 0, result.err
    data = json.loads(out.read_text())
    runs = data["runs"]
    assert data["split"] == {"method": "bpcr-split/1", "seed": 0, "public_share": 0.5}
    assert runs["base"]["private"]["n_queries"] == 2 and runs["base"]["public"]["n_queries"] == 1
    assert runs["base"]["private"]["map7"] == pytest.approx((5 / 6 + 0) / 2)
    assert runs["base"]["in_sample"] is False
    assert runs["tuned"]["in_sample"] and runs["tuned"]["private"]["in_sample"] and runs["tuned"]["public"]["in_sample"]
    assert runs["honest"]["in_sample"] and runs["honest"]["public"]["in_sample"]
    assert not runs["honest"]["private"]["in_sample"]
    rows = {line.split("`")[1]: line for line in (scored / "lb.md").read_text().splitlines() if line.startswith("| ")
            and "`" in line}
    assert " *" in rows["tuned"].split("|")[3] and " *" in rows["honest"].split("|")[5]
    assert " *" not in rows["honest"].split("|")[3] and " *" not in rows["base"]
    # Tuned on private queries: ranked after every run that was not, whatever its score.
    order = [line.split("`")[1] for line in (scored / "lb.md").read_text().splitlines() if line.startswith("| ")
             and "`" in line]
    assert order[-1] == "tuned"


def test_split_options(cli, scored: Path):
    out = scored / "s.json"
    result = cli("score", scored / "submissions", "--gt", scored / "gt.csv", "--json", out, "--no-leaderboard",
                 "--split-seed", "5", "--public-share", "0.9")
    assert result.code == 0, result.err
    assert json.loads(out.read_text())["split"]["seed"] == 5


def _hand_made_scores():
    from bpcr.evaluation.score import Comparison, HalfScore, RunScore
    from bpcr.evaluation.split import QuerySplit

    def run(name, private, public, all_, comparison=None, in_sample=False):
        return RunScore(name=name, map7=all_, ci95=(all_ - 0.1, all_ + 0.1), p_at_1=0.5, hit_at_7=0.75, n_queries=4,
                        variants={}, top_k={1: 0.5, 7: 0.75, 20: None, 100: None}, per_query={}, missing=0,
                        unknown=0, depth=7, summary="a_b & c", created="", comparison=comparison,
                        halves={"private": HalfScore(private, (private - 0.2, private + 0.2), 2),
                                "public": HalfScore(public, (public, public), 2, in_sample)},
                        in_sample=in_sample, split=QuerySplit())

    better = run("fused_x", 0.75, 0.5, 0.625, Comparison("base", 0.25, 0.5, 0.0, 0.01, 0.02), in_sample=True)
    return [better, run("base", 0.5, 0.25, 0.375)]


def test_csv_and_latex_exports_by_hand():
    from bpcr.evaluation.leaderboard import leaderboard_csv, leaderboard_latex

    rows = leaderboard_csv(_hand_made_scores()).splitlines()
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(",")))
    assert first["rank"] == "1" and first["run"] == "fused_x" and first["private_map7"] == "0.75"
    assert first["private_ci95_low"] == "0.55" and first["public_in_sample"] == "True" and first["baseline"] == "base"
    assert first["delta_private"] == "0.25" and first["p_holm"] == "0.02" and first["acc_at_20"] == ""
    assert rows[2].split(",")[:3] == ["2", "base", "0.5"] and len(rows) == 3
    tex = leaderboard_latex(_hand_made_scores(), "demo_gt.csv")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "demo\\_gt.csv" in tex
    line = next(x for x in tex.splitlines() if x.startswith("1 & "))
    # Significantly better than its baseline (p 0.02 < 0.05): a dagger; its public figure is in-sample.
    assert line == "1 & \\texttt{fused\\_x} & 0.7500$^{\\dagger}$ & 0.5000$^{*}$ & 0.6250$^{*}$ & \\texttt{base} \\\\"
    assert next(x for x in tex.splitlines() if x.startswith("2 & ")).endswith("0.3750 & -- \\\\")


def test_cli_writes_csv_and_latex_beside_the_leaderboard(cli, scored: Path):
    result = cli("score", scored / "submissions", "--gt", scored / "gt.csv", "--leaderboard", scored / "lb.md",
                 "--csv", scored / "lb.csv", "--latex", scored / "lb.tex")
    assert result.code == 0, result.err
    assert (scored / "lb.csv").read_text().splitlines()[1].startswith("1,better,1.0,")
    assert "\\texttt{better}" in (scored / "lb.tex").read_text()
    clash = cli("score", scored / "submissions", "--gt", scored / "gt.csv", "--leaderboard", scored / "lb.md",
                "--csv", scored / "lb.md")
    assert clash.code == 2 and "--csv" in clash.err and len(clash.err.strip().splitlines()) == 1
