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
