"""Property-based fuzz of every text reader: whatever bytes a file holds, a reader either
returns a valid object or raises BadInput, never another exception and never a hang.

Inputs are generated lines of cells drawn from what breaks parsers (commas, quotes, a BOM,
CR and CRLF, NUL, Unicode digits and spaces, path separators), raw bytes, truncations of
valid files, and JSON documents with values of every type. The budget is fixed and
derandomized, so CI runs the same examples every time.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpcr.evaluation.check import check_submission
from bpcr.dataset.descriptions import read_descriptions
from bpcr.errors import BadInput
from bpcr.dataset.gt import read_ground_truth
from bpcr.io.ids import is_valid_id
from bpcr.dataset.manifest import read_manifest
from bpcr.io.runs import read_provenance, read_submission, read_trec
from bpcr.io.store import open_store, write_store
from bpcr.io.textio import parse_float, parse_int, read_json

pytestmark = pytest.mark.slow  # hundreds of generated files per reader

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Pieces that break parsers, mixed with ordinary ID and number characters.
TRICKY = ["", ",", '"', '""', "\ufeff", "\r", "\r\n", "\n", "\x00", " ", "\t", "\u2003", "\u2028", "\x0c",
          "\u0661", "\uff11", "\u0663.\u0665", "_", ".", "-", "+", "/", "\\", "..", "Q0", "NaN", "Infinity", "1e999",
          "1_000", "0x10", "é", "\udcff" if False else "\u00ff", "#", "v1", "n1", "n2", "7", "0.5", "-1", "0"]
cell = st.one_of(st.sampled_from(TRICKY), st.text(alphabet="vnq0123456789abcxyz_.-", max_size=8),
                 st.text(max_size=6))
line = st.lists(cell, max_size=10).map(lambda cells: ",".join(cells))
trec_line = st.lists(cell, min_size=4, max_size=8).map(lambda cells: " ".join(cells))
ending = st.sampled_from(["\n", "\r\n", "\r", ""])


def _text_file(lines_strategy) -> st.SearchStrategy[bytes]:
    def join(parts):
        lines, end, bom = parts
        text = end.join(lines) + (end if lines and end else "")
        return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass")
    return st.tuples(st.lists(lines_strategy, max_size=12), ending, st.booleans()).map(join)


def _truncations(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(valid)), st.binary(max_size=8)).map(lambda t: valid[: t[0]] + t[1])


def _inputs(lines_strategy, valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(_text_file(lines_strategy), st.binary(max_size=200), _truncations(valid))


VALID_CSV = b"v1,n1,n2,n3,n4,n5,n6,n7\nv2,n3,n1,n2,n4,n5,n6,n7\n"
VALID_TREC = b"v1 Q0 n1 1 0.9 t\nv1 Q0 n2 2 0.8 t\nv2 Q0 n3 1 1e-3 t\n"
VALID_GT = b"\xef\xbb\xbfValidation Image ID,Training Image ID\r\nv1,n1,n2\r\nv2,n3\r\n"
VALID_MANIFEST = b'id,path,width,height,description\nn1,db/n1.jpg,640,480,"red, matte"\nn2,db/n2.jpg,4,4,\n'
VALID_DESCRIPTIONS = b'id,description\nn1,"red lipstick, matte"\nn2,blue shampoo\n'


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _valid_ids(ids) -> bool:
    return all(isinstance(i, str) and is_valid_id(i) for i in ids)


# ---------------------------------------------------------------- runs


@FUZZ
@given(data=_inputs(line, VALID_CSV), strict=st.booleans())
def test_submission_reader(scratch, data, strict):
    path = _write(scratch, "run.csv", data)
    try:
        sub = read_submission(path, strict=strict, exact_depth=strict)
    except BadInput as exc:
        assert exc.file == str(path) and "\n" not in str(exc)
        return
    assert sub and _valid_ids(sub) and all(1 <= len(ids) <= 7 and _valid_ids(ids) for ids in sub.values())
    if strict:
        assert all(len(ids) == 7 == len(set(ids)) for ids in sub.values())


@FUZZ
@given(data=_inputs(trec_line, VALID_TREC), strict=st.booleans())
def test_trec_reader(scratch, data, strict):
    path = _write(scratch, "run.trec", data)
    try:
        ranking, scores = read_trec(path, strict=strict)
    except BadInput as exc:
        assert exc.file == str(path) and "\n" not in str(exc)
        return
    assert ranking and _valid_ids(ranking)
    for query, ids in ranking.items():
        assert _valid_ids(ids) and len(set(ids)) == len(ids) == len(scores[query])
        assert all(math.isfinite(s) for s in scores[query]) and scores[query] == sorted(scores[query], reverse=True)


@FUZZ
@given(data=_inputs(line, VALID_CSV))
def test_check(scratch, data):
    path = _write(scratch, "sub.csv", data)
    manifest = _write(scratch, "database.csv", VALID_MANIFEST)
    try:
        report = check_submission(path, manifest)
    except BadInput as exc:
        assert exc.file == str(path)
        return
    assert all(isinstance(reason, str) and "\n" not in reason for _, reason in report.errors + report.warnings)


# ---------------------------------------------------------------- ground truth, manifests, descriptions


@FUZZ
@given(data=_inputs(line, VALID_GT))
def test_ground_truth_reader(scratch, data):
    path = _write(scratch, "gt.csv", data)
    try:
        gt = read_ground_truth(path)
    except BadInput as exc:
        assert exc.file == str(path) and "\n" not in str(exc)
        return
    assert gt and _valid_ids(gt)
    assert all(relevant and _valid_ids(relevant) and len(set(relevant)) == len(relevant) for relevant in gt.values())


@FUZZ
@given(data=_inputs(line, VALID_MANIFEST))
def test_manifest_reader(scratch, data):
    path = _write(scratch, "manifest.csv", data)
    try:
        manifest = read_manifest(path)
    except BadInput as exc:
        assert exc.file == str(path) and "\n" not in str(exc)
        return
    assert _valid_ids(manifest.ids) and len(set(manifest.ids)) == len(manifest.ids)
    assert all(w >= 1 and h >= 1 for w, h in zip(manifest.widths, manifest.heights))


@FUZZ
@given(data=_inputs(line, VALID_DESCRIPTIONS))
def test_descriptions_reader(scratch, data):
    path = _write(scratch, "descriptions.csv", data)
    try:
        descriptions, _ = read_descriptions(path, {"n1", "n2"})
    except BadInput as exc:
        assert exc.file == str(path) and "\n" not in str(exc)
        return
    assert _valid_ids(descriptions) and all(isinstance(text, str) for text in descriptions.values())


# ---------------------------------------------------------------- JSON: provenance, store meta

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
json_text = st.one_of(
    json_value.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"NaN", b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e999}', b"[" * 5000 + b"]" * 5000,
                     b'{"a": ' + b"9" * 5000 + b"}", b'{"a": "\\ud800"}', b'{"a": 1} {"b": 2}']),
    _truncations(b'{"method": "x", "seconds": {"search": 1.5}, "inputs": []}\n'),
    st.binary(max_size=100),
)


@FUZZ
@given(data=json_text)
def test_provenance_reader(scratch, data):
    path = _write(scratch, "run.json", data)
    try:
        provenance = read_provenance(path)
    except BadInput as exc:
        assert exc.file == str(path) and "\n" not in str(exc)
        return
    assert isinstance(provenance, dict)
    json.dumps(provenance, allow_nan=False)  # nothing that is not JSON got in


@pytest.fixture(scope="module")
def store(scratch):
    return write_store(scratch / "store", ["n1", "n2"], np.eye(2, 4, dtype=np.float16), {"pooling": "gem"}).path


meta_values = st.fixed_dictionaries({}, optional={
    "count": json_value | st.just(2), "dim": json_value | st.just(4),
    "dtype": json_value | st.sampled_from(["float16", "float32", "int8"]), "pooling": json_value,
})


@FUZZ
@given(meta=st.one_of(meta_values.map(lambda m: json.dumps(m).encode()), json_text),
       ids=st.one_of(st.just(b"n1\nn2\n"), _inputs(cell, b"n1\nn2\n")))
def test_store_meta_and_ids(store, meta, ids):
    (store / "meta.json").write_bytes(meta)
    (store / "ids.txt").write_bytes(ids)
    try:
        opened = open_store(store, role="query")
    except BadInput as exc:
        assert exc.file is not None and exc.file.startswith(str(store)) and "\n" not in str(exc)
        return
    assert opened.ids == ["n1", "n2"] and opened.features.shape == (2, 4)
    assert opened.meta.get("count", 2) == 2 and opened.meta.get("dtype", "float16") == "float16"


# ---------------------------------------------------------------- numbers


@FUZZ
@given(text=st.one_of(st.text(max_size=12), st.sampled_from(["1_000", "\u0661", "\uff11", " 1", "1 ", "+1", "-0",
                                                            "1e5", ".5", "5.", "inf", "nan", "1e999", "0x1"])))
def test_number_parsers_take_ascii_decimal_only(text):
    for parse in (parse_int, parse_float):
        try:
            value = parse(text, "value")
        except BadInput as exc:
            assert "value" in exc.reason
            continue
        assert text.isascii() and text.strip() == text and "_" not in text and math.isfinite(value)


@FUZZ
@given(data=st.binary(max_size=300))
def test_read_json_of_any_bytes(scratch, data):
    path = _write(scratch, "any.json", data)
    try:
        read_json(path)
    except BadInput as exc:
        assert exc.file == str(path)


# ---------------------------------------------------------------- index sidecar and text-index meta: fields of any type


@pytest.fixture(scope="module")
def index_folder(scratch):
    from bpcr.retrieval.index import build_index

    db = write_store(scratch / "db", ["n1", "n2"], np.eye(2, 4, dtype=np.float16), {"pooling": "gem"}).path
    build_index(db, scratch / "index", log=lambda _: None)
    return scratch / "index"


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(["store", "store_abs", "ids_sha256", "count", "dim", "distance", "kind",
                                                "params", "format", "index_bytes"]), json_value, max_size=3))
def test_index_sidecar_fields(index_folder, changes):
    from bpcr.retrieval.index import load_index

    side = index_folder / "index.json"
    original = side.read_text()
    sidecar = {**json.loads(original), **changes}
    side.write_text(json.dumps(sidecar))
    try:
        loaded = load_index(index_folder)
    except BadInput as exc:
        assert exc.file is not None and "\n" not in str(exc)
        return
    finally:
        side.write_text(original)
    assert loaded.store.features.shape == (sidecar["count"], sidecar["dim"])


@FUZZ
@given(tau=json_value, max_non_latin=json_value)
def test_text_index_meta_numbers(scratch, tau, max_non_latin):
    from bpcr.text.index import load_text_index

    folder = scratch / "ti"
    folder.mkdir(exist_ok=True)
    (folder / "ids.txt").write_text("n1\nn2\n")
    np.savez(folder / "neighbours.npz", indptr=np.array([0, 1, 2]), indices=np.array([1, 0]),
             sims=np.array([0.7, 0.7], np.float32))
    (folder / "meta.json").write_text(json.dumps({"format": "bpcr-text-index/1", "tau": tau,
                                                  "max_non_latin": max_non_latin}))
    try:
        index = load_text_index(folder)
    except BadInput as exc:
        assert exc.file == str(folder / "meta.json")
        return
    assert 0 <= index.meta["tau"] < 1 and 0 <= index.meta["max_non_latin"] <= 1
