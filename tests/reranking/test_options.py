"""`bpcr rerank`'s options, declared once (RerankOptions): the --help, the config check, the stage key and the
SIFT cache's key follow the declaration."""
from __future__ import annotations

import dataclasses

import pytest

from bpcr.errors import BadInput
from bpcr.options import check, defaults, fields_of
from bpcr.pipeline.config import validate_config
from bpcr.reranking.options import RerankOptions
from tests.helpers.cli_help import help_as_declared

BASE = {"prepare": {"demo": True}, "extract": [{"name": "e", "backbone": "b", "poolings": ["mac"]}],
        "search": [{"name": "s", "features": "e/mac"}]}


def _config(**table) -> dict:
    return dict(BASE, rerank=[{"name": "r", "input": "s", **table}])


def test_the_defaults_pass_their_own_checks():
    check(RerankOptions())
    assert RerankOptions().local == "matches"
    assert RerankOptions(scorer="blend", blend_of="inliers").local == "inliers"


def test_help_shows_each_option_as_declared(cli, monkeypatch):
    """Each option's --help line is its field's help with the range or choices the check enforces."""
    _, shown = help_as_declared(cli, monkeypatch, "rerank", RerankOptions)
    assert "matches, inliers, blend" in shown and "flann, bf" in shown and "paper 000 §3.1.1" in shown
    assert "a number in (0, 1]" in shown and "an integer at least 32" in shown and "--no-jpeg-draft" in shown
    assert "--cache-dir" in shown and "--ransac-threshold" not in shown


def test_config_accepts_exactly_the_declared_keys(tmp_path):
    declared = {f.name for f in fields_of(RerankOptions)}
    for key in ("bogus", "cache_dir", "out", "progress"):  # the pipeline passes the cache folder and the output itself
        with pytest.raises(BadInput) as info:
            validate_config(tmp_path / "c.toml", _config(**{key: 1}))
        assert set(str(info.value).split("accepted: ")[1].split(", ")) == declared
    validate_config(tmp_path / "c.toml", _config(**{k: v for k, v in defaults(RerankOptions).items() if v is not None}))


@pytest.mark.parametrize("key, value", [("top", 0), ("ratio", 0.0), ("blend_weight", 1.5), ("max_side", 16),
                                        ("ransac_threshold", 0.0), ("seed", -1), ("workers", 0),
                                        ("scorer", "nope"), ("blend_of", "blend"), ("matcher", "knn")])
def test_config_refuses_values_out_of_range_naming_the_key(tmp_path, key, value):
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", _config(**{key: value}))
    assert f"[rerank r] {key}" in str(info.value) or f"[rerank r] unknown {key}" in str(info.value), str(info.value)


def test_the_stage_key_and_the_sift_cache_follow_the_declaration():
    from bpcr.pipeline.stages import code_defaults
    from bpcr.reranking.sift_cache import SiftOptions

    keyed = code_defaults("rerank")
    assert {k: keyed[k] for k in defaults(RerankOptions) if k in keyed} == {
        k: v for k, v in defaults(RerankOptions).items() if v is not None}
    assert SiftOptions() == SiftOptions.of(RerankOptions())
    changed = RerankOptions(max_side=256, max_keypoints=100, jpeg_draft=False)
    assert dataclasses.asdict(SiftOptions.of(changed)) == {"max_side": 256, "max_keypoints": 100, "jpeg_draft": False}
