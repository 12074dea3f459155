"""bpcr.evaluation.split: the public/private halves are deterministic, stable when queries are added, and guarded."""
from __future__ import annotations

import hashlib

import pytest

from bpcr.errors import BadInput
from bpcr.evaluation.split import QuerySplit, tuning_queries

IDS = [f"v{i:06d}" for i in range(1000)]


def test_half_is_the_hash_by_hand():
    split = QuerySplit(seed=0, public_share=0.5)
    for q in ("v000101", "v000104", "abc"):
        digest = hashlib.sha256(f"bpcr-split/1:0:{q}".encode()).digest()
        assert split.is_public(q) == (int.from_bytes(digest[:8], "big") / 2 ** 64 < 0.5)


def test_halves_partition_and_are_about_the_share():
    split = QuerySplit()
    public, private = split.half(IDS, "public"), split.half(IDS, "private")
    assert sorted(public + private) == IDS and not set(public) & set(private)
    assert 450 <= len(public) <= 550
    assert len(QuerySplit(public_share=0.2).half(IDS, "public")) < 260
    assert split.half(IDS, "all") == IDS


def test_stable_when_queries_are_added_and_seeded():
    split = QuerySplit(seed=3)
    small = split.half(IDS[:100], "public")
    assert [q for q in split.half(IDS, "public") if q in set(IDS[:100])] == small
    assert QuerySplit(seed=3).half(IDS, "public") == split.half(IDS, "public")
    assert QuerySplit(seed=4).half(IDS, "public") != split.half(IDS, "public")


def test_tuning_refuses_the_private_half_unless_allowed():
    split = QuerySplit()
    assert tuning_queries(IDS, split) == split.half(IDS, "public")
    for half in ("private", "all"):
        with pytest.raises(BadInput, match="--allow-private"):
            tuning_queries(IDS, split, half)
        assert tuning_queries(IDS, split, half, allow_private=True) == split.half(IDS, half)


@pytest.mark.parametrize("seed, share", [(-1, 0.5), (0, 0.0), (0, 1.0), (True, 0.5)])
def test_bad_split_settings(seed, share):
    with pytest.raises(BadInput):
        QuerySplit(seed=seed, public_share=share)


def test_the_docs_state_the_demo_halves_as_the_split_computes_them():
    """README and docs give the demo's halves (99 / 101 queries) and their mean number of relevant images, and
    say the split is not stratified: the figures are the kit's own split of ground_truth/demo.csv."""
    from pathlib import Path

    from bpcr.dataset.gt import read_ground_truth

    root = Path(__file__).resolve().parents[2]
    gt = read_ground_truth(root / "ground_truth" / "demo.csv")
    split = QuerySplit()
    halves = {h: split.half(gt, h) for h in ("public", "private", "all")}
    mean = {h: f"{sum(len(gt[q]) for q in ids) / len(ids):.2f}" for h, ids in halves.items()}
    assert (len(halves["public"]), len(halves["private"])) == (99, 101)
    assert mean == {"public": "3.35", "private": "3.04", "all": "3.19"}  # all: 639 / 200 = 3.195 exactly
    assert sum(len(rel) for rel in gt.values()) == 639
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    evaluation = " ".join((root / "docs" / "evaluation.md").read_text(encoding="utf-8").split())
    demo = " ".join((root / "docs" / "demo.md").read_text(encoding="utf-8").split())
    assert "101 queries; the public half has 99" in readme and "not stratified" in readme
    assert f"public half's queries have {mean['public']} relevant images on average, the private half's " \
           f"{mean['private']}" in readme
    assert f"public half of **99** queries with **{mean['public']}** relevant images on average and a private " \
           f"half of **101** queries with **{mean['private']}**" in evaluation and "**not stratified**" in evaluation
    assert f"99 public queries ({mean['public']} relevant images on average) and 101 private ones " \
           f"({mean['private']})" in demo and "not stratified" in demo and "100 in each half" not in demo
    assert "(3.195 on average)" in demo and "3.195 relevant images each on average" in evaluation
