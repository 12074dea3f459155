"""SIFT re-ranking: scores and order, the stage end to end (its kernels: tests/reranking/test_sift.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from bpcr.dataset.manifest import write_manifest
from bpcr.reranking.options import RerankOptions
from bpcr.reranking.rerank import rerank
from bpcr.reranking.order import blend_scores, finish_query, sift_scores
from bpcr.io.runs import load_run, write_run
from tests.helpers.label_images import photo_of, textured

pytestmark = pytest.mark.slow  # module fixtures build a dataset, a network or a pipeline run

# ---------------------------------------------------------------- scores and order


def test_ties_break_by_distance_then_id():
    shortlist = ["b", "a", "c", "d", "e"]
    scores = sift_scores([5, 5, 5, 7, 0], [100.0, 100.0, 50.0, 300.0, 0.0])
    ids, written = finish_query(shortlist, scores, tail=["z", "y"])
    # d: most matches; c: 5 matches, smaller distance; a, b: full tie, by ID; e: unmatched; tail in input order
    assert ids == ["d", "c", "a", "b", "e", "z", "y"]
    # scores are written with 8 significant digits
    expected = [7 + 0.5 * (1 - 300 / 1024), 5 + 0.5 * (1 - 50 / 1024), 5 + 0.5 * (1 - 100 / 1024), 5 + 0.5 * (1 - 100 / 1024)]
    assert written[:4] == pytest.approx(expected, rel=1e-7)
    assert written[4:] == [0.5 * (5 - 4) / 5, -1.0, -2.0]


def test_unmatched_images_keep_input_order():
    ids, _ = finish_query(["q", "p", "o", "n"], sift_scores([0, 0, 2, 0], [0, 0, 10.0, 0]), tail=[])
    assert ids == ["o", "q", "p", "n"]


def test_blend_hand_values():
    # visual min-max: [1, 0.5, 0]; local min-max: [0, 1, 0.5]
    assert blend_scores([0.9, 0.8, 0.7], [1.0, 3.0, 2.0], 0.25) == pytest.approx([0.75, 0.625, 0.125])
    assert blend_scores([1.0, 1.0], [2.0, 4.0], 0.5) == pytest.approx([0.0, 0.5])


# ---------------------------------------------------------------- the stage


@pytest.fixture
def dataset(tmp_path):
    """Two queries (photos of products 0 and 1) and five database labels, plus a deep input run."""
    root = tmp_path / "data"
    (root / "db").mkdir(parents=True)
    (root / "q").mkdir()
    db_ids = [f"n{i}" for i in range(5)]
    for i, db_id in enumerate(db_ids):
        cv2.imwrite(str(root / "db" / f"{db_id}.png"), textured(100 + i))
    cv2.imwrite(str(root / "q" / "v0.png"), photo_of(textured(100)))
    cv2.imwrite(str(root / "q" / "v1.png"), photo_of(textured(101)))
    write_manifest(root / "database.csv", db_ids, [root / "db" / f"{d}.png" for d in db_ids], [220] * 5, [180] * 5, [""] * 5)
    write_manifest(root / "queries.csv", ["v0", "v1"], [root / "q" / "v0.png", root / "q" / "v1.png"], [260] * 2, [220] * 2, [""] * 2)
    # the true matches sit last in the shortlist of 4; n4 is below the shortlist
    ranking = {"v0": ["n3", "n2", "n1", "n0", "n4"], "v1": ["n0", "n2", "n3", "n1", "n4"]}
    scores = {q: [0.9, 0.8, 0.7, 0.6, 0.5] for q in ranking}
    write_run(tmp_path / "runs", "deep", ranking, scores, {"run": "deep"})
    return {"root": root, "run": tmp_path / "runs" / "deep.trec", "out": tmp_path / "out", "cache": tmp_path / "cache"}


def _rerank(d, name="sift", **kw):
    kw = {"top": 4, "workers": 1, **kw}
    return rerank(d["run"], d["root"] / "database.csv", d["root"] / "queries.csv", name, d["out"], RerankOptions(**kw),
                  cache_dir=d["cache"]).written[".trec"]


def test_matching_image_outranks_non_matching_and_tail_keeps_order(dataset):
    trec = _rerank(dataset)
    run = load_run(trec)
    assert run.ranking["v0"][0] == "n0" and run.ranking["v1"][0] == "n1"
    assert run.ranking["v0"][-1] == "n4" and run.scores["v0"][-1] == -1.0
    assert run.scores["v0"][0] > 10  # many ratio-test matches
    assert run.submission["v0"][0] == "n0"


@pytest.mark.parametrize("scorer", ["inliers", "blend"])
def test_other_scorers_find_the_match(dataset, scorer):
    run = load_run(_rerank(dataset, name=scorer, scorer=scorer, blend_weight=0.9))
    assert run.ranking["v0"][0] == "n0" and run.ranking["v1"][0] == "n1"
    assert run.provenance["params"]["scorer"] == scorer


def test_rows_beyond_top_keep_input_order(dataset):
    run = load_run(_rerank(dataset, top=1))
    assert run.ranking["v0"] == ["n3", "n2", "n1", "n0", "n4"]
    assert run.scores["v0"][1:] == [-1.0, -2.0, -3.0, -4.0]


@pytest.mark.parametrize("scorer,matcher", [("matches", "bf"), ("inliers", "bf"), ("matches", "flann")])
def test_byte_identical_across_workers_repeats_and_cache_states(dataset, tmp_path, scorer, matcher):
    """Every .csv and .trec byte agrees: 1 or 2 workers, a cold or a warm cache (made by either), run after run,
    whatever OpenCV thread count the calling process had set; the caller's OpenCV settings are restored."""
    plan = [(1, "a", "cold"), (2, "b", "cold"), (1, "b", "warm"), (2, "a", "warm"), (1, "a", "warm"), (2, "b", "warm")]
    before = (cv2.getNumThreads(), cv2.useOptimized())
    written = []
    for k, (workers, cache, state) in enumerate(plan):
        cv2.setNumThreads(1 + k % 3)
        result = rerank(dataset["run"], dataset["root"] / "database.csv", dataset["root"] / "queries.csv", "sift",
                        tmp_path / f"out{k}", RerankOptions(top=4, scorer=scorer, matcher=matcher, workers=workers),
                        cache_dir=tmp_path / cache)
        assert (cv2.getNumThreads(), cv2.useOptimized()) == (1 + k % 3, True)
        reused = result.provenance["sift_cache"]["reused"]
        assert reused == (4 if state == "warm" else 0), (k, result.provenance["sift_cache"])
        written.append({suffix: result.written[suffix].read_bytes() for suffix in (".csv", ".trec")})
    cv2.setNumThreads(before[0])
    assert all(w == written[0] for w in written[1:])
    assert load_run(tmp_path / "out0" / "sift.trec").ranking["v0"][0] == "n0"


def test_scores_do_not_depend_on_the_order_of_match_distances():
    from bpcr.reranking.sift import mean_match_distance

    rng = np.random.default_rng(0)
    distances = (rng.random(997) * 300).astype(np.float32)
    means = {mean_match_distance(distances[rng.permutation(997)]) for _ in range(5)}
    assert len(means) == 1
    assert means.pop() == pytest.approx(float(np.mean(distances.astype(np.float64))), rel=1e-15)


def test_cache_reuse_and_invalidation(dataset):
    first = json.loads(_rerank(dataset, name="one").with_suffix(".json").read_text())
    assert first["sift_cache"] == {"computed": 4, "reused": 0, "recomputed_invalid": 0}  # n4 is in no shortlist
    second = json.loads(_rerank(dataset, name="two").with_suffix(".json").read_text())
    assert second["sift_cache"] == {"computed": 0, "reused": 4, "recomputed_invalid": 0}
    capped = json.loads(_rerank(dataset, name="three", max_keypoints=100).with_suffix(".json").read_text())
    assert capped["sift_cache"] == {"computed": 4, "reused": 0, "recomputed_invalid": 0}
    path = dataset["root"] / "db" / "n2.png"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = json.loads(_rerank(dataset, name="four").with_suffix(".json").read_text())
    assert touched["sift_cache"] == {"computed": 1, "reused": 3, "recomputed_invalid": 0}
    files = list(dataset["cache"].rglob("*"))
    assert all(f.suffix == ".npz" for f in files if f.is_file())


def test_unreadable_query_keeps_input_order_with_a_warning(dataset):
    (dataset["root"] / "q" / "v1.png").write_bytes(b"not an image")
    run = load_run(_rerank(dataset))
    assert run.ranking["v1"] == ["n0", "n2", "n3", "n1", "n4"]
    assert run.ranking["v0"][0] == "n0"
    assert run.provenance["warnings"]["query_unreadable"] == 1
    assert run.provenance["queries"] == {"total": 2, "reranked": 1}


def test_output_names_its_input_and_parameters(dataset):
    run = load_run(_rerank(dataset, ratio=0.7))
    prov = run.provenance
    from bpcr.io.fileio import sha256_file

    files = {Path(f["path"]).suffix: f["sha256"] for f in prov["input_run"]["files"]}
    assert files[".trec"] == sha256_file(dataset["run"])
    assert prov["input_run"]["name"] == "deep"
    assert prov["params"]["ratio"] == 0.7 and prov["params"]["top"] == 4
    assert prov["params"]["max_keypoints"] == 250 and prov["params"]["matcher"] == "bf"
    assert prov["params"]["root_sift"] is False and prov["params"]["jpeg_draft"] is True


def test_cli_rerank_and_bad_input(dataset, cli, tmp_path):
    d = dataset
    args = ["rerank", d["run"], "--db-manifest", d["root"] / "database.csv", "--query-manifest", d["root"] / "queries.csv",
            "--top", "4", "--workers", "1", "--cache-dir", d["cache"], "--out", d["out"]]
    ok = cli(*args, "--name", "viacli")
    assert ok.code == 0, ok.err
    assert load_run(d["out"] / "viacli.trec").ranking["v0"][0] == "n0"
    bad = cli(*args, "--name", "x", "--scorer", "nope")
    assert bad.code == 2 and "unknown scorer" in bad.err and len(bad.err.strip().splitlines()) == 1
    same = cli(*args[:-2], "--out", d["run"].parent, "--name", "deep")
    assert same.code == 2 and "overwrite" in same.err
    assert "Example" in cli("rerank", "--help").out


def test_database_image_missing_from_manifest_scores_unmatched(dataset, tmp_path):
    write_run(tmp_path / "runs", "odd", {"v0": ["n9", "n3", "n0"]}, {"v0": [0.9, 0.8, 0.7]}, {"run": "odd"})
    trec = rerank(tmp_path / "runs" / "odd.trec", dataset["root"] / "database.csv", dataset["root"] / "queries.csv",
                  "odd-sift", dataset["out"], RerankOptions(top=3, workers=1), cache_dir=dataset["cache"])
    run = load_run(trec.csv)
    assert trec.provenance == run.provenance
    assert run.ranking["v0"][0] == "n0"
    assert run.provenance["warnings"]["db_not_in_manifest"] == 1


def test_cli_defaults_match_the_library():
    import inspect

    from bpcr.reranking import rerank as stage
    from bpcr.cli import stages

    params = inspect.signature(stages.rerank_command).parameters
    assert params["max_keypoints"].default.default == stage.DEFAULT_MAX_KEYPOINTS
    assert params["max_side"].default.default == stage.DEFAULT_MAX_SIDE
    assert params["top"].default.default == stage.DEFAULT_TOP
    assert params["cache_dir"].default.default == stage.DEFAULT_CACHE_DIR
    assert params["matcher"].default.default == stage.DEFAULT_MATCHER
    for name in ("root_sift", "jpeg_draft", "device"):
        assert params[name].default.default == getattr(RerankOptions(), name)


# ---------------------------------------------------------------- a cache that lies


def _entries(d, max_keypoints=250):
    """Cache file of each shortlisted database image (n0..n3) for the default SIFT options."""
    from bpcr.reranking import rerank as stage
    from bpcr.reranking.sift_cache import SiftOptions, cache_file

    sift = SiftOptions(max_side=stage.DEFAULT_MAX_SIDE, max_keypoints=max_keypoints)
    return {f"n{i}": cache_file(d["cache"], d["root"] / "db" / f"n{i}.png", sift) for i in range(4)}


def _npz_with(path, **changes):
    with np.load(path, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def test_junk_cache_is_recomputed_not_read_as_no_match(dataset, cli, monkeypatch):
    """Every entry overwritten with junk: recomputed with a warning each, the same bytes as the honest run."""
    honest = _rerank(dataset, name="sift")
    expected = {s: honest.with_suffix(s).read_bytes() for s in (".csv", ".trec")}
    for entry in _entries(dataset).values():
        entry.write_bytes(b"junk" * 100)
    monkeypatch.setenv("COLUMNS", "40")
    args = ["rerank", dataset["run"], "--db-manifest", dataset["root"] / "database.csv", "--query-manifest",
            dataset["root"] / "queries.csv", "--top", "4", "--workers", "1", "--cache-dir", dataset["cache"],
            "--out", dataset["out"], "--name", "sift"]
    result = cli(*args)
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 4 and all("SIFT cache entry of database image n" in w for w in warnings), result.err
    assert all(w.endswith("computed again") and "unreadable" in w for w in warnings)  # one line each, unwrapped
    assert "4 invalid in the cache and computed again" in result.out
    prov = json.loads((dataset["out"] / "sift.json").read_text())
    assert prov["sift_cache"] == {"computed": 0, "reused": 0, "recomputed_invalid": 4}
    assert prov["warnings"]["sift_cache_invalid"] == 4
    for suffix, data in expected.items():
        assert (dataset["out"] / f"sift{suffix}").read_bytes() == data
    again = json.loads(_rerank(dataset, name="sift").with_suffix(".json").read_text())
    assert again["sift_cache"] == {"computed": 0, "reused": 4, "recomputed_invalid": 0}


def test_each_kind_of_bad_entry_is_caught(dataset):
    honest = _rerank(dataset, name="sift")
    expected = honest.read_bytes()
    entries = _entries(dataset)
    n0, n1, n2, n3 = (entries[f"n{i}"] for i in range(4))
    n0.write_bytes(n1.read_bytes())  # a whole, well-formed entry of another image: only its image hash tells
    _npz_with(n1, desc=np.zeros((3, 128), np.float32), xy=np.zeros((3, 2), np.float32))  # float descriptors
    _npz_with(n2, image_sha256=None)  # no image hash (as an entry of an older kit)
    n3.write_bytes(n3.read_bytes()[:200])  # torn
    result = rerank(dataset["run"], dataset["root"] / "database.csv", dataset["root"] / "queries.csv", "sift",
                    dataset["out"], RerankOptions(top=4, workers=2), cache_dir=dataset["cache"])
    prov = result.provenance
    assert prov["sift_cache"] == {"computed": 0, "reused": 0, "recomputed_invalid": 4}
    reasons = "\n".join(prov["warnings"]["examples"])
    for needed in ("n0 (", "made from other image bytes", "desc is float32", "holds arrays desc, sift, xy",
                   "unreadable (BadZipFile"):
        assert needed in reasons, reasons
    assert result.written[".trec"].read_bytes() == expected


def test_entry_with_other_sift_settings_or_too_many_keypoints_is_caught(dataset):
    _rerank(dataset, name="sift")
    entries = _entries(dataset)
    _npz_with(entries["n0"], sift=np.array([2, 256, 250], np.int64))
    with np.load(entries["n1"], allow_pickle=False) as saved:
        xy, desc = saved["xy"], saved["desc"]
    _npz_with(entries["n1"], xy=np.concatenate([xy] * 20)[:251], desc=np.concatenate([desc] * 20)[:251])
    prov = load_run(_rerank(dataset, name="again")).provenance
    assert prov["sift_cache"]["recomputed_invalid"] == 2
    reasons = " ".join(prov["warnings"]["examples"])
    assert "made with SIFT settings [2, 256, 250]" in reasons and "251 keypoints, more than the cap of 250" in reasons


def test_query_descriptors_are_cached_too(dataset):
    first = json.loads(_rerank(dataset, name="one").with_suffix(".json").read_text())
    assert first["sift_cache_queries"] == {"computed": 2, "reused": 0, "recomputed_invalid": 0}
    second = json.loads(_rerank(dataset, name="two").with_suffix(".json").read_text())
    assert second["sift_cache_queries"] == {"computed": 0, "reused": 2, "recomputed_invalid": 0}
    assert second["sift_cache"] == {"computed": 0, "reused": 4, "recomputed_invalid": 0}
    one, two = load_run(dataset["out"] / "one.trec"), load_run(dataset["out"] / "two.trec")
    assert one.ranking == two.ranking and one.scores == two.scores


def test_an_image_that_is_both_query_and_database_is_described_once(dataset, tmp_path):
    from bpcr.dataset.manifest import write_manifest

    root = dataset["root"]
    write_manifest(root / "both.csv", ["v0", "n0"], [root / "q" / "v0.png", root / "db" / "n0.png"], [260, 220],
                   [220, 180], ["", ""])
    write_run(tmp_path / "runs", "self", {"n0": ["n0", "n1"]}, {"n0": [0.9, 0.8]}, {"run": "self"})
    result = rerank(tmp_path / "runs" / "self.trec", root / "database.csv", root / "both.csv", "self-sift",
                    dataset["out"], RerankOptions(top=2, workers=1), cache_dir=dataset["cache"])
    prov = result.provenance
    assert prov["sift_cache"]["computed"] == 2 and prov["sift_cache_queries"]["computed"] == 1
    assert load_run(result.written[".trec"]).ranking["n0"][0] == "n0"


@pytest.mark.parametrize("options", [{"matcher": "bf"}, {"matcher": "bf", "root_sift": True},
                                     {"matcher": "flann", "root_sift": True}, {"jpeg_draft": False}])
def test_matcher_and_descriptor_options_find_the_match(dataset, options):
    run = load_run(_rerank(dataset, name="opt", **options))
    assert run.ranking["v0"][0] == "n0" and run.ranking["v1"][0] == "n1"
    params = run.provenance["params"]
    assert all(params[k] == v for k, v in options.items())


def test_bf_is_byte_identical_across_workers_and_cache_states(dataset, tmp_path):
    written = set()
    for k, (workers, cache) in enumerate([(1, "a"), (2, "b"), (2, "a"), (1, "b")]):
        result = rerank(dataset["run"], dataset["root"] / "database.csv", dataset["root"] / "queries.csv", "sift",
                        tmp_path / f"out{k}", RerankOptions(top=4, matcher="bf", root_sift=True, workers=workers),
                        cache_dir=tmp_path / cache)
        written.add(result.written[".trec"].read_bytes())
    assert len(written) == 1


def test_device_other_than_cpu_needs_a_gpu_or_falls_back_with_auto(dataset):
    from bpcr.errors import BadInput
    from bpcr.reranking.rerank import _match_device

    import torch

    if not torch.cuda.is_available():
        assert _match_device("auto", "flann") is None
        with pytest.raises(BadInput, match="no CUDA GPU"):
            _rerank(dataset, name="gpu", device="cuda", matcher="bf")
    else:
        with pytest.raises(BadInput, match="--matcher bf"):
            _match_device("cuda", "flann")
        assert _match_device("cuda", "bf").startswith("cuda")
