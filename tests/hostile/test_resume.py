"""Resumable extraction state that a kill, a full disk or a stray hand damaged never poisons a re-run.

One real SIGKILL leaves ``.OUT.partial`` with ``plan.json`` and two finished
chunks; each case copies that folder, damages it one way, and resumes: the run
completes with the bytes of an uninterrupted run, re-doing only what was
damaged, with one warning per damaged file. A readable plan made with other
settings is still refused.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bpcr.errors import BadInput
from bpcr.features.extract import extract
from bpcr.dataset.manifest import write_manifest
from bpcr.io.partial_store import Chunk, PartialStore
from tests.helpers.extraction import FAST, N_IMAGES, kill_extraction, lite0, store_bytes, write_images

pytestmark = pytest.mark.slow  # module fixtures build a dataset, a network or a pipeline run

POOLINGS = ["gem", "srmac"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("resume")
    (root / "images").mkdir()
    ids, paths, widths, heights = write_images(root / "images", N_IMAGES)
    paths[3].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # a failed row inside chunk 0
    write_manifest(root / "db.csv", ids, paths, widths, heights, [""] * len(ids))
    return root


@pytest.fixture(scope="module")
def reference(data):
    return extract(data / "db.csv", data / "ref", lite0(POOLINGS, **FAST))


@pytest.fixture(scope="module")
def killed(data):
    """The partial folder a real SIGKILL left after chunks 0 and 1 (of 0..3) were written."""
    kill_extraction(data / "db.csv", data / "killed", POOLINGS, after_chunks=2)
    partial = data / ".killed.partial"
    assert sorted(p.name for p in partial.iterdir() if not p.name.startswith(".")) == [
        "chunk-000000.npz", "chunk-000001.npz", "plan.json"]
    return partial


def _resume(data, killed, case, damage):
    """Copy the killed run's partial folder, ``damage(folder)`` it, resume; (chunks run, warnings, stores)."""
    folder = data / f".{case}.partial"
    shutil.copytree(killed, folder)
    damage(folder)
    ran, warned = [], []
    stores = extract(data / "db.csv", data / case, lite0(POOLINGS, **FAST), on_chunk=ran.append,
                     on_warning=warned.append)
    assert not folder.exists()  # finished: the partial folder is gone
    return ran, warned, stores


def _same_as_reference(stores, reference):
    for name in POOLINGS:
        assert store_bytes(stores[name]) == store_bytes(reference[name])
        assert (stores[name] / "failed.csv").read_bytes() == (reference[name] / "failed.csv").read_bytes()


def _truncate(fraction):
    def damage(folder):
        chunk = folder / "chunk-000001.npz"
        chunk.write_bytes(chunk.read_bytes()[:int(chunk.stat().st_size * fraction)])
    return damage


def _flip_middle(folder):
    chunk = folder / "chunk-000000.npz"
    raw = bytearray(chunk.read_bytes())
    for k in range(len(raw) // 2, len(raw) // 2 + 64):  # inside the feature arrays: the zip CRC catches it
        raw[k] ^= 0xFF
    chunk.write_bytes(bytes(raw))


def _rewrite(change):
    """Rewrite chunk 1 as a well-formed .npz whose arrays ``change`` altered."""
    def damage(folder):
        chunk = folder / "chunk-000001.npz"
        with np.load(chunk, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
        change(arrays)
        with open(chunk, "wb") as handle:
            np.savez(handle, **arrays)
    return damage


def _copy_chunk_0_over_1(folder):
    shutil.copyfile(folder / "chunk-000000.npz", folder / "chunk-000001.npz")


def _chunk_is_a_folder(folder):
    (folder / "chunk-000001.npz").unlink()
    (folder / "chunk-000001.npz").mkdir()
    (folder / "chunk-000001.npz" / "x").write_text("x")


CHUNK_DAMAGE = {
    "truncated-half": (_truncate(0.5), "unreadable"),
    "truncated-to-zero": (_truncate(0.0), "unreadable"),
    "truncated-last-byte": (_truncate(0.999), "unreadable"),
    "bytes-flipped": (_flip_middle, "unreadable"),
    "other-rows": (_copy_chunk_0_over_1, "other rows"),
    "pooling-missing": (_rewrite(lambda a: a.pop("f_srmac")), "arrays missing: f_srmac"),
    "float16-features": (_rewrite(lambda a: a.update(f_gem=a["f_gem"].astype(np.float16))), "f_gem is float16"),
    "row-missing": (_rewrite(lambda a: a.update(ids=a["ids"][:-1], f_gem=a["f_gem"][:-1],
                                                f_srmac=a["f_srmac"][:-1])), "other rows"),
    "wrong-dim": (_rewrite(lambda a: a.update(f_gem=a["f_gem"][:, :7])), "expected float32 (4, 1280)"),
    "pickled-ids": (_rewrite(lambda a: a.update(ids=a["ids"].astype(object))), "unreadable"),
    "a-folder": (_chunk_is_a_folder, "unreadable"),
}


@pytest.mark.parametrize("case", sorted(CHUNK_DAMAGE))
def test_damaged_chunk_is_redone_to_identical_bytes(data, killed, reference, case):
    damage, reason = CHUNK_DAMAGE[case]
    ran, warned, stores = _resume(data, killed, case, damage)
    damaged = 0 if case == "bytes-flipped" else 1
    assert sorted(ran) == sorted({damaged, 2, 3})  # the damaged chunk and the two never written, nothing else
    assert len(warned) == 1 and f"chunk-00000{damaged}.npz" in warned[0] and reason in warned[0], warned
    assert "computed again" in warned[0] and "\n" not in warned[0]
    _same_as_reference(stores, reference)


def _write_plan(text):
    def damage(folder):
        (folder / "plan.json").write_text(text)
    return damage


PLAN_DAMAGE = {
    "torn": (_write_plan('{"chunks": [0, 4], "config": {"backb'), "unreadable"),
    "empty": (_write_plan(""), "unreadable"),
    "not-utf8": (lambda f: (f / "plan.json").write_bytes(b"\xff\xfe{\x00}"), "unreadable"),
    "a-list": (_write_plan("[1, 2, 3]"), "holds a JSON list, not an object"),
}


@pytest.mark.parametrize("case", sorted(PLAN_DAMAGE))
def test_unreadable_plan_starts_afresh_to_identical_bytes(data, killed, reference, case):
    damage, reason = PLAN_DAMAGE[case]
    ran, warned, stores = _resume(data, killed, f"plan-{case}", damage)
    assert ran == [0, 1, 2, 3]  # chunks of an unknown plan are never trusted
    assert len(warned) == 1 and "plan.json" in warned[0] and reason in warned[0] and "afresh" in warned[0], warned
    _same_as_reference(stores, reference)


def test_undamaged_leftovers_resume_without_a_warning(data, killed, reference):
    ran, warned, stores = _resume(data, killed, "intact", lambda folder: None)
    assert ran == [2, 3] and warned == []
    _same_as_reference(stores, reference)


def test_valid_plan_with_other_settings_is_still_refused(data, killed):
    shutil.copytree(killed, data / ".other.partial")
    with pytest.raises(BadInput, match=r"other settings \(config\).*--restart"):
        extract(data / "db.csv", data / "other", lite0(POOLINGS, **{**FAST, "size": 96}))
    assert (data / ".other.partial" / "chunk-000000.npz").is_file()  # nothing was deleted


def test_cli_warns_in_one_line_and_finishes(data, reference, cli, monkeypatch):
    """The CLI's plan (16 batches a chunk) with its only chunk torn: one warning line, exit 0, a whole store."""
    options = dict(size=64, batch_size=1, workers=0, device="cpu", threads=1)

    def stop(chunk):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(data / "db.csv", data / "viacli", lite0(["gem"], **options), on_chunk=stop)
    chunk = data / ".viacli.partial" / "chunk-000000.npz"
    chunk.write_bytes(chunk.read_bytes()[:100])
    monkeypatch.setenv("COLUMNS", "40")
    result = cli("extract", data / "db.csv", "--pooling", "gem", "--size", "64", "--batch-size", "1", "--workers", "0",
                 "--threads", "1", "--device", "cpu", "--out", data / "viacli")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.err
    assert "chunk-000000.npz: unreadable" in warnings[0] and warnings[0].endswith("computed again"), result.err
    assert "12 x 1280 float16 (gem), 1 failed" in result.out


# ---------------------------------------------------------------- the partial folder alone

def test_partial_store_checks_a_chunk_against_its_rows(tmp_path):
    warned: list[str] = []
    partial = PartialStore(tmp_path / ".o.partial", on_warning=warned.append)
    partial.start({"size": 224})
    rows = {0: ["a", "b", "c"], 1: ["d"]}
    partial.write_chunk(Chunk(0, ["a", "c"], {"gem": np.ones((2, 3), np.float32)}, {"b": "zero-byte file"}))
    partial.write_chunk(Chunk(1, ["d"], {"gem": np.ones((1, 3), np.float32)}, {}))
    (partial.path / "chunk-12.npz").write_bytes(b"not ours")  # not a chunk name: never read, never counted
    assert partial.usable_chunks(rows, ["gem"], 3) == {0, 1} and warned == []
    # the same files checked against other rows, another pooling or another dim are all refused
    assert partial.usable_chunks({0: ["a", "b", "c", "x"], 1: ["d"]}, ["gem"], 3) == {1}
    assert "other rows" in warned[-1] and not partial.chunk_file(0).exists()
    assert partial.usable_chunks(rows, ["mac"], 3) == set() and "arrays missing: f_mac" in warned[-1]
    partial.write_chunk(Chunk(1, ["d"], {"gem": np.ones((1, 3), np.float32)}, {}))
    assert partial.usable_chunks(rows, ["gem"], 4) == set() and "expected float32 (1, 4)" in warned[-1]


def test_partial_store_without_a_plan_but_with_chunks_starts_afresh(tmp_path):
    warned: list[str] = []
    partial = PartialStore(tmp_path / ".o.partial", on_warning=warned.append)
    partial.path.mkdir()
    partial.write_chunk(Chunk(0, ["a"], {"gem": np.ones((1, 3), np.float32)}, {}))
    partial.start({"size": 224})
    assert partial.done() == set() and "missing beside 1 finished chunk(s)" in warned[0]
    assert json.loads((partial.path / "plan.json").read_text()) == {"size": 224}


def test_partial_store_plan_that_is_a_folder_starts_afresh(tmp_path):
    warned: list[str] = []
    partial = PartialStore(tmp_path / ".o.partial", on_warning=warned.append)
    (partial.path / "plan.json").mkdir(parents=True)
    partial.start({"size": 224})
    assert "plan.json: not a regular file" in warned[0]
    assert json.loads((partial.path / "plan.json").read_text()) == {"size": 224}


def test_partial_store_default_warning_is_a_python_warning(tmp_path):
    partial = PartialStore(tmp_path / ".o.partial")
    partial.path.mkdir()
    (partial.path / "plan.json").write_text("{")
    with pytest.warns(UserWarning, match="plan.json: unreadable.*starts afresh"):
        partial.start({"size": 224})


def test_partial_path_taken_by_a_file_is_refused(tmp_path):
    (tmp_path / ".o.partial").write_text("a user's file")
    with pytest.raises(BadInput, match="not a folder"):
        PartialStore(tmp_path / ".o.partial").start({"size": 224})
    assert (tmp_path / ".o.partial").read_text() == "a user's file"
