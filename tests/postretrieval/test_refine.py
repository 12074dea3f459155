"""Two-stage search refinement (paper 001 §2.3, Algorithm 1) on hand-made examples."""
from __future__ import annotations

import json
from pathlib import Path
import math

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file
from bpcr.postretrieval.options import RefineOptions
from bpcr.postretrieval.refine import refine, refine_query
from bpcr.io.runs import load_run, write_run
from bpcr.io.store import write_store
from bpcr.text.index import TextIndex

# Cosine of each database image with the query q = (1, 0); features are (c, sqrt(1 - c^2)).
COSINE = {
    "n01": 0.70, "n02": 0.60, "n03": 0.50, "n04": 0.40, "n05": 0.30, "n06": 0.20, "n07": 0.10, "n08": 0.05,
    "n10": 0.90, "n11": 0.55, "n12": 0.95, "n13": 0.80, "n14": 0.35, "n15": 0.80,
}
DB_IDS = sorted(COSINE)
INPUT = ["n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08"]  # the first stage, best first
# D(.) of eq 7, by hand (not symmetric on purpose: refinement reads only the first k's rows).
NEIGHBOURS = {
    "n01": ["n10", "n02", "n11"],  # n02 is among the first k: never repeated
    "n02": ["n12", "n10"],          # n10 twice in the union: once in the output
    "n03": ["n13", "n15", "n14"],   # n13 and n15 tie at 0.80: by ID
}


def _features(ids: list[str]) -> np.ndarray:
    return np.array([[COSINE[i], math.sqrt(1 - COSINE[i] ** 2)] for i in ids], dtype=np.float32)


def _index(neighbours: dict[str, list[str]], ids: list[str] = DB_IDS) -> TextIndex:
    row = {image_id: r for r, image_id in enumerate(ids)}
    indptr, indices = [0], []
    for image_id in ids:
        indices += [row[n] for n in neighbours.get(image_id, [])]
        indptr.append(len(indices))
    return TextIndex(ids=list(ids), indptr=np.array(indptr), indices=np.array(indices, dtype=np.int64),
                     sims=np.full(len(indices), 0.9, dtype=np.float32), meta={"tau": 0.6})


def _cosine(ids):
    return np.array([COSINE[i] for i in ids])


def _refine(neighbours, k_keep=3, mode="fill", ranking=INPUT, known=frozenset(DB_IDS)):
    return refine_query(ranking, _index(neighbours), known.__contains__, _cosine, k_keep, mode)


def test_fill_hand_example():
    result = _refine(NEIGHBOURS)
    # Keep n01 n02 n03; I_subset = {n10, n11, n12, n13, n14, n15} by cosine:
    # n12 .95, n10 .90, n13 .80, n15 .80 (tie, by ID), n11 .55, n14 .35 -> 4 slots.
    assert result.ranking[:7] == ["n01", "n02", "n03", "n12", "n10", "n13", "n15"]
    # Depth kept: then the input's remaining results, deduplicated, up to its length 8.
    assert result.ranking == ["n01", "n02", "n03", "n12", "n10", "n13", "n15", "n04"]
    assert result.subset_size == 6 and result.fallback == 0


def test_fallback_to_input_run_when_subset_is_too_small():
    result = _refine({"n01": ["n12"], "n02": ["n01"], "n03": []})
    # One image in I_subset for four slots: n12, then the input's n04, n05, n06.
    assert result.ranking[:7] == ["n01", "n02", "n03", "n12", "n04", "n05", "n06"]
    assert result.fallback == 3
    assert result.ranking[7:] == ["n07"]


def test_rerank_union_reorders_the_first_k_too():
    result = _refine(NEIGHBOURS, mode="rerank-union")
    # Union of {n01, n02, n03} and I_subset, all by cosine.
    assert result.ranking[:7] == ["n12", "n10", "n13", "n15", "n01", "n02", "n11"]
    # n03 (.50) left the top 7; it heads the tail, cut at the input's depth 8.
    assert result.ranking[7:] == ["n03"]
    small = _refine({"n01": ["n12"]}, mode="rerank-union")
    assert small.ranking[:7] == ["n12", "n01", "n02", "n03", "n04", "n05", "n06"] and small.fallback == 3


def test_no_duplicates_and_k7_changes_nothing():
    for k in range(1, 8):
        for mode in ("fill", "rerank-union"):
            ranking = _refine(NEIGHBOURS, k_keep=k, mode=mode).ranking
            assert len(ranking) == len(set(ranking))
    assert _refine(NEIGHBOURS, k_keep=7).ranking == INPUT
    # Neighbours without a database feature are skipped.
    result = _refine(NEIGHBOURS, known=frozenset(DB_IDS) - {"n12"})
    assert "n12" not in result.ranking and result.ranking[3] == "n10"


# ---------------------------------------------------------------- files end to end


@pytest.fixture
def setup(tmp_path):
    meta = {"backbone": "resnet50", "pooling": "gem", "input_size": 480}
    write_store(tmp_path / "db", DB_IDS, _features(DB_IDS), meta)
    write_store(tmp_path / "q", ["v01", "v02"], np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), meta)
    # v02 = (0, 1): its cosine with image c is sqrt(1 - c^2), so the order flips.
    ranking = {"v01": INPUT, "v02": ["n08", "n07", "n06", "n05", "n04", "n03", "n02", "n01"]}
    scores = {q: [1.0 - 0.1 * r for r in range(len(ids))] for q, ids in ranking.items()}
    write_run(tmp_path / "runs", "base", ranking, scores, {"run": "base"})
    index_dir = tmp_path / "ti"
    index_dir.mkdir()
    index = _index(NEIGHBOURS)
    np.savez(index_dir / "neighbours.npz", indptr=index.indptr, indices=index.indices.astype(np.int32), sims=index.sims)
    (index_dir / "ids.txt").write_text("".join(f"{i}\n" for i in DB_IDS))
    (index_dir / "meta.json").write_text(json.dumps({"format": "bpcr-text-index/1", "tau": 0.6}))
    return tmp_path


def test_refine_writes_run_with_provenance(setup):
    result = refine(setup / "runs" / "base.trec", setup / "ti", setup / "db", setup / "q", "refined", setup / "out",
                    RefineOptions(k_keep=3))
    csv_path = result.csv
    run = load_run(csv_path)
    assert run.submission["v01"] == ["n01", "n02", "n03", "n12", "n10", "n13", "n15"]
    # v02's first k (n08, n07, n06) have no textual neighbours: the input run, unchanged.
    assert run.submission["v02"] == ["n08", "n07", "n06", "n05", "n04", "n03", "n02"]
    assert run.ranking["v01"] == ["n01", "n02", "n03", "n12", "n10", "n13", "n15", "n04"]
    assert run.scores["v01"] == pytest.approx([1 / r for r in range(1, 9)], rel=1e-7)
    prov = json.loads(csv_path.with_suffix(".json").read_text())
    assert prov == result.provenance
    assert prov["params"]["k"] == 3 and prov["params"]["mode"] == "fill" and prov["params"]["tau"] == 0.6
    assert prov["input_run"]["name"] == "base"
    trec = next(f for f in prov["input_run"]["files"] if f["path"].endswith("base.trec"))
    assert trec["sha256"] == sha256_file(setup / "runs" / "base.trec")
    assert prov["counts"]["queries"] == 2 and prov["counts"]["changed"] == 1 and prov["counts"]["with_fallback"] == 1


@pytest.mark.slow
def test_mismatched_stores_are_refused(setup):
    write_store(setup / "q2", ["v01", "v02"], np.eye(2, dtype=np.float32),
                {"backbone": "vgg16", "pooling": "gem", "input_size": 480})
    with pytest.raises(BadInput, match="backbone"):
        refine(setup / "runs" / "base.trec", setup / "ti", setup / "db", setup / "q2", "r", out=setup / "out")
    write_store(setup / "q3", ["v01", "v02"], np.eye(2, 3, dtype=np.float32),
                {"backbone": "resnet50", "pooling": "gem", "input_size": 480})
    with pytest.raises(BadInput, match="dim"):
        refine(setup / "runs" / "base.trec", setup / "ti", setup / "db", setup / "q3", "r", out=setup / "out")
    assert not (setup / "out").exists()


def test_bad_inputs(setup):
    write_store(setup / "q1", ["v01"], np.array([[1.0, 0.0]], dtype=np.float32),
                {"backbone": "resnet50", "pooling": "gem", "input_size": 480})
    with pytest.raises(BadInput, match="'v02'.*no feature"):
        refine(setup / "runs" / "base.trec", setup / "ti", setup / "db", setup / "q1", "r", out=setup / "out")
    with pytest.raises(BadInput, match="overwrite"):
        refine(setup / "runs" / "base.trec", setup / "ti", setup / "db", setup / "q", "base", out=setup / "runs")
    with pytest.raises(BadInput, match="k.keep must be"):
        refine(setup / "runs" / "base.trec", setup / "ti", setup / "db", setup / "q", "r", setup / "out",
               RefineOptions(k_keep=0))
    write_run(setup / "runs", "stray", {"v01": ["zz9"]}, None, None)
    with pytest.raises(BadInput, match="not in the text index"):
        refine(setup / "runs" / "stray.csv", setup / "ti", setup / "db", setup / "q", "r", out=setup / "out")
    assert not (setup / "out").exists()


def test_cli_refine(setup, cli):
    result = cli("refine", setup / "runs" / "base.trec", "--text-index", setup / "ti", "--db-features", setup / "db",
                 "--query-features", setup / "q", "--k-keep", "3", "--mode", "rerank-union", "--name", "union",
                 "--out", setup / "out")
    assert result.code == 0, result.err
    assert "2 queries" in result.out and (setup / "out" / "union.trec").is_file()
    assert load_run(setup / "out" / "union.csv").submission["v01"] == ["n12", "n10", "n13", "n15", "n01", "n02", "n11"]
    bad = cli("refine", setup / "runs" / "base.trec", "--text-index", setup / "ti", "--db-features", setup / "db",
              "--query-features", setup / "q", "--mode", "best", "--name", "x", "--out", setup / "out")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "mode" in bad.err


# ---------------------------------------------------------------- the second search ranks as the first did


def _unit(c: float) -> list[float]:
    return [c, math.sqrt(1 - c * c)]


def test_refine_ranks_with_the_input_runs_fused_similarity(tmp_path):
    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import SearchOptions
    from bpcr.retrieval.search import search

    # Cosines with the query (1, 0) in two networks A and B. Product fusion (001 eq 8, alpha 1):
    # t (1+1)(1+1) = 4, y (1.8)(1.9) = 3.42, x (1.9)(1.1) = 2.09, fillers (1+0.05)^2 = 1.1025.
    cos = {"A": {"t": 1.0, "x": 0.9, "y": 0.8}, "B": {"t": 1.0, "x": 0.1, "y": 0.9}}
    ids = ["f1", "f2", "f3", "f4", "f5", "f6", "t", "x", "y"]
    for net in ("A", "B"):
        meta = {"backbone": f"net{net}", "pooling": "gem"}
        write_store(tmp_path / f"db{net}", ids, np.array([_unit(cos[net].get(i, 0.05)) for i in ids], np.float32), meta)
        write_store(tmp_path / f"q{net}", ["v1"], np.array([[1.0, 0.0]], np.float32), meta)
        build_index(tmp_path / f"db{net}", tmp_path / f"i{net}", log=lambda m: None)
    search([tmp_path / "iA", tmp_path / "iB"], [tmp_path / "qA", tmp_path / "qB"], "fused", tmp_path / "runs",
           SearchOptions(depth=9, fusion="product"), log=lambda m: None)
    assert load_run(tmp_path / "runs" / "fused.trec").ranking["v1"][:3] == ["t", "y", "x"]
    # The text index makes x and y the neighbours of t, and the fused input's order is the fused one.
    ti = tmp_path / "ti"
    ti.mkdir()
    np.savez(ti / "neighbours.npz", indptr=np.array([0, 0, 0, 0, 0, 0, 0, 2, 2, 2]), indices=np.array([7, 8], np.int32),
             sims=np.full(2, 0.9, np.float32))
    (ti / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (ti / "meta.json").write_text(json.dumps({"format": "bpcr-text-index/1", "tau": 0.6}))
    # Reverse the input's list below t, so only the second search decides the order of x and y.
    write_run(tmp_path / "runs", "flat", {"v1": ["t", "f1", "f2", "f3", "f4", "f5", "f6", "x", "y"]},
              {"v1": [9.0 - r for r in range(9)]},
              json.loads((tmp_path / "runs" / "fused.json").read_text()))
    fused = refine(tmp_path / "runs" / "flat.trec", ti, None, None, "r-fused", tmp_path / "out",
                   RefineOptions(k_keep=1))
    assert load_run(fused.csv).ranking["v1"][:3] == ["t", "y", "x"]
    assert fused.provenance["similarity"]["fusion"] == "product" and fused.provenance["similarity"]["source"] == "input run"
    # One network's cosine alone (given explicitly) orders them the other way: x .9 before y .8.
    single = refine(tmp_path / "runs" / "flat.trec", ti, tmp_path / "dbA", tmp_path / "qA", "r-single",
                    tmp_path / "out", RefineOptions(k_keep=1))
    assert load_run(single.csv).ranking["v1"][:3] == ["t", "x", "y"]
    # A refine of the refined run still finds the search behind it.
    again = refine(fused.written[".trec"], ti, None, None, "r-again", tmp_path / "out", RefineOptions(k_keep=1))
    assert again.provenance["similarity"]["fusion"] == "product"


def test_input_without_a_search_behind_it_needs_stores(setup):
    with pytest.raises(BadInput, match="give --db-features and --query-features"):
        refine(setup / "runs" / "base.trec", setup / "ti", None, None, "r", out=setup / "out")
    with pytest.raises(BadInput, match="both"):
        refine(setup / "runs" / "base.trec", setup / "ti", setup / "db", None, "r", out=setup / "out")


def test_a_run_made_elsewhere_is_refined_from_another_working_folder(tmp_path, monkeypatch):
    """The search recorded its stores relative to the folder it ran in; refine finds them from the run's folder."""
    from bpcr.retrieval.index import build_index
    from bpcr.retrieval.options import SearchOptions
    from bpcr.retrieval.search import search

    project = tmp_path / "project"
    (project / "work").mkdir(parents=True)
    monkeypatch.chdir(project)
    ids = ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"]
    meta = {"backbone": "netA", "pooling": "gem"}
    write_store(Path("work/db"), ids, np.array([_unit(0.1 * k) for k in range(8)], np.float32), meta)
    write_store(Path("work/q"), ["v1"], np.array([[1.0, 0.0]], np.float32), meta)
    build_index(Path("work/db"), Path("work/index"), log=lambda m: None)
    search([Path("work/index")], [Path("work/q")], "base", Path("submissions"), SearchOptions(depth=8),
           log=lambda m: None)
    recorded = json.loads((project / "submissions" / "base.json").read_text())["params"]
    assert recorded["stores"] == ["work/db"] and recorded["queries"] == ["work/q"]  # relative to project/
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ti = elsewhere / "ti"
    ti.mkdir()
    np.savez(ti / "neighbours.npz", indptr=np.zeros(9, np.int64), indices=np.zeros(0, np.int32),
             sims=np.zeros(0, np.float32))
    (ti / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (ti / "meta.json").write_text(json.dumps({"format": "bpcr-text-index/1", "tau": 0.6}))
    refined = refine(project / "submissions" / "base.trec", ti, None, None, "r", elsewhere / "out",
                     RefineOptions(k_keep=1))
    assert load_run(refined.csv).ranking == load_run(project / "submissions" / "base.csv").ranking
