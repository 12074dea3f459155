"""Every figure holding queries that a choice was made on is starred, whoever made the choice
(:mod:`bpcr.evaluation.chosen`): defaults fixed from a benchmark on the demo's public half, ``bpcr sweep``'s
records, and inputs' choices; and a choice made under another split than the scorer's is warned of."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpcr.dataset.gt import read_ground_truth
from bpcr.errors import BadInput
from bpcr.evaluation.chosen import (DEFAULTS_CHOSEN_ON, POSTRETRIEVAL_TUNE, check_chosen_on, declared_default,
                                    run_choices)
from bpcr.evaluation.options import ScoreOptions
from bpcr.evaluation.score import score_runs
from bpcr.evaluation.split import QuerySplit
from bpcr.io.runs import load_run, write_run

ROOT = Path(__file__).resolve().parents[2]
DEMO_GT = ROOT / "ground_truth" / "demo.csv"


@pytest.fixture(scope="module")
def demo_gt() -> dict[str, list[str]]:
    return read_ground_truth(DEMO_GT)


def test_every_recorded_default_is_a_declared_option():
    """The record names options, never values: the chosen values are the declared defaults, read there."""
    from bpcr.postretrieval.options import METHOD_OPTIONS

    for stage, entries in DEFAULTS_CHOSEN_ON.items():
        if stage.startswith("refine:"):
            assert stage.split(":", 1)[1] in METHOD_OPTIONS, stage
        for options, bench in entries:
            assert options and bench.by
            for name in options:
                declared_default(stage, name)  # AttributeError for an option no class declares
    assert declared_default("refine:kreciprocal", "kr_lambda") == METHOD_OPTIONS["kreciprocal"].kr_lambda


def test_the_benchmark_queries_are_the_public_half_of_the_committed_demo(demo_gt):
    """postretrieval_tune.py chose on the seed-0 public half of ground_truth/demo.csv: 99 of its 200 queries."""
    public = POSTRETRIEVAL_TUNE.query_ids()
    assert public == frozenset(QuerySplit(0, 0.5).half(demo_gt, "public")) and len(public) == 99
    assert POSTRETRIEVAL_TUNE.split() == {"method": "bpcr-split/1", "seed": 0, "public_share": 0.5}


def _answers(gt: dict[str, list[str]]) -> dict[str, list[str]]:
    """Half of each query's relevant images, then a miss: figures between 0 and 1 that differ by query."""
    return {q: rel[: max(1, len(rel) // 2)] + ["n0000000"] for q, rel in gt.items()}


def _refined(subs: Path, name: str, method: str, defaulted: dict, gt, extra: dict | None = None) -> None:
    write_run(subs, name, _answers(gt), None,
              {"method": f"refine:{method}", "input_run": {"name": "base"}, **(extra or {}),
               "defaults": {"options": defaulted, "reference": "a paper", "chosen_on": "see the module docstring"}})


def test_defaults_chosen_on_the_demo_star_public_and_all_figures(tmp_path, demo_gt, cli):
    subs = tmp_path / "subs"
    write_run(subs, "base", _answers(demo_gt), None, {"method": "search"})
    _refined(subs, "kr", "kreciprocal", {"k1": 5, "k2": 3, "kr_lambda": 0.7, "shortlist": None}, demo_gt)
    _refined(subs, "kr-given", "kreciprocal", {"shortlist": None}, demo_gt)  # every chosen option given
    _refined(subs, "qe2020", "qe-2020", {}, demo_gt)  # no free parameter: nothing chosen
    _refined(subs, "dup", "dupgroup", {"dup_k": 10}, demo_gt)  # dup_k is not one of the chosen defaults
    # fused from the k-reciprocal run: its figures hold the same choice, inherited
    write_run(subs, "fused", _answers(demo_gt), None,
              {"method": "ensemble:rrf", "fusion_inputs": [{"name": "kr"}, {"name": "base"}]})
    out = tmp_path / "s.json"
    result = cli("score", subs, "--gt", DEMO_GT, "--json", out, "--leaderboard", tmp_path / "lb.md",
                 "--resamples", 200)
    assert result.code == 0, result.err
    runs = json.loads(out.read_text())["runs"]
    for name in ("kr", "fused"):
        assert runs[name]["public"]["in_sample"] and runs[name]["in_sample"], name
        assert not runs[name]["private"]["in_sample"], name
    for name in ("base", "kr-given", "qe2020", "dup"):
        assert not runs[name]["in_sample"] and not runs[name]["public"]["in_sample"], name
    [record] = runs["kr"]["chosen_on"]
    assert record["what"].startswith("refine:kreciprocal's default k1, k2, kr_lambda")
    assert record["by"] == POSTRETRIEVAL_TUNE.by and record["n_scored"] == 99 and record["half"] == "public"
    assert record["split"] == {"method": "bpcr-split/1", "seed": 0, "public_share": 0.5}
    assert [r["from_input"] for r in runs["fused"]["chosen_on"]] == ["kr"]
    board = (tmp_path / "lb.md").read_text()
    rows = {line.split("`")[1]: line.split("|") for line in board.splitlines() if line.startswith("| ")
            and "`" in line}
    assert rows["kr"][5].strip().endswith(" *") and rows["kr"][6].strip().endswith(" *")
    assert not rows["kr"][3].strip().endswith("*") and "*" not in "".join(rows["base"][3:7])
    assert "- `kr` (in-sample: public, all): refine:kreciprocal's default k1, k2, kr_lambda" in board
    assert "- `fused` (in-sample: public, all)" in board and "(in its input `kr`)" in board


def test_dba_and_rerank_defaults_are_read_from_the_store_and_the_params(tmp_path, demo_gt):
    """A DBA store's meta.json and a re-ranked run's params give the values used; the declared defaults are the
    chosen ones (their JSON does not say which were defaulted)."""
    subs = tmp_path / "subs"
    stores = {}
    for name, dba in (("dba-default", {"n": 1, "alpha": 0.0}), ("dba-other", {"n": 2, "alpha": 3.0})):
        store = tmp_path / "features-dba" / name
        store.mkdir(parents=True)
        (store / "meta.json").write_text(json.dumps({"dim": 4, "dba": dba}))
        stores[name] = store
    write_run(subs, "dba-default", _answers(demo_gt), None,
              {"method": "search+fusion-product", "params": {"stores": [str(stores["dba-default"])]}})
    write_run(subs, "dba-other", _answers(demo_gt), None,
              {"method": "search+fusion-product", "params": {"stores": [str(stores["dba-other"])]}})
    write_run(subs, "plain", _answers(demo_gt), None,
              {"method": "search", "params": {"stores": [str(tmp_path / "features" / "mac")]}})
    write_run(subs, "sift", _answers(demo_gt), None,
              {"method": "rerank", "params": {"max_keypoints": 250, "max_side": 384, "matcher": "bf"}})
    write_run(subs, "sift-1000", _answers(demo_gt), None,
              {"method": "rerank", "params": {"max_keypoints": 1000, "max_side": 384, "matcher": "bf"}})
    scores = {s.name: s for s in score_runs([subs], DEMO_GT, ScoreOptions(n_resamples=100))}
    assert scores["dba-default"].halves["public"].in_sample and not scores["dba-default"].halves["private"].in_sample
    assert not scores["dba-other"].in_sample and not scores["plain"].in_sample
    assert scores["sift"].halves["public"].in_sample and scores["sift"].in_sample
    # max_side and matcher were chosen on demo seed 1's queries, which this ground truth does not hold
    assert not scores["sift-1000"].in_sample
    assert {c.by for c in scores["sift-1000"].choices} == {"benchmarks/rerank_cost.py on demo seed 1"}
    assert not {c for c in scores["sift-1000"].choices if c.query_ids & set(demo_gt)}


def test_a_record_in_the_run_itself_is_read(tmp_path, demo_gt):
    """A run JSON may carry its own ``chosen_on`` (query IDs, or a demo half) or ``defaults.chosen_on``."""
    subs = tmp_path / "subs"
    some = sorted(demo_gt)[:3]
    write_run(subs, "listed", _answers(demo_gt), None,
              {"method": "x", "chosen_on": [{"what": "a threshold", "by": "me", "query_ids": some}]})
    write_run(subs, "demo-half", _answers(demo_gt), None,
              {"method": "refine:new", "defaults": {"options": {"t": 1}, "chosen_on": {
                  "what": "t", "by": "a benchmark", "demo_seed": 0, "half": "private",
                  "split": {"seed": 0, "public_share": 0.5}}}})
    # a module's record naming the options it covers counts only when one of them was left at its default
    for name, defaulted in (("covered", {"t": 1}), ("given", {"u": 2})):
        write_run(subs, name, _answers(demo_gt), None,
                  {"method": "refine:new", "defaults": {"options": defaulted, "chosen_on": {
                      "what": "t", "by": "a benchmark", "options": ["t"], "query_ids": some}}})
    choices = {name: run_choices(load_run(subs / name)) for name in ("listed", "demo-half", "covered", "given")}
    assert [set(c.query_ids) for c in choices["listed"]] == [set(some)]
    assert [c.query_ids for c in choices["demo-half"]] == [frozenset(QuerySplit().half(demo_gt, "private"))]
    assert [set(c.query_ids) for c in choices["covered"]] == [set(some)] and choices["given"] == []
    write_run(subs, "bad", {"v": ["a"]}, None, {"method": "x", "chosen_on": [{"what": "no queries"}]})
    with pytest.raises(BadInput, match="needs query_ids"):
        run_choices(load_run(subs / "bad"))


def test_config_records_reach_the_runs_they_name_and_those_derived_from_them(tmp_path, demo_gt):
    subs = tmp_path / "subs"
    for name in ("a", "b"):
        write_run(subs, name, _answers(demo_gt), None, {"method": "search"})
    write_run(subs, "c", _answers(demo_gt), None, {"method": "rerank", "input_run": str(subs / "a.trec")})
    public = QuerySplit().half(demo_gt, "public")
    record = {"what": "top = 3", "by": "bpcr sweep --grid rerank.top=3,8", "split": {"seed": 0, "public_share": 0.5},
              "half": "public", "runs": ["a"], "query_ids": public}
    scores = {s.name: s for s in score_runs([subs], DEMO_GT, ScoreOptions(n_resamples=100), chosen_on=[record])}
    assert scores["a"].halves["public"].in_sample and not scores["a"].halves["private"].in_sample
    assert not scores["b"].in_sample
    assert scores["c"].halves["public"].in_sample and [c.source for c in scores["c"].choices] == ["a"]
    # without runs, a record reaches every run
    every = score_runs([subs], DEMO_GT, ScoreOptions(n_resamples=100), chosen_on=[{**record, "runs": None}])
    assert all(s.in_sample for s in every)
    for bad, words in ((record, "must be a list"), ([{**record, "runs": "a"}], "runs must be a list"),
                       ([{**record, "query_ids": [1]}], "query_ids must be a list"),
                       ([{**record, "half": "both"}], "half must be")):
        with pytest.raises(BadInput, match=words):
            check_chosen_on(bad)


def test_a_choice_under_another_split_stars_the_private_half_and_is_warned_of(tmp_path, cli):
    """Tuned on seed 0's public half and scored with seed 3: the tuned queries now lie in both halves, so the
    private figure is starred, the run ranks after the others, and the scorer says why."""
    gt = {f"v{i:02d}": [f"g{i}a", f"g{i}b"] for i in range(20)}
    (tmp_path / "gt.csv").write_text("Validation Image ID,Training Image ID\n" +
                                     "".join(f"{q},{','.join(r)}\n" for q, r in gt.items()))
    subs = tmp_path / "subs"
    write_run(subs, "plain", {q: ["x"] for q in gt}, None, {"method": "search"})
    tuned_ids = QuerySplit(0, 0.5).half(gt, "public")
    write_run(subs, "tuned", {q: r for q, r in gt.items()}, None,
              {"method": "ensemble:rrf", "tuned_on": {"query_ids": tuned_ids, "half": "public",
                                                      "split": QuerySplit(0, 0.5).describe()}})
    same = score_runs([subs], tmp_path / "gt.csv", ScoreOptions(n_resamples=100))
    assert [s.name for s in same] == ["tuned", "plain"] and not same[0].halves["private"].in_sample
    assert not any("split seed" in w for s in same for w in s.warnings)
    other = score_runs([subs], tmp_path / "gt.csv", ScoreOptions(n_resamples=100, split_seed=3))
    tuned = next(s for s in other if s.name == "tuned")
    assert set(tuned_ids) & set(QuerySplit(3, 0.5).half(gt, "private"))
    assert tuned.halves["private"].in_sample and [s.name for s in other] == ["plain", "tuned"]
    assert any("made under split seed 0" in w and "not the scorer's seed 3" in w for w in tuned.warnings)
    result = cli("score", subs, "--gt", tmp_path / "gt.csv", "--no-leaderboard", "--split-seed", 3,
                 "--resamples", 100)
    assert result.code == 0 and "not the scorer's seed 3" in result.err
