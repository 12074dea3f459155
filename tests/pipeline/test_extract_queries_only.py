"""An [[extract]]'s query side: ``queries = { crop = "salient" }`` extracts the query store with options of its own
(the 2020 runner-up cut the query photos only), allows only settings two stores need not share, keys the query
side alone (an existing database extraction is reused), and `bpcr predict` and `--stand-in` keep it."""
from __future__ import annotations

import json

import pytest

from bpcr.features.options import EXTRACT_FIELDS
from bpcr.io.store import CROPS_FILE, EXTRACTION_FIELDS
from bpcr.pipeline.config import load_config, validate_config
from bpcr.pipeline.configtypes import QUERY_SIDE_OPTIONS
from bpcr.pipeline.standin import apply_stand_in
from tests.helpers.tiny_pipeline import predicted_copy, rerun_after_edit, run_tiny, stages_run

DEMO = "[prepare]\ndemo = true\nn_products = 2\nn_distractors = 3\nn_queries = 2\n"
EXTRACT = "[[extract]]\nname = 'a'\nbackbone = 'test_resnet'\npoolings = ['gem', 'mac']\n"
SEARCH = "[[search]]\nname = 's'\nfeatures = 'a/gem'\n"
CROP = "queries = { crop = 'salient' }\n"


def test_the_query_side_takes_only_extract_options_two_stores_need_not_share():
    assert QUERY_SIDE_OPTIONS == ("crop",)
    assert set(QUERY_SIDE_OPTIONS) <= set(EXTRACT_FIELDS)
    # what search compares between a query store and its index must be the database's own
    assert not set(QUERY_SIDE_OPTIONS) & set(EXTRACTION_FIELDS)


@pytest.mark.parametrize("text", [
    DEMO + EXTRACT + CROP + SEARCH,
    DEMO + EXTRACT + "size = 96\nresize = 'pad'\n" + CROP + SEARCH,
    DEMO + EXTRACT + "crop = 'salient'\nqueries = { crop = 'none' }\n" + SEARCH,  # the database cropped instead
    DEMO + EXTRACT + "[extract.queries]\ncrop = 'salient'\n" + SEARCH,  # the same table, written as a sub-table
    DEMO + EXTRACT + "queries = {}\n" + SEARCH,
], ids=["crop", "with-pad", "inverse", "sub-table", "empty"])
def test_a_config_with_a_query_side_crop_validates(tmp_path, text):
    path = tmp_path / "ok.toml"
    path.write_text(text)
    validate_config(path, load_config(path))


@pytest.mark.parametrize("queries,reason", [
    ("{ size = 300 }", "[extract a queries] size must be the same for the database and the queries; set it in "
                       "[extract a] itself (a query-side table takes only crop)"),
    ("{ poolings = ['mac'] }", "[extract a queries] poolings must be the same for the database and the queries"),
    ("{ pooling_params = { gem = { p = 4 } } }", "[extract a queries] pooling_params must be the same"),
    ("{ backbone = 'resnet50' }", "[extract a queries] backbone must be the same"),
    ("{ crop = 'salient', resize = 'pad' }", "[extract a queries] resize must be the same"),
    ("{ dtype = 'float32' }", "[extract a queries] dtype must be the same"),  # not compared, still the entry's
    ("{ cropp = 'salient' }", "[extract a queries] unknown option 'cropp'; accepted: crop"),
    ("{ restart = true }", "[extract a queries] unknown option 'restart'; accepted: crop"),  # the pipeline's key
    ("{ crop = 'tight' }", "[extract a queries] unknown crop 'tight'; choose from none, salient"),
    ("{ crop = true }", "[extract a queries] crop must be a string, got true (a boolean)"),
    ("'salient'", "[extract a] queries must be a table, got 'salient' (a string)"),
])
def test_a_bad_query_side_is_one_line_naming_the_config_and_table_before_any_stage(refused_config, queries,
                                                                                     reason):
    refused_config(DEMO + EXTRACT + f"queries = {queries}\n" + SEARCH, "bad.toml: " + reason)


def test_the_merged_query_options_are_checked_as_an_extraction_is(refused_config):
    refused_config(DEMO + EXTRACT + "resize = 'aspect'\n" + CROP + SEARCH,
                   "[extract a queries] --crop salient needs --resize square or pad, not aspect")


def test_the_stand_in_keeps_the_query_side_untouched(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(DEMO + "[[extract]]\nname = 'a'\nbackbone = 'resnet50'\nweights = 'hub'\nsize = 480\n"
                           "poolings = ['gem']\n" + CROP + SEARCH +
                    "[offline]\n'resnet50' = { backbone = 'tf_efficientnet_lite0', size = 224 }\n")
    config = load_config(path)
    offline, stand_in = apply_stand_in(path, config)
    validate_config(path, offline)
    (entry,) = offline["extract"]
    assert entry["backbone"] == "tf_efficientnet_lite0" and entry["size"] == 224 and "weights" not in entry
    assert entry["queries"] == {"crop": "salient"} and stand_in.replaced


# ---------------------------------------------------------------- end to end, on a tiny demo


def _meta(store) -> dict:
    return json.loads((store / "meta.json").read_text())


def _with_query_crop(text: str) -> str:
    poolings = 'poolings = ["mac"]\n'
    assert text.count(poolings) == 1
    return text.replace(poolings, poolings + 'queries = { crop = "salient" }\n')


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_demo_config):
    """The tiny demo run without a query side, then with ``queries = { crop = "salient" }`` added: the folder and
    the second run's result."""
    folder = tmp_path_factory.mktemp("pipeline-queries-only")
    config = folder / "tiny.toml"
    config.write_text(tiny_demo_config(6, one_worker=True))
    run_tiny(folder)
    database = folder / "work" / "features" / "lite0" / "database" / "mac"
    before = {p.name: p.read_bytes() for p in database.iterdir() if p.is_file()}
    config.write_text(_with_query_crop(config.read_text()))
    return folder, run_tiny(folder), before


@pytest.mark.slow
def test_only_the_query_side_is_cropped_and_the_database_extraction_is_reused(ran):
    folder, result, before = ran
    stores = folder / "work" / "features" / "lite0"
    # the database's extraction, stamp and index are those of the table without `queries`
    assert stages_run(result) == {"extract:lite0-queries", "search:mac"}
    assert {f"{t.stage}:{t.name}" for t in result.times if t.skipped} >= {"extract:lite0-database",
                                                                         "index:lite0-mac-cosine"}
    database, queries = stores / "database" / "mac", stores / "queries" / "mac"
    assert {p.name: p.read_bytes() for p in database.iterdir() if p.is_file()} == before
    assert _meta(database)["crop"] == "none" and not (database / CROPS_FILE).exists()
    q = _meta(queries)
    assert q["crop"] == "salient" and (queries / CROPS_FILE).is_file()
    assert sum(q["crop_counts"].values()) == q["count"] == 6
    assert len((queries / CROPS_FILE).read_text().splitlines()) == 1 + 6  # a header, one box per query
    # the search paired the cropped queries with the uncropped index, and was scored
    assert len((folder / "subs" / "mac.csv").read_text().splitlines()) == 6
    assert set(json.loads((folder / "work" / "scores.json").read_text())["runs"]) == {"mac"}


@pytest.mark.slow
def test_a_rerun_skips_and_removing_the_query_side_re_extracts_the_queries_alone(ran, tmp_path):
    folder, _, _ = ran
    copy, rerun = rerun_after_edit(folder, tmp_path, 'queries = { crop = "salient" }\n', "")
    assert rerun == {"extract:lite0-queries", "search:mac"}
    queries = copy / "work" / "features" / "lite0" / "queries" / "mac"
    assert _meta(queries)["crop"] == "none" and not (queries / CROPS_FILE).exists()


@pytest.mark.slow
def test_predict_crops_new_query_photos_as_the_config_says(ran, tmp_path, cli, monkeypatch):
    folder, _, _ = ran
    copy, photos = predicted_copy(folder, tmp_path, cli, monkeypatch)
    predicted = next((copy / "work" / "predict").iterdir()) / "features" / "lite0"
    assert sorted(p.name for p in predicted.iterdir()) == ["queries"]  # the database side only reused
    store = predicted / "queries" / "mac"
    meta = _meta(store)
    assert meta["crop"] == "salient" and meta["count"] == 2 and (store / CROPS_FILE).is_file()
    assert _meta(copy / "work" / "features" / "lite0" / "database" / "mac")["crop"] == "none"
