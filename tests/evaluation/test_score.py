"""`bpcr score`: leaderboard, JSON, per-query export, strictness, comparisons."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpcr.evaluation.split import QuerySplit
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


def test_ranked_by_the_private_half_not_by_all_queries(cli, scored: Path):
    """v1 and v3 are private, v2 public (seed 0). `private` is perfect on v1 and v3 and misses v2: private 1, all
    2/3. `overall` is perfect on v1 and v2, and finds e and f at 2 and 3 on v3 (7/18): private 0.694, all 0.796.
    Ranked by the private half, `private` comes first; ranked by all queries (or the public half) it would not."""
    subs = scored / "order"
    (subs).mkdir()
    (subs / "private.csv").write_text("v1,a,b\nv2,x\nv3,d,e,f\n")
    (subs / "overall.csv").write_text("v1,a,b\nv2,c\nv3,x,e,f\n")  # v3: (1/2 + 2/3) / 3
    out = scored / "s.json"
    result = cli("score", subs, "--gt", scored / "gt.csv", "--json", out, "--leaderboard", scored / "lb.md",
                 "--csv", scored / "lb.csv")
    assert result.code == 0, result.err
    runs = json.loads(out.read_text())["runs"]
    v3 = (1 / 2 + 2 / 3) / 3
    assert runs["private"]["private"]["map7"] == pytest.approx(1.0) and runs["private"]["map7"] == pytest.approx(2 / 3)
    assert runs["overall"]["private"]["map7"] == pytest.approx((1 + v3) / 2)
    assert runs["overall"]["map7"] == pytest.approx((2 + v3) / 3)
    assert runs["overall"]["map7"] > runs["private"]["map7"] and runs["overall"]["public"]["map7"] == 1.0
    order = [line.split("`")[1] for line in (scored / "lb.md").read_text().splitlines()
             if line.startswith("| ") and "`" in line]
    assert order == ["private", "overall"]
    assert [row.split(",")[1] for row in (scored / "lb.csv").read_text().splitlines()[1:]] == order


def test_score_intervals_are_the_bootstrap_of_the_per_query_aps(tmp_path, cli):
    """Each interval is the seeded percentile bootstrap of the per-query APs it summarises (all queries, and each
    half), recomputed here from --per-query's APs with numpy alone."""
    import numpy as np

    rng = np.random.default_rng(4)
    gt = {f"v{i:02d}": [f"g{i}{j}" for j in range(int(rng.integers(1, 5)))] for i in range(40)}
    (tmp_path / "gt.csv").write_text("Validation Image ID,Training Image ID\n" +
                                     "".join(f"{q},{','.join(r)}\n" for q, r in gt.items()))
    lines = []
    for q, rel in gt.items():
        pool = rel + [f"x{k}" for k in range(7)]
        lines.append(f"{q},{','.join(rng.permutation(pool)[:7])}\n")
    (tmp_path / "run.csv").write_text("".join(lines))
    out, per_query = tmp_path / "s.json", tmp_path / "pq.csv"
    result = cli("score", tmp_path / "run.csv", "--gt", tmp_path / "gt.csv", "--json", out, "--per-query",
                 per_query, "--no-leaderboard", "--resamples", 3000, "--seed", 9)
    assert result.code == 0, result.err
    entry = json.loads(out.read_text())["runs"]["run"]
    ap = {row.split(",")[1]: float(row.split(",")[2]) for row in per_query.read_text().splitlines()[1:]}

    def bootstrap(queries):
        values = np.array([ap[q] for q in sorted(queries)])
        idx = np.random.default_rng(9).integers(0, len(values), size=(3000, len(values)))
        return np.quantile(values[idx].mean(axis=1), [0.025, 0.975])

    assert len(set(ap.values())) > 3  # per-query APs that vary: the interval is not a point
    public = [q for q in gt if QuerySplit().is_public(q)]
    private = [q for q in gt if not QuerySplit().is_public(q)]
    # --per-query rounds to 6 decimals: the interval agrees to that
    assert entry["ci95"] == pytest.approx(bootstrap(gt), abs=1e-6)
    assert entry["public"]["ci95"] == pytest.approx(bootstrap(public), abs=1e-6)
    assert entry["private"]["ci95"] == pytest.approx(bootstrap(private), abs=1e-6)
    assert entry["ci95"][0] < entry["map7"] < entry["ci95"][1]


def test_public_share_sets_the_size_of_the_public_half(tmp_path, cli):
    """--public-share p puts a query in the public half when sha256("bpcr-split/1:SEED:ID") read as a fraction is
    below p (written out here); each half's mAP@7 is the mean over exactly those queries."""
    import hashlib

    gt = {f"v{i:03d}": [f"g{i}"] for i in range(60)}
    (tmp_path / "gt.csv").write_text("Validation Image ID,Training Image ID\n" +
                                     "".join(f"{q},{','.join(r)}\n" for q, r in gt.items()))
    # every third query answered right: AP 1, else 0
    (tmp_path / "run.csv").write_text("".join(f"{q},{r[0] if i % 3 == 0 else 'x'}\n"
                                              for i, (q, r) in enumerate(gt.items())))
    fraction = {q: int.from_bytes(hashlib.sha256(f"bpcr-split/1:2:{q}".encode()).digest()[:8], "big") / 2.0 ** 64
                for q in gt}
    sizes = []
    for share in (0.2, 0.5, 0.8):
        out = tmp_path / f"s{share}.json"
        result = cli("score", tmp_path / "run.csv", "--gt", tmp_path / "gt.csv", "--json", out, "--no-leaderboard",
                     "--split-seed", 2, "--public-share", share, "--resamples", 100)
        assert result.code == 0, result.err
        data = json.loads(out.read_text())
        entry = data["runs"]["run"]
        public = [q for q in gt if fraction[q] < share]
        private = [q for q in gt if fraction[q] >= share]
        right = {q for i, q in enumerate(gt) if i % 3 == 0}
        assert data["split"] == {"method": "bpcr-split/1", "seed": 2, "public_share": share}
        assert entry["public"]["n_queries"] == len(public) and entry["private"]["n_queries"] == len(private)
        assert entry["public"]["map7"] == pytest.approx(len(right & set(public)) / len(public))
        assert entry["private"]["map7"] == pytest.approx(len(right & set(private)) / len(private))
        sizes.append(len(public))
    assert sizes[0] < sizes[1] < sizes[2]
    for bad in ("0", "1", "1.5"):
        refused = cli("score", tmp_path / "run.csv", "--gt", tmp_path / "gt.csv", "--no-leaderboard",
                      "--public-share", bad)
        assert refused.code == 2 and "--public-share" in refused.err


def test_variant_hits_by_hand(cli, scored: Path):
    """hits divides by the relevant images found in the top 7: v1 a@1 -> 1 (challenge 1/2), v2 c@2 -> 1/2,
    v3 d@1 of {d, e, f} -> 1 (challenge 1/3)."""
    run = scored / "h.csv"
    run.write_text("v1,a\nv2,x,c\nv3,d\n")
    out = scored / "s.json"
    assert cli("score", run, "--gt", scored / "gt.csv", "--variant", "hits", "--json", out,
               "--no-leaderboard").code == 0
    data = json.loads(out.read_text())["runs"]["h"]
    assert data["map7"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert data["variants"]["hits"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert data["variants"]["challenge"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
