"""bpcr.retrieval.search: runs from indexes, ties by ID, refusals, and the two similarity fusions
(paper 003 eq 16, paper 001 eq 8)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.retrieval.index import build_index
from bpcr.io.runs import load_run
from bpcr.retrieval.options import IndexOptions, SearchOptions
from bpcr.retrieval.search import search
from bpcr.io.store import write_store

META = {"backbone": "resnet50", "weights_sha256": "ab12", "pooling": "gem", "pooling_params": {"p": 3.0},
        "size": 224, "normalisation": "l2"}
QUIET = {"log": lambda s: None}


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _store(path, ids, x, **meta):
    return write_store(path, ids, np.asarray(x), {**META, **meta})


# ---------------------------------------------------------------- single feature set


def test_cosine_run_by_hand(tmp_path):
    db_ids = ["n3", "n1", "n2"]
    x = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype=np.float32)  # cosines 3/5 and 4/5 with the axes
    _store(tmp_path / "db", db_ids, x)
    _store(tmp_path / "q", ["v2", "v1"], np.array([[0.0, 2.0], [1.0, 0.0]], dtype=np.float32))
    build_index(tmp_path / "db", tmp_path / "idx", **QUIET)
    result = search(tmp_path / "idx", tmp_path / "q", "hand", tmp_path / "sub", SearchOptions(depth=7), **QUIET)
    run = load_run(result.csv)
    assert result.provenance == json.loads((tmp_path / "sub" / "hand.json").read_text())
    assert run.ranking == {"v1": ["n3", "n1", "n2"], "v2": ["n2", "n1", "n3"]}
    assert run.scores == {"v1": [1.0, 0.6, 0.0], "v2": [1.0, 0.8, 0.0]}
    assert (tmp_path / "sub" / "hand.csv").read_text() == "v1,n3,n1,n2\nv2,n2,n1,n3\n"
    prov = json.loads((tmp_path / "sub" / "hand.json").read_text())
    assert prov["params"]["distances"] == ["cosine"] and prov["params"]["k"] == 7  # all 3 images: fewer than 7
    assert {i["path"].rsplit("/", 1)[-1] for i in prov["inputs"]} == {"index.json", "ids.txt", "meta.json", "features.npy"}


@pytest.mark.parametrize("kind, exhaustive", [("flat", False), ("flat", True), ("ivf", False)])
def test_exact_ties_break_by_id(tmp_path, kind, exhaustive):
    rng = np.random.default_rng(5)
    other = rng.standard_normal((60, 8)).astype(np.float32) * 0.1
    tied = np.tile(np.array([[1.0, 2, 3, 4, 5, 6, 7, 8]], dtype=np.float32), (5, 1))
    x = np.concatenate([other[:30], tied, other[30:]])
    ids = [f"o{i:02d}" for i in range(30)] + ["t9", "t3", "t7", "t1", "t5"] + [f"o{i:02d}" for i in range(30, 60)]
    _store(tmp_path / "db", ids, x)
    _store(tmp_path / "q", ["v1"], tied[:1] * 2)
    build_index(tmp_path / "db", tmp_path / "idx", IndexOptions(metric="l2", kind=kind), **QUIET)
    run = load_run(search(tmp_path / "idx", tmp_path / "q", "ties", tmp_path / "sub",
                          SearchOptions(depth=7, exhaustive=exhaustive), **QUIET).csv)
    assert run.ranking["v1"][:5] == ["t1", "t3", "t5", "t7", "t9"]
    assert len(set(run.scores["v1"][:5])) == 1 and run.scores["v1"][5] < run.scores["v1"][4]


def test_float16_store_gives_the_float32_run(tmp_path):
    x = np.random.default_rng(6).standard_normal((80, 12)).astype(np.float16)
    q = np.random.default_rng(7).standard_normal((4, 12)).astype(np.float16)
    ids = [f"n{i:03d}" for i in range(80)]
    for dtype in ("float16", "float32"):
        _store(tmp_path / f"db{dtype}", ids, x.astype(dtype))
        _store(tmp_path / f"q{dtype}", ["a", "b", "c", "d"], q.astype(dtype))
        build_index(tmp_path / f"db{dtype}", tmp_path / f"i{dtype}", IndexOptions(metric="l1"), **QUIET)
        search(tmp_path / f"i{dtype}", tmp_path / f"q{dtype}", f"r{dtype}", tmp_path / "sub", SearchOptions(depth=20),
               **QUIET)
    assert (tmp_path / "sub" / "rfloat16.trec").read_text().replace("rfloat16", "R") == \
        (tmp_path / "sub" / "rfloat32.trec").read_text().replace("rfloat32", "R")


@pytest.mark.parametrize("field, value", [("backbone", "vgg16"), ("weights_sha256", "ff00"),
                                          ("pooling_params", {"p": 2.0}), ("size", 448), ("normalisation", "none")])
def test_mismatched_query_store_is_refused(tmp_path, cli, field, value):
    x = np.eye(4, dtype=np.float32)
    _store(tmp_path / "db", ["a", "b", "c", "d"], x)
    _store(tmp_path / "q", ["v"], x[:1], **{field: value})
    build_index(tmp_path / "db", tmp_path / "idx", **QUIET)
    result = cli("search", "--index", tmp_path / "idx", "--queries", tmp_path / "q", "--name", "r", "--out", tmp_path / "sub")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and f"{field} is {value!r}" in lines[0] and "meta.json" in lines[0]
    assert not (tmp_path / "sub").exists()


def test_other_dimension_is_refused(tmp_path):
    _store(tmp_path / "db", ["a", "b"], np.eye(2, dtype=np.float32))
    write_store(tmp_path / "q", ["v"], np.ones((1, 3), dtype=np.float32), {k: v for k, v in META.items()})
    build_index(tmp_path / "db", tmp_path / "idx", **QUIET)
    with pytest.raises(BadInput, match="dim"):
        search(tmp_path / "idx", tmp_path / "q", "r", tmp_path / "sub", **QUIET)


# ---------------------------------------------------------------- fusion


def _two_sets(tmp_path, permute_second: bool = False):
    rng = np.random.default_rng(8)
    ids = [f"n{i:03d}" for i in range(120)]
    a, b = rng.standard_normal((120, 6)), rng.standard_normal((120, 10))
    qa, qb = rng.standard_normal((5, 6)), rng.standard_normal((5, 10))
    qids = [f"v{i}" for i in range(5)]
    _store(tmp_path / "dbA", ids, a.astype(np.float32), backbone="A")
    _store(tmp_path / "qA", qids, qa.astype(np.float32), backbone="A")
    order = rng.permutation(120) if permute_second else np.arange(120)
    _store(tmp_path / "dbB", [ids[i] for i in order], b[order].astype(np.float32), backbone="B")
    _store(tmp_path / "qB", qids[::-1], qb[::-1].astype(np.float32), backbone="B")
    build_index(tmp_path / "dbA", tmp_path / "iA", **QUIET)
    build_index(tmp_path / "dbB", tmp_path / "iB", **QUIET)
    cos = lambda q, x: (x @ q) / np.linalg.norm(x, axis=1) / np.linalg.norm(q)  # noqa: E731
    expected = {f"v{i}": (cos(qa[i], a), cos(qb[i], b)) for i in range(5)}
    return ids, expected


@pytest.mark.parametrize("fusion", ["sum", "product"])
@pytest.mark.parametrize("exhaustive", [False, True])
def test_fused_scores_are_the_equations(tmp_path, fusion, exhaustive):
    ids, expected = _two_sets(tmp_path, permute_second=True)
    run = load_run(search([tmp_path / "iA", tmp_path / "iB"], [tmp_path / "qA", tmp_path / "qB"], "fused",
                          tmp_path / "sub", SearchOptions(depth=10, weights=[0.6, 0.4], fusion=fusion,
                                                          exhaustive=exhaustive, shortlist=120), **QUIET).csv)
    for query, (sa, sb) in expected.items():
        fused = 0.6 * sa + 0.4 * sb if fusion == "sum" else (1 + 0.6 * sa) * (1 + 0.4 * sb)
        order = sorted(range(len(ids)), key=lambda i: (-float(f"{fused[i]:.8g}"), ids[i]))[:10]
        assert run.ranking[query] == [ids[i] for i in order]
        assert run.scores[query] == pytest.approx([fused[i] for i in order], rel=1e-7)
    prov = run.provenance["params"]
    assert prov["weights"] == [0.6, 0.4] and prov["fusion"] == fusion and prov["exhaustive"] == exhaustive


def test_union_shortlist_equals_exhaustive_when_it_covers_everything(tmp_path):
    _two_sets(tmp_path)
    common = {"weights": [1.0, 2.0], "fusion": "sum", "depth": 15}
    search([tmp_path / "iA", tmp_path / "iB"], [tmp_path / "qA", tmp_path / "qB"], "u", tmp_path / "s",
           SearchOptions(shortlist=120, **common), **QUIET)
    search([tmp_path / "iA", tmp_path / "iB"], [tmp_path / "qA", tmp_path / "qB"], "x", tmp_path / "s",
           SearchOptions(exhaustive=True, **common), **QUIET)
    assert load_run(tmp_path / "s" / "u.trec").ranking == load_run(tmp_path / "s" / "x.trec").ranking


def test_ids_missing_from_one_set_are_left_out_and_recorded(tmp_path):
    x = np.eye(4, dtype=np.float32)
    _store(tmp_path / "dbA", ["a", "b", "c", "d"], x, backbone="A")
    _store(tmp_path / "dbB", ["d", "c", "a"], x[[3, 2, 0]], backbone="B")
    _store(tmp_path / "qA", ["v1", "v2"], x[:2], backbone="A")
    _store(tmp_path / "qB", ["v1"], x[:1], backbone="B")
    build_index(tmp_path / "dbA", tmp_path / "iA", **QUIET)
    build_index(tmp_path / "dbB", tmp_path / "iB", **QUIET)
    lines: list[str] = []
    run = load_run(search([tmp_path / "iA", tmp_path / "iB"], [tmp_path / "qA", tmp_path / "qB"], "m", tmp_path / "s",
                          SearchOptions(depth=7), log=lines.append).csv)
    assert run.ranking == {"v1": ["a", "c", "d"]}
    assert run.scores["v1"] == [2.0, 0.0, 0.0]
    assert run.provenance["params"]["left_out_ids"] == {"queries": [1, 0], "database": [1, 0]}
    assert lines == ["set 1: 1 query and 1 database IDs are not in every set; left out"]


def test_bad_run_name_is_refused_before_searching(tmp_path):
    with pytest.raises(BadInput, match="looks like a path"):
        search(tmp_path / "nowhere", tmp_path / "q", "../evil", tmp_path / "s", **QUIET)


def test_product_fusion_needs_cosine(tmp_path):
    _two_sets(tmp_path)
    build_index(tmp_path / "dbB", tmp_path / "iB2", IndexOptions(metric="l2"), **QUIET)
    with pytest.raises(BadInput, match="multiplies cosine similarities; this index uses l2"):
        search([tmp_path / "iA", tmp_path / "iB2"], [tmp_path / "qA", tmp_path / "qB"], "p", tmp_path / "s",
               SearchOptions(fusion="product"), **QUIET)


def test_cli_index_and_fused_search(tmp_path, cli):
    _two_sets(tmp_path)
    result = cli("index", tmp_path / "dbA", "--out", tmp_path / "cliA", "--metric", "cosine")
    assert result.code == 0 and "flat cosine index of 120 x 6" in result.out
    args = ["search", "--index", tmp_path / "cliA", "--queries", tmp_path / "qA", "--index", tmp_path / "iB",
            "--queries", tmp_path / "qB", "--name", "f", "--out", tmp_path / "sub", "--depth", "7"]
    result = cli(*args, "--weights", "0.6,0.4", "--fusion", "product")
    assert result.code == 0, result.err
    run = load_run(tmp_path / "sub" / "f.csv")
    assert len(run.ranking) == 5 and all(len(r) == 7 for r in run.ranking.values())
    assert run.provenance["params"]["weights"] == [0.6, 0.4]
    for bad, message in ((["--weights", "0.6;0.4"], "--weights '0.6;0.4'"), (["--weights", "1"], "needs 2 finite numbers"),
                         (["--fusion", "max"], "unknown fusion 'max'")):
        result = cli(*args, *bad)
        assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1
    # The old name of --depth still works, with a warning.
    result = cli(*args[:-2], "--k", "7", "--weights", "0.6,0.4", "--fusion", "product", "--name", "old")
    assert result.code == 0 and "--k is deprecated; use --depth" in result.err
    assert load_run(tmp_path / "sub" / "old.csv").ranking == run.ranking
    result = cli("search", "--index", tmp_path / "cliA", "--index", tmp_path / "iB", "--queries", tmp_path / "qA",
                 "--name", "g", "--out", tmp_path / "sub")
    assert result.code == 2 and "one --queries store per --index" in result.err


def test_cli_product_fusion_is_the_library_run_and_not_the_sum(tmp_path, cli):
    """`bpcr search --fusion product` writes the very run search() writes with fusion="product" (byte for byte),
    and other scores and order than the default sum: the option reaches the fusion, not only the provenance."""
    _two_sets(tmp_path, permute_second=True)
    indexes, queries = [tmp_path / "iA", tmp_path / "iB"], [tmp_path / "qA", tmp_path / "qB"]
    args = ["search", "--index", indexes[0], "--queries", queries[0], "--index", indexes[1], "--queries", queries[1],
            "--name", "f", "--depth", "10", "--weights", "0.6,0.4"]
    result = cli(*args, "--fusion", "product", "--out", tmp_path / "cli")
    assert result.code == 0, result.err
    assert cli(*args, "--out", tmp_path / "cli-default").code == 0
    for folder, fusion in (("lib", "product"), ("lib-sum", "sum")):
        search(indexes, queries, "f", tmp_path / folder, SearchOptions(depth=10, weights=[0.6, 0.4], fusion=fusion),
               **QUIET)

    def written(folder):
        return {suffix: (tmp_path / folder / f"f{suffix}").read_bytes() for suffix in (".csv", ".trec")}

    assert written("cli") == written("lib")
    assert written("cli-default") == written("lib-sum")
    product, fused_sum = load_run(tmp_path / "lib" / "f.trec"), load_run(tmp_path / "lib-sum" / "f.trec")
    assert product.provenance["params"]["fusion"] == "product" and fused_sum.provenance["params"]["fusion"] == "sum"
    assert product.scores != fused_sum.scores
    assert product.ranking != fused_sum.ranking
