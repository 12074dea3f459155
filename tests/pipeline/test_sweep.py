"""`bpcr sweep`: grid axes, config edits, and a tiny sweep that chooses on the public half."""
from __future__ import annotations

import json

import pytest

from bpcr.errors import BadInput
from bpcr.pipeline.sweep import Axis, apply_point, parse_axis

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


def test_tiny_sweep_chooses_on_public_and_reports_private(tmp_path, monkeypatch, cli, tiny_demo_config):
    (tmp_path / "tiny.toml").write_text(tiny_demo_config(8, then=RERANK))
    monkeypatch.chdir(tmp_path)
    result = cli("sweep", "tiny.toml", "--grid", "rerank.top=3,8", "--run", "sift", "--out", "chosen.toml")
    assert result.code == 0, result.err
    data = json.loads((tmp_path / "work" / "sweep" / "sweep.json").read_text())
    points = data["points"]
    assert [p["settings"] for p in points] == [{"rerank.top": 3}, {"rerank.top": 8}]
    publics = [p["public"] for p in points]
    assert data["chosen"] == max(range(2), key=lambda i: (publics[i], -i))
    assert all(p["private"] is not None and set(p["runs"]) == {"mac", "sift"} for p in points)
    chosen = (tmp_path / "chosen.toml").read_text()
    assert chosen.startswith("# Chosen by `bpcr sweep` on the public half")
    assert f"top = {[3, 8][data['chosen']]}" in chosen
    table = (tmp_path / "work" / "sweep" / "sweep.md").read_text()
    assert "| point-000 | 3 |" in table and "chosen" in table
    # Each point wrote its own runs.
    assert (tmp_path / "work" / "sweep" / "point-001" / "submissions" / "sift.trec").is_file()
    bad = cli("sweep", "tiny.toml", "--grid", "rerank.nope.top=1")
    assert bad.code == 2 and bad.err.count("\n") == 1
