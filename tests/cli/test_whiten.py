"""`bpcr whiten`: the store and its whitening.npz written as the library writes them, --from applies the
database's projection to the queries, and every bad input is one line and exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpcr.io.store import open_store
from bpcr.training.whiten import LW_FILE, apply_lw, learn_lw, npz_bytes, read_learned_whitening, whiten
from tests.helpers.whitening import make_world


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path, dtype="float16")


def _refused(result, *named: str) -> None:
    lines = result.err.strip().splitlines()
    assert result.code == 2, (result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(n in lines[0] for n in named), lines[0]
    assert "Traceback" not in result.err


def test_cli_learns_and_applies_as_the_library_does(cli, world, tmp_path):
    result = cli("whiten", world.db, "--manifest", world.manifest, "--out", tmp_path / "lw-db", "--dims", 8)
    assert result.code == 0, result.err
    assert "learned on 40 positive pairs" in result.out
    out = tmp_path / "lw-db"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "failed.csv", "features.npy", "ids.txt", "meta.json", LW_FILE]
    expected, _ = learn_lw(world.x, world.pairs, dims=8)
    assert read_learned_whitening(out).to_bytes() == expected.to_bytes()
    db = open_store(out)
    assert db.features.dtype == np.float16 and db.features.shape == (100, 8)
    assert np.array_equal(np.asarray(db.features), apply_lw(world.x, expected).astype(np.float16))

    # --from the database's store, to the queries: exactly the library's call, the same projection recorded
    result = cli("whiten", world.queries, "--from", out, "--out", tmp_path / "lw-q")
    assert result.code == 0, result.err
    whiten(world.queries, tmp_path / "lib-q", source=out / LW_FILE, log=lambda _: None)
    cli_q, lib_q = open_store(tmp_path / "lw-q"), open_store(tmp_path / "lib-q")
    assert np.array_equal(np.asarray(cli_q.features), np.asarray(lib_q.features))
    q = np.asarray(open_store(world.queries).features, dtype=np.float32)
    assert np.array_equal(np.asarray(cli_q.features), apply_lw(q, read_learned_whitening(out)).astype(np.float16))
    assert (tmp_path / "lw-q" / LW_FILE).read_bytes() == (out / LW_FILE).read_bytes()
    meta_db = json.loads((out / "meta.json").read_text())
    meta_q = json.loads((tmp_path / "lw-q" / "meta.json").read_text())
    assert meta_q["whitening"] == meta_db["whitening"] and meta_q["whitening"]["dims"] == 8
    assert meta_q["whitening_learned"] == meta_db["whitening_learned"]  # read from beside the file applied
    assert meta_q["whitened_from"]["store"] == str(world.queries)
    # DESIGN.md's spelling: --apply FILE
    result = cli("whiten", world.queries, "--apply", out / LW_FILE, "--out", tmp_path / "apply-q")
    assert result.code == 0, result.err
    assert np.array_equal(np.asarray(open_store(tmp_path / "apply-q").features), np.asarray(cli_q.features))


def test_whitened_stores_index_and_search(cli, world, tmp_path):
    assert cli("whiten", world.db, "--manifest", world.manifest, "--out", tmp_path / "lw-db").code == 0
    assert cli("whiten", world.queries, "--from", tmp_path / "lw-db", "--out", tmp_path / "lw-q").code == 0
    assert cli("index", tmp_path / "lw-db", "--out", tmp_path / "index").code == 0
    result = cli("search", "--index", tmp_path / "index", "--queries", tmp_path / "lw-q", "--name", "lw",
                 "--out", tmp_path / "subs")
    assert result.code == 0, result.err
    # the queries against another projection's database: refused as any other extraction mismatch
    assert cli("whiten", world.db, "--method", "pca", "--out", tmp_path / "pca-db").code == 0
    assert cli("index", tmp_path / "pca-db", "--out", tmp_path / "pca-index").code == 0
    _refused(cli("search", "--index", tmp_path / "pca-index", "--queries", tmp_path / "lw-q", "--name", "x",
                 "--out", tmp_path / "subs"), "normalisation is 'l2, lw-whiten, l2'", "'l2, pca-whiten, l2'")
    # learned on other pairs (one description changed): the same kind, another projection
    other = tmp_path / "other" / "database.csv"
    other.parent.mkdir()
    rows = world.manifest.read_text().splitlines()
    other.write_text("\n".join(rows[:-1] + [rows[-1].rsplit(",", 1)[0] + ",something else entirely"]) + "\n")
    assert cli("whiten", world.db, "--manifest", other, "--out", tmp_path / "lw-other").code == 0
    assert cli("index", tmp_path / "lw-other", "--out", tmp_path / "other-index").code == 0
    _refused(cli("search", "--index", tmp_path / "other-index", "--queries", tmp_path / "lw-q", "--name", "x",
                 "--out", tmp_path / "subs"), "whitening is")


MALFORMED = {
    "nan.npz": ({"m": np.full(12, np.nan), "P": np.eye(12), "dims": np.int64(12)}, "NaN or infinity"),
    "wrong_shapes.npz": ({"m": np.zeros(12), "P": np.eye(11), "dims": np.int64(11)}, "inconsistent shapes"),
    "dims_too_many.npz": ({"m": np.zeros(12), "P": np.eye(12), "dims": np.int64(13)}, "dims 13 is outside 1..12"),
    "dims_array.npz": ({"m": np.zeros(12), "P": np.eye(12), "dims": np.array([12])}, "dims must be one integer"),
    "text_values.npz": ({"m": np.array(["a"] * 12), "P": np.eye(12), "dims": np.int64(12)}, "m holds"),
    "missing_m.npz": ({"P": np.eye(12), "dims": np.int64(12)}, "no array 'm'"),
    "other_dim.npz": ({"m": np.zeros(8), "P": np.eye(8), "dims": np.int64(8)}, "for 8-d features"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_whitening_file_is_one_line(cli, world, tmp_path, name):
    arrays, reason = MALFORMED[name]
    path = tmp_path / name
    path.write_bytes(npz_bytes(arrays))
    _refused(cli("whiten", world.queries, "--from", path, "--out", tmp_path / "out"), str(path), reason)
    assert not (tmp_path / "out").exists()


def test_damaged_files_are_one_line(cli, world, tmp_path):
    good = tmp_path / "good.npz"
    good.write_bytes(npz_bytes({"m": np.zeros(12), "P": np.eye(12), "dims": np.int64(12)}))
    cases = {"truncated.npz": good.read_bytes()[:200], "not_a_zip.npz": b"m,P,dims\n1,2,3\n", "empty.npz": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        _refused(cli("whiten", world.queries, "--from", tmp_path / name, "--out", tmp_path / "out"),
                 str(tmp_path / name), "not a learned whitening file")
    # an object array is never unpickled
    np.savez(tmp_path / "objects.npz", m=np.array([{"x": 1}] * 12, dtype=object), P=np.eye(12), dims=12)
    _refused(cli("whiten", world.queries, "--from", tmp_path / "objects.npz", "--out", tmp_path / "out"),
             "never unpickled")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,named", [
    (["--out", "OUT"], "--manifest"),  # learned needs the database manifest
    (["--method", "pca", "--manifest", "MANIFEST", "--out", "OUT"], "drop --manifest"),
    (["--manifest", "MANIFEST", "--dims", "13", "--out", "OUT"], "--dims 13"),
    (["--manifest", "MANIFEST", "--dims", "0", "--out", "OUT"], "--dims"),
    (["--manifest", "MANIFEST", "--pair-tau", "1", "--out", "OUT"], "--pair-tau"),
    (["--manifest", "MANIFEST", "--method", "zca", "--out", "OUT"], "zca"),
    (["--from", "DB", "--manifest", "MANIFEST", "--out", "OUT"], "drop --manifest"),
    (["--from", "DB", "--dims", "4", "--out", "OUT"], "drop --dims"),
    (["--from", "NOWHERE", "--out", "OUT"], "no whitening.npz or pca.npz here"),
    (["--manifest", "MANIFEST", "--out", "DB"], "is the store being whitened"),
])
def test_bad_usage_is_one_line(cli, world, tmp_path, args, named):
    names = {"OUT": tmp_path / "out", "MANIFEST": world.manifest, "DB": world.db, "NOWHERE": tmp_path}
    result = cli("whiten", world.db, *[str(names.get(a, a)) for a in args])
    _refused(result, named)
    assert not (tmp_path / "out").exists()


def test_bad_data_is_one_line(cli, world, tmp_path):
    # the query store learned on: its IDs are not the database manifest's
    _refused(cli("whiten", world.queries, "--manifest", world.manifest, "--out", tmp_path / "out"),
             "ids.txt", "'v0000' is not in the manifest")
    # too few pairs
    few = tmp_path / "few.csv"
    rows = world.manifest.read_text().splitlines()
    few.write_text("\n".join(rows[:1] + [f"{r.rsplit(',', 1)[0]},only{i}" for i, r in enumerate(rows[1:])]) + "\n")
    _refused(cli("whiten", world.db, "--manifest", few, "--out", tmp_path / "out"), str(few),
             "only 0 positive pair(s)", "at least 2")
    # a whitening learned on other features
    other = make_world(tmp_path / "other", dim=8)
    assert cli("whiten", other.db, "--manifest", other.manifest, "--out", tmp_path / "lw8").code == 0
    _refused(cli("whiten", world.queries, "--from", tmp_path / "lw8", "--out", tmp_path / "out"),
             "for 8-d features", "12-d")
    assert not (tmp_path / "out").exists()
