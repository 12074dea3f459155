"""`bpcr sweep`: grid axes, config edits, and a tiny sweep that chooses on the public half."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bpcr.errors import BadInput
from bpcr.pipeline.sweep import Axis, apply_point, parse_axis

pytestmark = pytest.mark.slow  # module fixtures build a dataset, a network or a pipeline run

RERANK = """[[rerank]]
name = "sift"
input = "mac"
top = 3
"""


def test_axes_by_hand():
    assert parse_axis("rerank.max_keypoints=250,500") == Axis("rerank", None, "max_keypoints", (250, 500))
    assert parse_axis("rerank.sift.scorer=matches,inliers").entry == "sift"
    assert parse_axis("index.kind=flat").values == ("flat",)
    assert parse_axis("refine.k_keep=1, 3").values == (1, 3)
    assert parse_axis("rerank.blend_weight=0.5,true").values == (0.5, True)
    for bad in ("rerank=1", "max_keypoints=1", "a.b.c.d=1", "rerank.top=", "rerank.top=1,1"):
        with pytest.raises(BadInput, match="--grid"):
            parse_axis(bad)


def test_apply_point_edits_a_copy():
    config = {"index": {"metric": "cosine"}, "rerank": [{"name": "a", "top": 1}, {"name": "b", "top": 1}]}
    edited = apply_point(config, [parse_axis("rerank.b.top=5"), parse_axis("index.metric=l2")], [5, "l2"])
    assert edited == {"index": {"metric": "l2"}, "rerank": [{"name": "a", "top": 1}, {"name": "b", "top": 5}]}
    assert config["rerank"][1]["top"] == 1
    assert apply_point(config, [parse_axis("rerank.top=7")], [7])["rerank"][0]["top"] == 7
    with pytest.raises(BadInput, match="no \\[\\[rerank\\]\\] named 'c'"):
        apply_point(config, [parse_axis("rerank.c.top=1")], [1])
    with pytest.raises(BadInput, match="no \\[refine\\]"):
        apply_point(config, [parse_axis("refine.k_keep=1")], [1])


def _public_ids(gt, seed: int, share: float = 0.5) -> list[str]:
    """The public half as the split's docstring defines it, written out here: sha256("bpcr-split/1:seed:id")."""
    return sorted(q for q in gt if int.from_bytes(hashlib.sha256(f"bpcr-split/1:{seed}:{q}".encode()).digest()[:8],
                                                  "big") / 2.0 ** 64 < share)


def _map7_by_hand(csv: Path, gt, queries) -> float:
    """The challenge's mAP@7 of a submission CSV on ``queries``, written out here (not the kit's scorer)."""
    ranking = {}
    for line in csv.read_text().splitlines():
        query, *ids = [cell.strip() for cell in line.split(",")]
        ranking[query] = ids[:7]
    total = 0.0
    for q in queries:
        hits, ap, seen = 0, 0.0, set()
        for rank, doc in enumerate(ranking.get(q, []), start=1):
            if doc in gt[q] and doc not in seen:
                hits += 1
                ap += hits / rank
            seen.add(doc)
        total += ap / min(len(gt[q]), 7)
    return total / len(queries)


def test_tiny_sweep_chooses_on_public_and_reports_private(tmp_path, monkeypatch, cli, tiny_demo_config):
    from bpcr.dataset.gt import read_ground_truth

    (tmp_path / "tiny.toml").write_text(tiny_demo_config(8, then=RERANK))
    monkeypatch.chdir(tmp_path)
    result = cli("sweep", "tiny.toml", "--grid", "rerank.top=3,8", "--run", "sift", "--out", "chosen.toml")
    assert result.code == 0, result.err
    data = json.loads((tmp_path / "work" / "sweep" / "sweep.json").read_text())
    points = data["points"]
    assert [p["settings"] for p in points] == [{"rerank.top": 3}, {"rerank.top": 8}]
    # The choice, recomputed from each point's written run with a scorer and a split written out here.
    gt = read_ground_truth(tmp_path / "work" / "ground_truth.csv")
    public = _public_ids(gt, 0)
    private = sorted(set(gt) - set(public))
    assert 0 < len(public) < len(gt)
    runs = [tmp_path / "work" / "sweep" / f"point-00{i}" / "submissions" / "sift.csv" for i in range(2)]
    publics = [_map7_by_hand(run, gt, public) for run in runs]
    assert publics[0] != publics[1]  # the grid's points differ on the public half: the choice is a real one
    assert data["chosen"] == max(range(2), key=lambda i: (publics[i], -i))
    assert [p["public"] for p in points] == pytest.approx(publics)
    assert [p["private"] for p in points] == pytest.approx([_map7_by_hand(run, gt, private) for run in runs])
    assert all(p["private"] is not None and set(p["runs"]) == {"mac", "sift"} for p in points)
    chosen = (tmp_path / "chosen.toml").read_text()
    assert chosen.startswith("# Chosen by `bpcr sweep` on the public half")
    assert f"top = {[3, 8][data['chosen']]}" in chosen
    table = (tmp_path / "work" / "sweep" / "sweep.md").read_text()
    assert "| point-000 | 3 |" in table and "chosen" in table
    # The chosen point's public and all figures are in-sample; the private one is not.
    row = next(line for line in table.splitlines() if line.endswith("| chosen |")).split("|")
    assert row[3].strip().endswith(" *") and not row[4].strip().endswith("*") and row[5].strip().endswith(" *")
    # The chosen config says what it was chosen on: the public queries, for the run the setting reaches.
    chosen_on = data["chosen_on"]
    assert chosen_on["query_ids"] == public and chosen_on["runs"] == ["sift"] and chosen_on["half"] == "public"
    assert "[[score.chosen_on]]" in chosen
    # Each point wrote its own runs.
    assert (tmp_path / "work" / "sweep" / "point-001" / "submissions" / "sift.trec").is_file()
    bad = cli("sweep", "tiny.toml", "--grid", "rerank.nope.top=1")
    assert bad.code == 2 and bad.err.count("\n") == 1


# A second run to fuse and a tuned ensemble, on split seed 5: its public half (3 of the tiny demo's 8 queries) shares
# no query with seed 0's, so an ensemble tuned on seed 0's public half would be tuned on seed 5's private half.
TUNED = RERANK + """[[ensemble]]
name = "ens"
inputs = ["mac", "sift"]
method = "rrf"
tune = true
folds = 2
[score]
split_seed = 5
"""


def test_one_split_for_the_sweep_its_tuned_ensembles_and_the_chosen_leaderboard(tmp_path, monkeypatch, cli,
                                                                                tiny_demo_config):
    from bpcr.dataset.gt import read_ground_truth

    (tmp_path / "tiny.toml").write_text(tiny_demo_config(8, then=TUNED))
    monkeypatch.chdir(tmp_path)
    refused = cli("sweep", "tiny.toml", "--grid", "rerank.top=3,8", "--run", "sift", "--split-seed", "0")
    assert refused.code == 2 and "differs from the config's [score] split_seed = 5" in refused.err
    assert not (tmp_path / "work").exists()
    result = cli("sweep", "tiny.toml", "--grid", "rerank.top=3,8", "--run", "sift", "--out", "chosen.toml")
    assert result.code == 0, result.err
    gt = read_ground_truth(tmp_path / "work" / "ground_truth.csv")
    public5, public0 = _public_ids(gt, 5), _public_ids(gt, 0)
    assert len(public5) >= 2 and not set(public5) & set(public0)
    data = json.loads((tmp_path / "work" / "sweep" / "sweep.json").read_text())
    assert data["split"] == {"seed": 5, "public_share": 0.5}
    # every point's tuned ensemble chose its weights on [score]'s public half, not seed 0's
    for i in range(2):
        tuned_on = json.loads((tmp_path / "work" / "sweep" / f"point-00{i}" / "submissions" / "ens.json").read_text()
                              )["tuned_on"]
        assert tuned_on["split"]["seed"] == 5 and tuned_on["query_ids"] == public5
    # the sweep chose on seed 5's public half, and the choice reaches sift and the ensemble fused from it
    chosen_on = data["chosen_on"]
    assert chosen_on["query_ids"] == public5 and chosen_on["split"]["seed"] == 5
    assert chosen_on["runs"] == ["sift", "ens"]
    # `bpcr run` of the chosen config: its leaderboard stars what the sweep chose on, and mac stays clean
    ran = cli("run", "chosen.toml")
    assert ran.code == 0, ran.err
    scores = json.loads((tmp_path / "work" / "scores.json").read_text())["runs"]
    assert scores["sift"]["public"]["in_sample"] and scores["sift"]["in_sample"]
    assert not scores["sift"]["private"]["in_sample"] and not scores["mac"]["in_sample"]
    # (the re-ranking defaults chosen on the demo's own queries are listed too, reaching none of these)
    assert [c["by"] for c in scores["sift"]["chosen_on"] if c["n_scored"]] == ["bpcr sweep --grid rerank.top=3,8"]
    assert scores["ens"]["public"]["in_sample"] and not scores["ens"]["private"]["in_sample"]
    board = (tmp_path / "lb.md").read_text()
    assert "In-sample figures" in board and "- `sift` (in-sample: public, all)" in board and "- `mac`" not in board


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_bad_sweep_is_refused_before_anything_is_written(tmp_path, monkeypatch, cli, tiny_demo_config):
    """A grid too big, a point whose config is bad, an --out that cannot be written: one line, no point-* folder,
    before any point runs (the config's own demo is never even generated)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(tiny_demo_config(8, then=TUNED))
    (tmp_path / "a-folder").mkdir()
    before = _listing(tmp_path)
    values = ",".join(str(v) for v in range(1, 31))
    for args, reason in [
        (["--grid", f"rerank.top={values}", "--grid", f"ensemble.ens.rrf_k={values}"],
         "the grid has 900 points, more than --max-points 200"),
        (["--grid", "rerank.top=1,2,3", "--max-points", "2"], "the grid has 3 points, more than --max-points 2"),
        (["--grid", "ensemble.ens.method=rrf,foo"], "foo"),  # point 1 is bad: point 0 must not run either
        (["--grid", "rerank.top=3,0"], "top"),
        (["--grid", "rerank.top=1,3", "--out", "a-folder"], "a-folder"),
    ]:
        result = cli("sweep", "tiny.toml", *args)
        assert result.code == 2 and reason in result.err and result.err.count("\n") == 1, (args, result.err)
        assert _listing(tmp_path) == before, args


def test_a_sweep_that_fails_while_running_leaves_no_point_folder(tmp_path, monkeypatch, cli, tiny_demo_config):
    """Point 0 runs, then the choice cannot be made (no such run): its folder goes; the stage cache stays."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(tiny_demo_config(8, then=RERANK))
    result = cli("sweep", "tiny.toml", "--grid", "rerank.top=3,2", "--run", "nope")
    assert result.code == 2 and "--run 'nope' is not a run" in result.err
    assert (tmp_path / "work").is_dir()  # features and indexes a re-run reuses
    assert not list((tmp_path / "work").glob("sweep/point-*"))
