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


# ---------------------------------------------------------------- an option on the command line is the library's


def _label_dataset(root, scale: int, suffix: str) -> dict:
    """Two queries (photos of labels 0 and 1) and four database labels, each ``scale`` times the helper's size,
    saved as ``suffix`` files; a deep run with the true matches last in its shortlist of 4."""
    import cv2

    from bpcr.dataset.manifest import write_manifest
    from bpcr.io.runs import write_run
    from tests.helpers.label_images import photo_of, textured

    (root / "db").mkdir(parents=True)
    (root / "q").mkdir()

    def grow(img):
        return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)

    db_ids = [f"n{i}" for i in range(4)]
    db_paths = [root / "db" / f"{d}{suffix}" for d in db_ids]
    for i, path in enumerate(db_paths):
        cv2.imwrite(str(path), grow(textured(100 + i)))
    q_paths = [root / "q" / f"v{i}{suffix}" for i in range(2)]
    for i, path in enumerate(q_paths):
        cv2.imwrite(str(path), grow(photo_of(textured(100 + i))))
    write_manifest(root / "database.csv", db_ids, db_paths, [220 * scale] * 4, [180 * scale] * 4, [""] * 4)
    write_manifest(root / "queries.csv", ["v0", "v1"], q_paths, [260 * scale] * 2, [220 * scale] * 2, [""] * 2)
    ranking = {"v0": ["n3", "n2", "n1", "n0"], "v1": ["n0", "n2", "n3", "n1"]}
    write_run(root / "runs", "deep", ranking, {q: [0.9, 0.8, 0.7, 0.6] for q in ranking}, {"run": "deep"})
    return {"run": root / "runs" / "deep.trec", "db": root / "database.csv", "q": root / "queries.csv"}


def _run_bytes(folder, name="r") -> dict:
    return {suffix: (folder / f"{name}{suffix}").read_bytes() for suffix in (".csv", ".trec")}


# option -> (the data set's scale and file suffix, the CLI's arguments, the library's fields, the default's fields).
# Draft decoding needs JPEGs over four times --max-side on their long side: 440 px labels against --max-side 100
# decode at 1/2 scale; the flag is tested both ways against the other.
RERANK_CASES = {
    "root-sift": ((1, ".png"), ("--root-sift",), {"root_sift": True}, {}),
    "no-jpeg-draft": ((2, ".jpg"), ("--max-side", "100", "--no-jpeg-draft"), {"max_side": 100, "jpeg_draft": False},
                      {"max_side": 100}),
    "jpeg-draft": ((2, ".jpg"), ("--max-side", "100", "--jpeg-draft"), {"max_side": 100, "jpeg_draft": True},
                   {"max_side": 100, "jpeg_draft": False}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RERANK_CASES))
def test_cli_option_gives_the_library_run_and_not_the_other_setting(cli, tmp_path, case):
    """`bpcr rerank` with the option writes the very run rerank() writes with it (byte for byte, each side with
    a cold SIFT cache of its own), and other scores than the other setting gives."""
    from bpcr.io.runs import load_run
    from bpcr.reranking.rerank import rerank

    (scale, suffix), args, fields, other = RERANK_CASES[case]
    d = _label_dataset(tmp_path / "data", scale, suffix)
    common = {"top": 4, "workers": 1}
    result = cli("rerank", d["run"], "--db-manifest", d["db"], "--query-manifest", d["q"], "--top", "4",
                 "--workers", "1", *args, "--cache-dir", tmp_path / "cache-cli", "--out", tmp_path / "cli",
                 "--name", "r")
    assert result.code == 0, result.err
    rerank(d["run"], d["db"], d["q"], "r", tmp_path / "lib", RerankOptions(**common, **fields),
           cache_dir=tmp_path / "cache-lib")
    rerank(d["run"], d["db"], d["q"], "r", tmp_path / "other", RerankOptions(**common, **other),
           cache_dir=tmp_path / "cache-other")
    assert _run_bytes(tmp_path / "cli") == _run_bytes(tmp_path / "lib")
    with_option, without = load_run(tmp_path / "lib" / "r.trec"), load_run(tmp_path / "other" / "r.trec")
    params = {k: v for k, v in with_option.provenance["params"].items() if k != "cache_dir"}
    assert params == {**{k: v for k, v in without.provenance["params"].items() if k != "cache_dir"}, **fields}
    assert with_option.scores != without.scores
    assert with_option.ranking["v0"][0] == "n0" and with_option.ranking["v1"][0] == "n1"  # still finds the match
