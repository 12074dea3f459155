"""Database-side augmentation (bpcr.postretrieval.dba): a new store, computed by hand on a plane."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.postretrieval.options import DbaOptions
from bpcr.postretrieval.dba import dba
from bpcr.errors import BadInput
from bpcr.retrieval.index import build_index
from bpcr.io.runs import load_run
from bpcr.retrieval.options import SearchOptions
from bpcr.retrieval.search import search
from bpcr.io.store import open_store, write_store
from tests.helpers.refine_world import META, angle

IDS = ["n0", "n1", "n2", "n3"]
ANGLES = [0, 10, 90, 175]  # nearest: n0 <-> n1 (10 degrees), n2 -> n1 (80), n3 -> n2 (85)


@pytest.fixture
def store(tmp_path):
    write_store(tmp_path / "db", IDS, np.array([angle(a) for a in ANGLES], dtype=np.float32), META,
                failed={"n9": "unreadable"})
    return tmp_path / "db"


def _angles(path) -> list[float]:
    x = open_store(path).features.astype(np.float64)
    return np.degrees(np.arctan2(x[:, 1], x[:, 0])).tolist()


def test_each_vector_joins_its_nearest(store, tmp_path):
    out = dba(store, tmp_path / "dba", DbaOptions(n=1, alpha=0.0), log=lambda m: None)
    # Averaging two unit vectors bisects them: 0+10 -> 5, 10+0 -> 5, 90+10 -> 50, 175+90 -> 132.5.
    assert _angles(out.path) == pytest.approx([5, 5, 50, 132.5], abs=1e-4)
    assert np.linalg.norm(out.features.astype(np.float64), axis=1) == pytest.approx(1, abs=1e-6)
    meta = json.loads((out.path / "meta.json").read_text())
    assert meta["dba"]["n"] == 1 and meta["dba"]["alpha"] == 0.0 and meta["dba"]["source"] == str(store)
    assert meta["backbone"] == "hand" and open_store(out.path).failed == {"n9": "unreadable"}


def test_alpha_weighs_by_cosine(store, tmp_path):
    out = dba(store, tmp_path / "dba", DbaOptions(n=1, alpha=1.0), log=lambda m: None)
    # n2 = (0, 1) plus cos(80) x n1: its angle atan2(1 + c sin 10, c cos 10) with c = cos 80.
    c = np.cos(np.radians(80))
    want = np.degrees(np.arctan2(1 + c * np.sin(np.radians(10)), c * np.cos(np.radians(10))))
    assert _angles(out.path)[2] == pytest.approx(want, abs=1e-4)


def test_the_new_store_is_indexed_and_searched_unchanged(store, tmp_path):
    dba(store, tmp_path / "dba", DbaOptions(n=1, alpha=0.0), log=lambda m: None)
    write_store(tmp_path / "q", ["v1"], np.array([angle(7)], dtype=np.float32), META)  # the query side as it was
    build_index(tmp_path / "dba", tmp_path / "index", log=lambda m: None)
    search(tmp_path / "index", tmp_path / "q", "after", tmp_path / "runs", SearchOptions(depth=7), log=lambda m: None)
    ranking = load_run(tmp_path / "runs" / "after.trec").ranking["v1"]
    assert ranking[:2] == ["n0", "n1"]  # both at 5 degrees now: tied, by ID


def test_refusals(store, tmp_path):
    with pytest.raises(BadInput, match="--n must be"):
        dba(store, tmp_path / "x", DbaOptions(n=0))
    with pytest.raises(BadInput, match="another folder"):
        dba(store, store, DbaOptions(n=1))
    assert not (tmp_path / "x").exists()


def test_cli_dba(store, tmp_path, cli):
    result = cli("dba", store, "--out", tmp_path / "dba", "--n", "1", "--alpha", "0", "--graph-dir", tmp_path / "graphs")
    assert result.code == 0, result.err
    assert "wrote" in result.out and _angles(tmp_path / "dba")[0] == pytest.approx(5, abs=1e-4)
    assert list((tmp_path / "graphs").glob("knn-*.json"))
    bad = cli("dba", store, "--out", tmp_path / "dba2", "--alpha", "-1")
    assert bad.code == 2 and "--alpha" in bad.err


@pytest.mark.parametrize("alpha", [0.0, 3.0])
def test_a_neighbour_with_a_negative_cosine_weighs_nothing(tmp_path, alpha):
    """alpha-DBA's weight is s^alpha over s > 0 only: at alpha = 0 too (max(s, 0) ** 0 would be 1)."""
    x = np.array([[1.0, 0.0], [-0.8, 0.6], [-0.6, 0.8]], dtype=np.float32)  # n0's nearest, n2: cosine -0.6
    write_store(tmp_path / "db", ["n0", "n1", "n2"], x, META)
    out = dba(tmp_path / "db", tmp_path / "dba", DbaOptions(n=1, alpha=alpha), log=lambda m: None)
    augmented = np.asarray(out.features, dtype=np.float64)
    assert augmented[0] == pytest.approx([1.0, 0.0], abs=1e-6)  # n0 alone: its neighbour adds nothing
    both = x[1] + (0.96 ** alpha) * x[2]  # n1's nearest is n2 at cosine 0.48 + 0.48 = 0.96
    assert augmented[1] == pytest.approx(both / np.linalg.norm(both), abs=1e-6)


def test_positive_power_by_hand():
    from bpcr.retrieval.distances import positive_power

    assert positive_power(np.array([0.5, 0.0, -0.5]), 0.0).tolist() == [1.0, 0.0, 0.0]
    assert positive_power(np.array([0.5, 0.0, -0.5]), 2.0).tolist() == [0.25, 0.0, 0.0]
