"""The malformed-file corpus (DESIGN.md "Tests"): every reader has a folder under
tests/data/malformed/, and each file in it makes the CLI exit 2 with one line on
stderr that names the file, and no traceback.

A case marked xfail is a reader that accepts its malformed file or crashes on it
today; its reason says how.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from bpcr.errors import BadInput
from tests.helpers import DATA

from bpcr.features.whitening import read_whitening


MALFORMED = DATA / "malformed"

# Pickled files in the corpus reference a class of this module, which never exists:
# unpickling one would fail with ModuleNotFoundError instead of a clean refusal.
NEVER_IMPORTED = "bpcr_never_imported"


def _one_line_error(result, path: Path, line, reason):
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, lines
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert where in lines[0] and reason in lines[0]
    assert "Traceback" not in result.err


def _bug(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


# ---------------------------------------------------------------- submissions, TREC runs, ground truth


SUBMISSION_CASES = [
    ("empty.csv", None, "empty submission"),
    ("only_blank_lines.csv", None, "empty submission"),
    ("binary_junk.csv", 1, "binary data"),
    ("non_utf8.csv", 2, "not valid UTF-8"),
    ("duplicate_query.csv", 3, "listed twice"),
    ("path_like_id.csv", 1, "looks like a path"),
    ("path_like_query.csv", 1, "looks like a path"),
    ("bad_id_chars.csv", 1, "invalid ID"),
    ("header_row.csv", 1, "invalid ID"),
    ("no_predictions.csv", 2, "no predictions"),
    ("empty_cell.csv", 1, "empty cell"),
    ("semicolons.csv", 1, "invalid ID"),
]
TREC_CASES = [
    ("empty.trec", None, "empty TREC run"),
    ("five_columns.trec", 1, "expected 6 columns"),
    ("bad_rank.trec", 2, "not an integer"),
    ("bad_score.trec", 1, "not a number"),
    ("nan_score.trec", 1, "not finite"),
    ("duplicate_doc.trec", 2, "listed twice"),
    ("path_like_doc.trec", 1, "looks like a path"),
    ("binary_junk.trec", 1, "binary data"),
    ("non_utf8.trec", 1, "not valid UTF-8"),
]
GT_CASES = [
    ("duplicate_query.csv", 3, "listed twice"), ("no_relevant.csv", 3, "no relevant ID"),
    ("path_like_id.csv", 2, "looks like a path"), ("non_utf8.csv", 2, "not valid UTF-8"),
    ("binary_junk.csv", 3, "binary data"), ("empty.csv", None, "no ground-truth rows"),
    ("no_relevant_trailing_comma.csv", 3, "no relevant ID"), ("repeated_relevant.csv", 2, "listed twice"),
    ("header_only.csv", None, "no ground-truth rows"),
]


@pytest.mark.parametrize("name,line,reason", SUBMISSION_CASES)
def test_malformed_submission_cli(cli, good_gt, tmp_path, name, line, reason):
    path = MALFORMED / "submission" / name
    _one_line_error(cli("score", path, "--gt", good_gt, "--no-leaderboard"), path, line, reason)


@pytest.mark.parametrize("name,line,reason", TREC_CASES)
def test_malformed_trec_cli(cli, good_gt, name, line, reason):
    path = MALFORMED / "trec" / name
    _one_line_error(cli("score", path, "--gt", good_gt, "--no-leaderboard"), path, line, reason)


@pytest.mark.parametrize("name,line,reason", GT_CASES)
def test_malformed_gt_cli(cli, good_run, name, line, reason):
    path = MALFORMED / "gt" / name
    _one_line_error(cli("score", good_run, "--gt", path, "--no-leaderboard"), path, line, reason)


# ---------------------------------------------------------------- run provenance: NAME.json beside a valid NAME.csv


PROVENANCE_CASES = [
    ("invalid_json.json", 2, "invalid JSON"),
    ("not_an_object.json", 1, "run provenance must be a JSON object"),
    ("string.json", 1, "run provenance must be a JSON object"),
    ("trailing_data.json", 2, "invalid JSON: Extra data"),
    ("empty.json", 1, "invalid JSON"),
    ("bom_only.json", 1, "invalid JSON"),
    ("nul_byte.json", 2, "binary data"),
    ("non_utf8.json", 2, "not valid UTF-8"),
    ("nan_literal.json", 2, "invalid JSON"),
]


@pytest.mark.parametrize("name,line,reason", PROVENANCE_CASES)
def test_malformed_provenance_cli(cli, good_gt, good_run, name, line, reason):
    path = good_run.with_suffix(".json")
    shutil.copyfile(MALFORMED / "provenance" / name, path)
    _one_line_error(cli("score", good_run, "--gt", good_gt, "--no-leaderboard"), path, line, reason)


def test_provenance_harness_accepts_valid_json(cli, good_gt, good_run):
    good_run.with_suffix(".json").write_text('{"method": "x"}\n')
    result = cli("score", good_run, "--gt", good_gt, "--no-leaderboard", "--resamples", "10")
    assert result.code == 0, result.err


# ---------------------------------------------------------------- manifests: `bpcr check SUBMISSION --manifest FILE`


MANIFEST_CASES = [
    ("missing_header.csv", 1, "manifest header must be id,path,width,height,description"),
    ("wrong_header.csv", 1, "manifest header must be"),
    ("wrong_column_count.csv", 3, "expected 5 columns, found 4"),
    ("path_like_id.csv", 3, "looks like a path"),
    ("invalid_id.csv", 2, "invalid ID"),
    ("duplicate_id.csv", 4, "listed twice"),
    ("empty_path.csv", 2, "empty image path"),
    ("non_integer_size.csv", 2, "width and height must be integers"),
    ("nul_byte.csv", 2, "binary data"),
    ("non_utf8.csv", 2, "not valid UTF-8"),
    ("empty.csv", None, "empty manifest"),
    ("bom_only.csv", None, "empty manifest"),
    ("unclosed_quote.csv", 2, "never closed"),
    ("negative_size.csv", 2, "width and height"),
]


def _submission(tmp_path: Path) -> Path:
    sub = tmp_path / "sub.csv"
    sub.write_text("v1,n1,n2,n3,n4,n5,n6,n7\n")
    return sub


@pytest.mark.parametrize("name,line,reason", MANIFEST_CASES)
def test_malformed_manifest_cli(cli, tmp_path, name, line, reason):
    path = MALFORMED / "manifest" / name
    _one_line_error(cli("check", _submission(tmp_path), "--manifest", path), path, line, reason)


def test_manifest_harness_accepts_valid_manifest(cli, tmp_path):
    manifest = tmp_path / "database.csv"
    manifest.write_text("id,path,width,height,description\n"
                        + "".join(f"n{i},db/n{i}.jpg,640,480,red lipstick\n" for i in range(1, 8)))
    result = cli("check", _submission(tmp_path), "--manifest", manifest)
    assert result.code == 0, result.err


# ---------------------------------------------------------------- descriptions: `bpcr prepare --descriptions FILE`


DESCRIPTION_CASES = [
    ("missing_header.csv", 1, "missing header row"),
    ("one_column_header.csv", 1, "header has 1 column"),
    ("garbled_header.csv", 1, "garbled header"),
    ("unclosed_quote.csv", 2, "never closed"),
    ("invalid_ids.csv", 2, "not an ID,description CSV"),
    ("path_like_ids.csv", 2, "not an ID,description CSV"),
    ("wrong_column_count.csv", 2, "2 of 2 rows are malformed"),
    ("nul_byte.csv", 2, "binary data"),
    ("non_utf8.csv", 2, "not valid UTF-8"),
    ("empty.csv", None, "empty file"),
    ("bom_only.csv", None, "empty file"),
    ("blank_lines_only.csv", None, "empty file"),
]


@pytest.fixture
def image_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Database images n1, n2 and query image v1: tiny valid PNGs."""
    from PIL import Image

    db, queries = tmp_path / "db", tmp_path / "queries"
    db.mkdir()
    queries.mkdir()
    for folder, image_id, colour in ((db, "n1", (200, 0, 0)), (db, "n2", (0, 0, 200)), (queries, "v1", (190, 10, 0))):
        Image.new("RGB", (16, 12), colour).save(folder / f"{image_id}.png")
    return db, queries


def _prepare(cli, image_folders, descriptions: Path, out: Path):
    db, queries = image_folders
    return cli("prepare", "--db", db, "--descriptions", descriptions, "--queries", queries, "--out", out,
               "--workers", "1")


@pytest.mark.parametrize("name,line,reason", DESCRIPTION_CASES)
def test_malformed_descriptions_cli(cli, image_folders, tmp_path, name, line, reason):
    path = MALFORMED / "descriptions" / name
    _one_line_error(_prepare(cli, image_folders, path, tmp_path / "prepared"), path, line, reason)


def test_descriptions_harness_accepts_valid_csv(cli, image_folders, tmp_path):
    path = tmp_path / "descriptions.csv"
    path.write_text("id,description\nn1,red lipstick\nn2,blue shampoo\n")
    result = _prepare(cli, image_folders, path, tmp_path / "prepared")
    assert result.code == 0, result.err


# ---------------------------------------------------------------- feature stores: `bpcr index STORE --out DIR`

# Each file replaces one file of a valid 2-row store; its name's first word says which.
STORE_FILES = {"features": "features.npy", "ids": "ids.txt", "meta": "meta.json"}

STORE_CASES = [
    ("features_pickled_objects.npy", None, "not a plain .npy array"),
    ("features_wrong_rows.npy", None, "shape (3, 4) does not match 2 IDs"),
    ("features_one_dimensional.npy", None, "shape (8,) does not match 2 IDs"),
    ("features_csv_text.npy", None, "not a plain .npy array"),
    ("features_truncated.npy", None, "not a plain .npy array"),
    ("ids_path_like.txt", 2, "looks like a path"),
    ("ids_duplicate.txt", None, "an ID appears twice"),
    ("ids_blank_line.txt", 2, "empty ID"),
    ("ids_nul_byte.txt", 2, "binary data"),
    ("ids_non_utf8.txt", 2, "not valid UTF-8"),
    ("meta_invalid_json.json", 1, "invalid JSON"),
    ("meta_not_an_object.json", 1, "feature store meta must be a JSON object"),
    ("meta_empty.json", 1, "invalid JSON"),
    ("meta_non_utf8.json", 1, "not valid UTF-8"),
    ("meta_dim_mismatch.json", None, "dim 8 but features have 4 columns"),
    ("features_empty.npy", None, "not a plain .npy array"),
    ("features_strings.npy", None, "features.npy"),
    ("meta_count_mismatch.json", None, "count"),
    ("meta_dtype_mismatch.json", None, "dtype"),
]


def _valid_store(folder: Path) -> Path:
    folder.mkdir()
    (folder / "ids.txt").write_text("n1\nn2\n")
    np.save(folder / "features.npy", np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float16))
    (folder / "meta.json").write_text('{"count": 2, "dim": 4, "dtype": "float16"}\n')
    return folder


@pytest.mark.parametrize("name,line,reason", STORE_CASES)
def test_malformed_store_cli(cli, tmp_path, name, line, reason):
    store = _valid_store(tmp_path / "store")
    path = store / STORE_FILES[name.split("_")[0]]
    shutil.copyfile(MALFORMED / "store_meta" / name, path)
    _one_line_error(cli("index", store, "--out", tmp_path / "index"), path, line, reason)
    assert NEVER_IMPORTED not in sys.modules


def test_store_harness_accepts_valid_store(cli, tmp_path):
    result = cli("index", _valid_store(tmp_path / "store"), "--out", tmp_path / "index")
    assert result.code == 0, result.err


# ---------------------------------------------------------------- search index sidecar: `bpcr search --index DIR`

# The sidecars name the store "../db": the test lays out DIR/db (IDs n1, n2, n3) beside DIR/index.
SIDECAR_CASES = [
    ("invalid_json.json", "index/index.json", 3, "invalid JSON"),
    ("not_an_object.json", "index/index.json", None, "not a bpcr-index/1 index file"),
    ("empty.json", "index/index.json", 1, "invalid JSON"),
    ("nul_byte.json", "index/index.json", 1, "binary data"),
    ("non_utf8.json", "index/index.json", 3, "not valid UTF-8"),
    ("wrong_format.json", "index/index.json", None, "not a bpcr-index/1 index file"),
    ("missing_kind.json", "index/index.json", None, "missing field 'kind'"),
    ("store_gone.json", "index/index.json", None, "the indexed feature store is gone"),
    ("stale_ids_sha256.json", "db", None, "the feature store changed"),
    ("unknown_distance.json", "index/index.json", None, "unknown distance"),
    ("store_not_a_string.json", "index/index.json", None, "store"),
]


def _search_inputs(folder: Path) -> tuple[Path, Path]:
    """A 3-row database store at folder/db and a 2-row query store; returns (db, queries)."""
    from bpcr.io.store import write_store

    eye = np.eye(4, dtype=np.float16)
    db = write_store(folder / "db", ["n1", "n2", "n3"], eye[:3], {"pooling": "gem"}).path
    queries = write_store(folder / "q", ["v1", "v2"], eye[:2], {"pooling": "gem"}).path
    return db, queries


def _search(cli, index: Path, queries: Path, out: Path):
    return cli("search", "--index", index, "--queries", queries, "--name", "s", "--out", out)


@pytest.mark.parametrize("name,where,line,reason", SIDECAR_CASES)
def test_malformed_index_sidecar_cli(cli, tmp_path, name, where, line, reason):
    _, queries = _search_inputs(tmp_path)
    (tmp_path / "index").mkdir()
    shutil.copyfile(MALFORMED / "index_sidecar" / name, tmp_path / "index" / "index.json")
    _one_line_error(_search(cli, tmp_path / "index", queries, tmp_path / "out"), tmp_path / where, line, reason)


def test_index_sidecar_harness_accepts_valid_index(cli, tmp_path):
    from bpcr.retrieval.index import build_index

    db, queries = _search_inputs(tmp_path)
    build_index(db, tmp_path / "index", log=lambda _: None)
    result = _search(cli, tmp_path / "index", queries, tmp_path / "out")
    assert result.code == 0, result.err


# ---------------------------------------------------------------- text index meta: `bpcr refine RUN --text-index DIR`


TEXT_INDEX_CASES = [
    ("invalid_json.json", 3, "invalid JSON"),
    ("not_an_object.json", 1, "text index meta must be a JSON object"),
    ("empty.json", 1, "invalid JSON"),
    ("bom_only.json", 1, "invalid JSON"),
    ("nul_byte.json", 2, "binary data"),
    ("non_utf8.json", 3, "not valid UTF-8"),
    ("wrong_format.json", None, "not a text index of format bpcr-text-index/1"),
    ("missing_format.json", None, "not a text index of format bpcr-text-index/1"),
    ("tau_not_a_number.json", None, "tau"),
]


@pytest.fixture(scope="module")
def refine_inputs(tmp_path_factory) -> dict[str, Path]:
    """A valid run, database and query stores and a text index, built once and only read by the cases."""
    from bpcr.dataset.manifest import write_manifest
    from bpcr.text.index import build_text_index

    folder = tmp_path_factory.mktemp("refine")
    db, queries = _search_inputs(folder)
    ids = ["n1", "n2", "n3"]
    write_manifest(folder / "database.csv", ids, [folder / f"{i}.jpg" for i in ids], [1] * 3, [1] * 3,
                   ["red lipstick", "red lipstick matte", "blue shampoo"])
    build_text_index(folder / "database.csv", folder / "text-index")
    (folder / "run.csv").write_text("v1,n1,n2,n3\nv2,n2,n1,n3\n")
    return {"run": folder / "run.csv", "db": db, "queries": queries, "text_index": folder / "text-index"}


def _refine(cli, inputs: dict[str, Path], text_index: Path, out: Path):
    return cli("refine", inputs["run"], "--text-index", text_index, "--db-features", inputs["db"],
               "--query-features", inputs["queries"], "--name", "refined", "--out", out)


@pytest.mark.parametrize("name,line,reason", TEXT_INDEX_CASES)
def test_malformed_text_index_meta_cli(cli, refine_inputs, tmp_path, name, line, reason):
    text_index = shutil.copytree(refine_inputs["text_index"], tmp_path / "text-index")
    path = text_index / "meta.json"
    shutil.copyfile(MALFORMED / "text_index_meta" / name, path)
    _one_line_error(_refine(cli, refine_inputs, text_index, tmp_path / "out"), path, line, reason)


def test_text_index_harness_accepts_valid_index(cli, refine_inputs, tmp_path):
    text_index = shutil.copytree(refine_inputs["text_index"], tmp_path / "text-index")
    result = _refine(cli, refine_inputs, text_index, tmp_path / "out")
    assert result.code == 0, result.err


# ---------------------------------------------------------------- pipeline config: `bpcr run CONFIG`

# Each config points [prepare] at folders that do not exist: should validation let one
# through, the run stops at once in prepare, with a message that does not name the config
# (or, for a [prepare] that is itself wrong, writes into the empty folder the test runs in).
CONFIG_CASES = [
    ("invalid_toml.toml", 1, "invalid TOML: Expected ']' at the end of a table declaration (column 9)"),
    ("non_utf8.toml", None, "config is not valid UTF-8"),
    ("is_a_folder.toml", None, "is a folder, not a TOML config file"),
    ("empty.toml", None, "[prepare] needs 'db'"),
    ("unknown_top_level_key.toml", None, "unknown top-level key 'serach'"),
    ("unknown_stage_option.toml", None, "[search gem] unknown option 'depht'"),
    ("unknown_extract_name.toml", None, "features 'r101/gem' must be '<extract name>/<pooling>'"),
    ("features_pooling_not_extracted.toml", None, "[extract r50] has no pooling '../../escape'"),
    ("refine_input_not_a_run.toml", None, "input 'gem-search' is not a run made earlier in this config"),
    ("duplicate_run_name.toml", None, "two runs are named 'gem'"),
    ("duplicate_extract_name.toml", None, "two [[extract]] are named 'r50'"),
    ("run_without_name.toml", None, "every [[search]] needs a name"),
    ("extract_without_poolings.toml", None, "[extract r50] needs backbone and poolings"),
    ("ensemble_without_method.toml", None, "[ensemble fused] needs 'method'"),
    ("prepare_without_db.toml", None, "[prepare] needs 'db'"),
    ("stage_table_not_array.toml", None, "search must be an array of tables, one [[search]] per entry"),
    ("prepare_array_of_tables.toml", None, "prepare must be one table, written [prepare]; got [[prepare]]"),
    ("work_not_a_string.toml", None, "work must be a string (a path), got 5 (an integer)"),
    ("leaderboard_not_a_string.toml", None, "leaderboard must be a string (a path)"),
    ("demo_not_a_boolean.toml", None, "[prepare] demo must be true or false, got 'yes' (a string)"),
    ("size_not_an_integer.toml", None, "[extract r50] size must be an integer, got '224' (a string)"),
    ("poolings_not_an_array.toml", None, "[extract r50] poolings must be an array of strings, got 'gem'"),
    ("features_not_a_string.toml", None, "[search gem] features must be a string or an array of strings, got 5"),
    ("weights_not_numbers.toml", None, "[search gem] weights must be an array of numbers"),
    ("input_not_a_string.toml", None, "[rerank sift] input must be a string, got ['gem'] (an array)"),
    ("name_escapes_work_folder.toml", None, "[[extract]] name: ID '../../escape' looks like a path"),
    ("name_absolute_path.toml", None, "[[search]] name: ID '/tmp/bpcr-escape' looks like a path"),
    ("index_metric_unknown.toml", None, "[index] metric '../../escape' is not one of cosine, l2, l1"),
    ("score_unknown_option.toml", None, "[score] unknown option 'bogus'"),
    ("score_option_without_gt.toml", None, "[score] n_resamples is set, but nothing is scored without ground truth"),
    ("score_resamples_zero.toml", None, "[score] n_resamples: --resamples must be an integer in [1, 1000000], got 0"),
    ("ensemble_tune_without_gt.toml", None, "[ensemble fused] tune = true needs ground truth"),
]


@pytest.mark.parametrize("name,line,reason", CONFIG_CASES)
def test_malformed_config_cli(cli, tmp_path, monkeypatch, name, line, reason):
    path = MALFORMED / "config" / name
    monkeypatch.chdir(tmp_path)
    _one_line_error(cli("run", path), path, line, reason)
    assert list(tmp_path.iterdir()) == []  # refused before any stage wrote anything


# ---------------------------------------------------------------- PCA-whitening (pca.npz)

# Through the library: the CLI reaches read_whitening only by `bpcr extract --merge SHARDS --pca-from FILE`,
# which needs shard stores made by extraction. BadInput naming the file is what the CLI prints as one line.
WHITENING_CASES = [
    ("not_an_npz.npz", "not a PCA-whitening file"),
    ("missing_components.npz", "not a PCA-whitening file"),
    ("mean_length_mismatch.npz", "inconsistent shapes"),
    ("variance_length_mismatch.npz", "inconsistent shapes"),
    ("nan_components.npz", "non-finite values"),
    ("zero_variance.npz", "non-positive variance"),
    ("object_array.npz", "not a PCA-whitening file"),
    ("empty.npz", "not a PCA-whitening file"),
    ("truncated.npz", "not a PCA-whitening file"),
    ("npy_not_npz.npz", "not a PCA-whitening file"),
    ("complex_values.npz", "components"),
    ("no_components.npz", "components"),
]


@pytest.mark.parametrize("name,reason", WHITENING_CASES)
def test_malformed_whitening(name, reason):
    path = MALFORMED / "whitening" / name
    with pytest.raises(BadInput) as info:
        read_whitening(path)
    assert info.value.file == str(path)
    assert reason in info.value.reason
    assert len(str(info.value).splitlines()) == 1
    assert NEVER_IMPORTED not in sys.modules


# ---------------------------------------------------------------- the corpus itself


def _names(cases) -> set[str]:
    return {case.values[0] if hasattr(case, "values") else case[0] for case in cases}


@pytest.mark.parametrize("folder,cases", [
    ("submission", SUBMISSION_CASES), ("trec", TREC_CASES), ("gt", GT_CASES), ("provenance", PROVENANCE_CASES),
    ("manifest", MANIFEST_CASES), ("descriptions", DESCRIPTION_CASES), ("store_meta", STORE_CASES),
    ("index_sidecar", SIDECAR_CASES), ("text_index_meta", TEXT_INDEX_CASES), ("config", CONFIG_CASES),
    ("whitening", WHITENING_CASES),
])
def test_every_malformed_file_has_a_case(folder, cases):
    assert {p.name for p in (MALFORMED / folder).iterdir()} == _names(cases)


def test_every_folder_is_tested():
    tested = {"submission", "trec", "gt", "provenance", "manifest", "descriptions", "store_meta", "index_sidecar",
              "text_index_meta", "config", "whitening"}
    assert {p.name for p in MALFORMED.iterdir() if p.is_dir()} == tested
