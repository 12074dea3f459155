"""The textual index (paper 001 §2.2, eq 7): building, storage, loading, the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.dataset.manifest import write_manifest
from bpcr.text.index import build_text_index, load_text_index
from bpcr.text.options import TextIndexOptions


def _manifest(path: Path, descriptions: dict[str, str]) -> Path:
    ids = list(descriptions)
    write_manifest(path, ids, [path.parent / f"{i}.jpg" for i in ids], [10] * len(ids), [10] * len(ids),
                   [descriptions[i] for i in ids])
    return path


# ---------------------------------------------------------------- preprocessing


# ---------------------------------------------------------------- build, save, load


DESCRIPTIONS = {
    "n01": "Maybelline Color Sensational Lipstick, Red Revival",
    "n02": "MAYBELLINE color sensational lipstick - red revival 4.2g",
    "n03": "Maybelline Color Sensational Lipstick Red Revival (new)",
    "n04": "Olay Regenerist Micro-Sculpting Cream 50ml",
    "n05": "olay regenerist micro sculpting cream 50 ml",
    "n06": "美宝莲 绝色持久唇膏 红色",
    "n07": "",
    "n08": "Hair oil",
}


def test_build_neighbours_and_dropped_descriptions(tmp_path):
    index = build_text_index(_manifest(tmp_path / "db.csv", DESCRIPTIONS), tmp_path / "ti")
    assert set(index.neighbours("n01")) == {"n02", "n03"}
    assert set(index.neighbours("n04")) == {"n05"}
    assert index.neighbours("n06") == [] and index.neighbours("n07") == [] and index.neighbours("n08") == []
    counts = index.meta["counts"]
    assert (counts["images"], counts["non_english"], counts["empty"], counts["documents"]) == (8, 1, 1, 6)
    assert index.meta["tau"] == 0.6
    # Best first, as the stored cosines say.
    sims = [s for _, s in index.neighbours_with_sims("n01")]
    assert sims == sorted(sims, reverse=True) and all(s > 0.6 for s in sims)


def test_n_counts_only_kept_descriptions(tmp_path):
    # IDF of eq 4 is computed over the 2 kept non-empty descriptions, not the 4 rows.
    index = build_text_index(_manifest(tmp_path / "db.csv", {"a1": "red lipstick", "a2": "red mascara",
                                                              "a3": "", "a4": "口红口红"}), tmp_path / "ti",
                             TextIndexOptions(tau=0.0))
    idf_red, idf_other = math.log(3 / 3) + 1, math.log(3 / 2) + 1
    expected = idf_red**2 / (idf_red**2 + idf_other**2)
    assert index.neighbours_with_sims("a1") == [("a2", pytest.approx(expected, rel=1e-6))]


def test_safe_round_trip_and_reuse(tmp_path):
    manifest = _manifest(tmp_path / "db.csv", DESCRIPTIONS)
    built = build_text_index(manifest, tmp_path / "ti")
    with np.load(tmp_path / "ti" / "neighbours.npz", allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["indices", "indptr", "sims"]
        assert arrays["sims"].dtype == np.float32
    loaded = load_text_index(tmp_path / "ti")
    assert loaded.ids == built.ids == sorted(DESCRIPTIONS)
    for image_id in DESCRIPTIONS:
        assert loaded.neighbours_with_sims(image_id) == built.neighbours_with_sims(image_id)
    created = json.loads((tmp_path / "ti" / "meta.json").read_text())["created"]
    # Same manifest and options: reused, not rebuilt.
    assert build_text_index(manifest, tmp_path / "ti").meta["created"] == created
    # Another tau: rebuilt.
    assert build_text_index(manifest, tmp_path / "ti", TextIndexOptions(tau=0.95)).meta["tau"] == 0.95
    assert not list(tmp_path.glob(".ti.*"))


def test_refuses_to_overwrite_a_folder_that_is_not_an_index(tmp_path):
    manifest = _manifest(tmp_path / "db.csv", DESCRIPTIONS)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "keep.txt").write_text("precious")
    with pytest.raises(BadInput, match="not a text index"):
        build_text_index(manifest, tmp_path / "work")
    assert (tmp_path / "work" / "keep.txt").read_text() == "precious"


def test_load_rejects_inconsistent_arrays(tmp_path):
    build_text_index(_manifest(tmp_path / "db.csv", DESCRIPTIONS), tmp_path / "ti")
    with np.load(tmp_path / "ti" / "neighbours.npz", allow_pickle=False) as arrays:
        indptr, indices, sims = arrays["indptr"], arrays["indices"].copy(), arrays["sims"]
    indices[0] = 99
    np.savez(tmp_path / "ti" / "neighbours.npz", indptr=indptr, indices=indices, sims=sims)
    with pytest.raises(BadInput, match="outside"):
        load_text_index(tmp_path / "ti")
    np.save(tmp_path / "ti" / "neighbours.npz", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInput):
        load_text_index(tmp_path / "ti")
    with pytest.raises(BadInput, match="no text index"):
        load_text_index(tmp_path / "missing")


def test_cli_text_index(tmp_path, cli):
    manifest = _manifest(tmp_path / "db.csv", DESCRIPTIONS)
    result = cli("text-index", manifest, "--out", tmp_path / "ti", "--tau", "0.6")
    assert result.code == 0, result.err
    assert "8 images" in result.out and "1 non-English" in result.out
    bad = cli("text-index", tmp_path / "nope.csv", "--out", tmp_path / "ti2")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "nope.csv" in bad.err
    bad_tau = cli("text-index", manifest, "--out", tmp_path / "ti3", "--tau", "1.5")
    assert bad_tau.code == 2
