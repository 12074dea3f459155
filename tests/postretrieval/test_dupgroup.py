"""Duplicate-group expansion (bpcr.postretrieval.dupgroup): image links, description links, and how they combine."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.io.runs import load_run
from bpcr.postretrieval.options import RefineOptions
from bpcr.postretrieval.refine import refine
from bpcr.text.index import TextIndex
from tests.helpers.refine_world import make_world


def _at(degrees: float, axis: int) -> list[float]:
    """A unit vector at ``degrees`` from the query e0, turned towards its own axis: two images on
    different axes are further apart than either is from the query."""
    v = np.zeros(8)
    v[0], v[axis] = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return v.tolist()


# x1, x2, x3 on one axis, 12 degrees apart in a row (cos .978), a chain of near-duplicate photos;
# d1-d3 each on its own axis (cos with x1 .956 or less); y2 shares x1's description in the tests' text index.
DB = {"x1": _at(10, 1), "d1": _at(14, 2), "d2": _at(16, 3), "d3": _at(18, 4), "x2": _at(22, 1), "y1": _at(26, 5),
      "x3": _at(34, 1), "y2": _at(60, 6)}
INPUT = ["x1", "d1", "d2", "d3", "x2", "y1", "x3", "y2"]


def _text_index(pairs: dict[str, list[str]], tau: float = 0.6) -> TextIndex:
    ids = sorted(DB)
    row = {i: r for r, i in enumerate(ids)}
    indptr, indices = [0], []
    for i in ids:
        indices += [row[j] for j in pairs.get(i, [])]
        indptr.append(len(indices))
    return TextIndex(ids=ids, indptr=np.array(indptr), indices=np.array(indices, dtype=np.int64),
                     sims=np.full(len(indices), 0.9, dtype=np.float32), meta={"tau": tau})


@pytest.fixture
def world(tmp_path):
    run = make_world(tmp_path, DB, {"v1": _at(0, 1)})
    assert load_run(run).ranking["v1"] == INPUT
    return run


def _refine(world, tmp_path, name, text=None, **options):
    return refine(world, text, None, None, name, tmp_path / "out", RefineOptions(method="dupgroup", **options),
                  graph_dir=tmp_path / "graphs")


def test_an_image_duplicate_of_the_top_hit_moves_up(world, tmp_path):
    result = _refine(world, tmp_path, "img", dup_by="image", dup_cosine=0.97, dup_expand=1)
    # x1's group is {x1, x2, x3}: x3 through x2 (24 degrees from x1, cos .91, but 12 from x2).
    assert load_run(result.csv).ranking["v1"] == ["x1", "x2", "x3", "d1", "d2", "d3", "y1", "y2"]
    prov = json.loads(result.written[".json"].read_text())
    assert prov["method"] == "refine:dupgroup" and prov["params"]["dup_tau"] is None
    assert prov["counts"]["images_added"] == 0 and prov["counts"]["changed"] == 1  # moved up within the top 7
    assert prov["counts"]["groups"] == 1 and prov["counts"]["largest_group"] == 3
    # A stricter threshold breaks the chain: no group.
    strict = _refine(world, tmp_path, "strict", dup_by="image", dup_cosine=0.98, dup_expand=1)
    assert load_run(strict.csv).ranking["v1"] == INPUT


def test_description_links_and_their_combinations(world, tmp_path):
    index = _text_index({"x1": ["y2"], "y2": ["x1"]})
    text = _refine(world, tmp_path, "txt", text=index, dup_by="text", dup_tau=0.8, dup_expand=1)
    assert load_run(text.csv).ranking["v1"][:3] == ["x1", "y2", "d1"]
    either = _refine(world, tmp_path, "either", text=index, dup_by="either", dup_cosine=0.97, dup_tau=0.8,
                     dup_expand=1)
    # Members best first by the query's cosine: x2 (22 degrees), x3 (34), y2 (60).
    assert load_run(either.csv).ranking["v1"][:5] == ["x1", "x2", "x3", "y2", "d1"]
    both = _refine(world, tmp_path, "both", text=index, dup_by="both", dup_cosine=0.97, dup_tau=0.8, dup_expand=1)
    assert load_run(both.csv).ranking["v1"] == INPUT  # no pair is linked both ways
    stricter = _refine(world, tmp_path, "strict", text=index, dup_by="text", dup_tau=0.95, dup_expand=1)
    assert load_run(stricter.csv).ranking["v1"] == INPUT  # the pair's TF-IDF cosine is .9
    with pytest.raises(BadInput, match="below the text index's tau"):
        _refine(world, tmp_path, "low", text=index, dup_by="text", dup_tau=0.5)
    with pytest.raises(BadInput, match="give --text-index"):
        _refine(world, tmp_path, "none", dup_by="either")


def test_ties_by_id_and_bytes_repeat(tmp_path):
    db = dict(DB, x4=DB["x2"], x0=DB["x2"])  # exact copies of x2: equal scores, ordered by ID
    run = make_world(tmp_path, db, {"v1": _at(0, 1)})
    one = refine(run, None, None, None, "one", tmp_path / "out",
                 RefineOptions(method="dupgroup", dup_by="image", dup_cosine=0.97, dup_expand=1))
    two = refine(run, None, None, None, "two", tmp_path / "out",
                 RefineOptions(method="dupgroup", dup_by="image", dup_cosine=0.97, dup_expand=1))
    assert load_run(one.csv).ranking["v1"][:5] == ["x1", "x0", "x2", "x4", "x3"]
    assert one.written[".trec"].read_text().replace(" one", "") == two.written[".trec"].read_text().replace(" two", "")


def test_cli_dupgroup(world, tmp_path, cli):
    result = cli("refine", world, "--method", "dupgroup", "--dup-by", "image", "--dup-cosine", "0.97",
                 "--dup-expand", "1", "--name", "dup", "--out", tmp_path / "out", "--graph-dir", tmp_path / "g")
    assert result.code == 0, result.err
    assert "duplicate-group" in result.out and load_run(tmp_path / "out" / "dup.csv").submission["v1"][1] == "x2"
    bad = cli("refine", world, "--method", "dupgroup", "--dup-by", "colour", "--name", "x", "--out", tmp_path / "o")
    assert bad.code == 2 and "--dup-by" in bad.err and bad.err.count("\n") == 1


def _whole_group_expansion(sim, labels, ranking, dup_expand):
    """The expansion as the module docstring states it, every member of a group scored exactly for every hit
    (the rule without candidates): the reference the blocked float32 candidates must reproduce."""
    from bpcr.io.runs import SUBMISSION_DEPTH
    from bpcr.postretrieval.similarity import similarity_order

    ids = sim.db[0].ids
    out = {}
    for query_id, listed in ranking.items():
        first, head = list(dict.fromkeys(listed)), []
        for hit in first[:dup_expand]:
            if hit in head:
                continue
            head.append(hit)
            label = labels[sim.db_rows[0][hit]]
            group = [i for r, i in enumerate(ids) if labels[r] == label and i not in head]
            head += similarity_order(group, sim.scores(query_id, group))[:SUBMISSION_DEPTH]
        out[query_id] = head + [i for i in first if i not in head]
    return out


@pytest.mark.parametrize("block_bytes", [1, 4_000, 1 << 27])
def test_a_large_group_scored_in_blocks_expands_as_if_scored_whole(tmp_path, monkeypatch, block_bytes):
    from bpcr.io.runs import run_files
    from bpcr.postretrieval import dupgroup
    from bpcr.postretrieval.context import Context
    from bpcr.postretrieval.similarity import load_similarity

    rng = np.random.default_rng(block_bytes)
    # 300 images in 16 dimensions, a third of them exact copies of others (equal scores: ordered by ID), under
    # IDs in shuffled order; one chain of descriptions links them all into one group of 300 (the depth is 47).
    base = rng.normal(size=(200, 16))
    vectors = np.concatenate([base, base[rng.integers(0, 200, 100)]])
    db = {f"d{i:04d}": v.tolist() for i, v in zip(rng.permutation(300), vectors)}
    queries = {f"q{j}": (base[rng.integers(0, 200)] + 0.3 * rng.normal(size=16)).tolist() for j in range(12)}
    run = make_world(tmp_path, db, queries, depth=20)
    ids = sorted(db)
    chain = TextIndex(ids=ids, indptr=np.r_[0, np.arange(1, 300), 299], indices=np.arange(1, 300, dtype=np.int64),
                      sims=np.full(299, 0.9, dtype=np.float32), meta={"tau": 0.6})
    monkeypatch.setattr(dupgroup, "BLOCK_BYTES", block_bytes)
    loaded = load_run(run)
    sim = load_similarity(loaded, run_files(run))
    ctx = Context(run=loaded, similarity=sim, text_index=chain, log=lambda m: None)
    result = dupgroup.dupgroup(ctx, dup_by="text", dup_tau=0.8, dup_expand=3)
    labels, _ = dupgroup.duplicate_groups(ctx, 0.9, 0.8, "text", 10)
    assert np.bincount(labels).max() == 300
    assert result.ranking == _whole_group_expansion(sim, labels, loaded.ranking, 3)
