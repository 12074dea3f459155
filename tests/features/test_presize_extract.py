"""`bpcr extract` from prepare's pre-sized image cache: the descriptors of full decodes, within resampling and JPEG
error; the cache recorded in every store, which is then never compared with one read from the originals; damage
refused with one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bpcr.dataset.options import PrepareOptions, PresizeOptions
from bpcr.dataset.prepare import prepare
from bpcr.dataset.presize import cache_spec
from bpcr.errors import BadInput
from bpcr.features.extract import extract
from bpcr.io.store import check_same_extraction, open_store
from tests.dataset.test_presize import write_photos
from tests.helpers.extraction import lite0

CACHE = PresizeOptions(presize=(64,))  # shorter side 64, longer at least 384 (SIFT's)
SMALL = dict(size=64, batch_size=2, chunk_batches=2, workers=0, device="cpu", threads=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("presize-extract")
    photos = write_photos(root)
    for out, presize in (("plain", None), ("cached", CACHE)):
        prepare(photos["db"], None, photos["queries"], None, root / out, PrepareOptions(workers=1), presize=presize)
    return root


@pytest.fixture(scope="module")
def stores(data):
    made = {}
    for prepared in ("plain", "cached"):
        for which in ("database", "queries"):
            made[prepared, which] = extract(data / prepared / f"{which}.csv", data / f"{prepared}-{which}",
                                            lite0(["gem"], **SMALL))["gem"]
    return made


def test_descriptors_from_the_cache_are_the_full_decode_s(stores):
    """Within resampling error: the cache shrinks 1000 px to 384 and extraction 384 to 64, where a full decode
    shrinks 1000 to 64 at once. Lite0 at 64 px is that sensitive to the filter: the kit's own resize with and
    without its box pre-reduction (reducing_gap) differ by as much on these photos (cosine 0.994 mean), and a
    lossless (PNG) cache by as much as this JPEG one (benchmarks/presize.py measures it at 224 px)."""
    full, cached = open_store(stores["plain", "database"]), open_store(stores["cached", "database"])
    assert full.ids == cached.ids == ["n1", "n2", "n3", "small"]
    cos = (np.asarray(full.features, np.float32) * np.asarray(cached.features, np.float32)).sum(axis=1)
    print("cosine, cache vs full decode:", np.round(cos, 5))
    assert cos[:3].mean() >= 0.99 and cos[:3].min() >= 0.985
    assert cos[3] > 0.9999  # "small" is read from its original either way


def test_extraction_from_the_cache_decodes_exactly_the_cached_files(data, stores, tmp_path):
    """The cache's only change is the pixels it stores: a manifest naming the cached files as the images
    themselves gives the same bytes as extraction through the cache."""
    from bpcr.dataset.manifest import read_manifest, write_manifest
    from bpcr.dataset.presize import presized
    from bpcr.io.fileio import sha256_file
    from PIL import Image

    manifest = read_manifest(data / "cached" / "database.csv")
    cache = presized(manifest, sha256_file(manifest.path))
    paths = [c.path if c is not None else p for c, p in zip(cache.images, manifest.paths)]
    sizes = [Image.open(p).size for p in paths]
    write_manifest(tmp_path / "as-images.csv", manifest.ids, paths, [w for w, _ in sizes], [h for _, h in sizes],
                   manifest.descriptions)
    direct = extract(tmp_path / "as-images.csv", tmp_path / "direct", lite0(["gem"], **SMALL))["gem"]
    assert (direct / "features.npy").read_bytes() == (stores["cached", "database"] / "features.npy").read_bytes()


def test_the_cache_is_recorded_and_never_mixed_with_the_originals(stores):
    full = open_store(stores["plain", "database"])
    cached_db, cached_queries = open_store(stores["cached", "database"]), open_store(stores["cached", "queries"])
    assert "presize" not in full.meta
    assert cached_db.meta["presize"] == cached_queries.meta["presize"] == cache_spec(CACHE)
    check_same_extraction(cached_db, cached_queries)  # both sides read from caches of one kind
    for reference, other in ((full, cached_queries), (cached_db, open_store(stores["plain", "queries"]))):
        with pytest.raises(BadInput) as info:
            check_same_extraction(reference, other)
        assert "presize is" in str(info.value) and "\n" not in str(info.value)


def test_a_damaged_entry_stops_the_extraction_with_one_line(data, tmp_path):
    import shutil

    prepared = tmp_path / "cached"
    shutil.copytree(data / "cached", prepared)
    entry = prepared / "presize" / "database" / "n3.jpg"
    body = entry.read_bytes()
    entry.write_bytes(body[:200] + bytes([body[200] ^ 0xFF]) + body[201:])  # same size: found when read
    with pytest.raises(BadInput) as info:
        extract(prepared / "database.csv", tmp_path / "out", lite0(["gem"], **SMALL))
    assert "n3.jpg" in str(info.value) and "sha256" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
    entry.write_bytes(body[:-1])  # shorter: refused before the network loads
    with pytest.raises(BadInput, match="damaged: .* bytes, presize.json says"):
        extract(prepared / "database.csv", tmp_path / "out", lite0(["gem"], **SMALL))


def test_a_salient_crop_is_in_the_original_s_pixels(data):
    from bpcr.dataset.manifest import read_manifest
    from bpcr.dataset.presize import presized
    from bpcr.features.loader import decode_cached, decode_view
    from bpcr.features.preprocess import Preprocess
    from bpcr.io.fileio import sha256_file

    manifest = read_manifest(data / "cached" / "database.csv")
    cache = presized(manifest, sha256_file(manifest.path))
    crop = Preprocess(crop="salient")
    for row in range(3):
        _, full_box = decode_view(manifest.paths[row], (64, 64), preprocess=crop)
        _, cached_box = decode_cached(cache.images[row], (64, 64), preprocess=crop)
        assert not full_box.fallback and not cached_box.fallback
        # the box of a 1000-px image, found on a 384-px copy: within a few of the original's pixels
        assert np.abs(np.subtract(full_box.row()[:4], cached_box.row()[:4])).max() <= 12, (full_box, cached_box)


@pytest.mark.slow
def test_a_loader_process_carries_the_refusal(data, tmp_path):
    """A damaged entry found in a decoding process reaches the consumer as the same one line."""
    import shutil

    prepared = tmp_path / "cached"
    shutil.copytree(data / "cached", prepared)
    entry = prepared / "presize" / "queries" / "v1.jpg"
    body = entry.read_bytes()
    entry.write_bytes(body[:300] + bytes([body[300] ^ 0xFF]) + body[301:])
    with pytest.raises(BadInput) as info:
        extract(prepared / "queries.csv", tmp_path / "out", lite0(["gem"], **{**SMALL, "workers": 1}))
    assert "v1.jpg" in str(info.value) and "sha256" in str(info.value)


PIPELINE = """\
work = "work"
submissions = "submissions"
leaderboard = "leaderboard.md"

[prepare]
db = "{db}"
queries = "{queries}"
workers = 1
{presize}
[[extract]]
name = "lite0"
backbone = "efficientnet_lite0"
size = 64
batch_size = 2
workers = 0
device = "cpu"
threads = 1
poolings = ["gem"]

[index]
metric = "cosine"
kind = "flat"

[[search]]
name = "lite0-gem"
features = "lite0/gem"
"""


@pytest.mark.slow
def test_a_pipeline_reads_the_cache_and_re_extracts_when_it_changes(data, tmp_path, monkeypatch):
    """[prepare] presize = [...]: the stores come from the cache and are up to date on a re-run; dropping the
    key re-extracts from the originals (other keys); `bpcr predict` gives new queries the same cache."""
    from bpcr.pipeline.predict import predict
    from bpcr.pipeline.runner import run_pipeline
    from tests.helpers.tiny_pipeline import stages_run

    monkeypatch.chdir(tmp_path)
    import shutil

    folders = {"db": tmp_path / "db", "queries": data / "queries"}
    shutil.copytree(data / "db", folders["db"])
    for k, image in enumerate(["n1", "n2", "n3", "n1"]):  # predict wants at least 7 database images
        shutil.copy(folders["db"] / f"{image}.jpg", folders["db"] / f"m{k}.jpg")
    config = tmp_path / "c.toml"
    write = lambda presize: config.write_text(PIPELINE.format(**{k: v.resolve() for k, v in folders.items()},
                                                              presize=presize))
    write("presize = [64]\n")
    first = run_pipeline(config, log=lambda _: None)
    store = open_store(tmp_path / "work" / "features" / "lite0" / "queries" / "gem")
    assert store.meta["presize"] == cache_spec(CACHE)
    assert "extract:lite0-database" in stages_run(first)
    # up to date (a dataset's prepare always runs: its caches make that fast), the cache's files reused
    assert stages_run(run_pipeline(config, log=lambda _: None)) == {"prepare:dataset"}
    assert json.loads((tmp_path / "work" / "prepared" / "summary.json").read_text())["presize"]["encoded"] == 0
    answered = predict(config, folders["queries"], tmp_path / "answers.csv")
    assert answered.queries == ["v1"] and not answered.rejected
    write("")
    again = run_pipeline(config, log=lambda _: None)
    assert {"extract:lite0-database", "extract:lite0-queries"} <= stages_run(again)
    assert "presize" not in open_store(tmp_path / "work" / "features" / "lite0" / "queries" / "gem").meta
