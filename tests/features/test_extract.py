"""`bpcr extract`: one pass feeds several poolings; resume, shard and merge give identical bytes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bpcr.errors import BadInput
from bpcr.features.extract import _shard_chunks, extract, merge
from bpcr.features.options import ExtractOptions
from bpcr.features.loader import batches_of_chunk as _chunk_batches, target_shape as _target_shape
from bpcr.dataset.manifest import write_manifest
from bpcr.io.store import open_store
from tests.helpers.extraction import FAST, N_IMAGES, kill_extraction, lite0, store_bytes, write_images

pytestmark = pytest.mark.slow  # module fixtures build a dataset, a network or a pipeline run

BROKEN = "c03"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("extract")
    (root / "images").mkdir()
    ids, paths, widths, heights = write_images(root / "images", N_IMAGES)
    paths[3].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_manifest(root / "db.csv", ids, paths, widths, heights, [""] * len(ids))
    return root


@pytest.fixture(scope="module")
def reference(data):
    """An uninterrupted single run with three poolings, one of them masked."""
    return extract(data / "db.csv", data / "ref", lite0(["gem", "mac", "srmac"], **FAST))


def test_store_contract(reference, data):
    assert sorted(reference) == ["gem", "mac", "srmac"]
    store = open_store(reference["gem"])
    assert store.ids == [f"c{k:02d}" for k in range(N_IMAGES) if k != 3]  # manifest order, broken one skipped
    assert store.failed == {BROKEN: "truncated image data"}
    assert store.features.shape == (N_IMAGES - 1, 1280) and store.features.dtype == np.float16
    norms = np.linalg.norm(np.asarray(store.features, dtype=np.float32), axis=1)
    assert np.allclose(norms, 1.0, atol=2e-3)
    meta = store.meta
    assert meta["backbone"] == "tf_efficientnet_lite0" and meta["weights"]["source"] == "bundled"
    assert len(meta["weights"]["sha256"]) == 64 and meta["input_size"] == 64 and meta["resize"] == "square"
    assert (meta["pooling"], meta["pooling_params"], meta["mask"]) == ("gem", {"p": 3.0, "eps": 1e-6}, None)
    assert (meta["dim"], meta["dtype"], meta["count"], meta["normalisation"]) == (1280, "float16", 12, "l2")
    assert open_store(reference["srmac"]).meta["mask"] == "spectral"
    assert not list(data.glob(".ref*"))  # the partial folder is gone once the stores exist


def test_one_pass_equals_separate_runs(reference, data):
    alone = extract(data / "db.csv", data / "alone", lite0(["mac"], **FAST))
    assert store_bytes(alone["mac"]) == store_bytes(reference["mac"])


def test_interrupted_run_resumes_to_identical_bytes(reference, data):
    out = data / "resumed"
    seen = []

    def stop_after_two(chunk):
        seen.append(chunk)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="run the same command again"):
        extract(data / "db.csv", out, lite0(["gem", "mac", "srmac"], **{**FAST, "workers": 2}),
                on_chunk=stop_after_two)
    assert not out.exists()  # nothing that looks like a store
    assert sorted(p.name for p in (data / ".resumed.partial").glob("chunk-*")) == ["chunk-000000.npz", "chunk-000001.npz"]
    again = []
    stores = extract(data / "db.csv", out, lite0(["gem", "mac", "srmac"], **FAST), on_chunk=again.append)
    assert again == [2, 3]  # only the unfinished chunks ran
    for name in ("gem", "mac", "srmac"):
        assert store_bytes(stores[name]) == store_bytes(reference[name])


def test_changed_settings_do_not_mix_with_a_partial_run(data):
    out = data / "mixed"

    def stop(chunk):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(data / "db.csv", out, lite0(["mac"], **FAST), on_chunk=stop)
    with pytest.raises(BadInput, match=r"other settings \(config\)"):
        extract(data / "db.csv", out, lite0(["mac"], **{**FAST, "size": 96}))
    stores = extract(data / "db.csv", out, lite0(["mac"], **{**FAST, "size": 96}), restart=True)
    assert open_store(stores["mac"]).meta["input_size"] == 96


def test_shards_merge_into_the_single_run(reference, data, cli):
    parts = []
    for i in (1, 2, 3):
        stores = extract(data / "db.csv", data / f"part{i}", lite0(["gem", "mac", "srmac"], shard=(i, 3), **FAST))
        parts.append(data / f"part{i}")
        assert open_store(stores["gem"]).meta["shard"]["index"] == i
    # 13 rows in chunks of 4 -> chunks 0..3; shards take [0, 1), [1, 2), [2, 4)
    assert [len(open_store(p / "gem")) for p in parts] == [3, 4, 5]  # shard 1 holds the broken image
    merged = merge(parts, data / "merged")
    for name in ("gem", "mac", "srmac"):
        assert store_bytes(merged[name]) == store_bytes(reference[name])
        assert open_store(merged[name]).failed == open_store(reference[name]).failed
        assert open_store(merged[name]).meta["shard"] is None

    result = cli("extract", "--merge", parts[0], parts[2], "--out", data / "m2")
    assert result.code == 2 and "missing shard(s) 2 of 3" in result.err and result.err.count("\n") == 1
    with pytest.raises(BadInput, match="given twice"):
        merge([parts[0], parts[1], parts[1], parts[2]], data / "m3")
    with pytest.raises(BadInput, match="not a shard"):
        merge([data / "ref"], data / "m4")
    other = extract(data / "db.csv", data / "other2", lite0(["gem", "mac", "srmac"], shard=(2, 3),
                                                            **{**FAST, "size": 96}))
    with pytest.raises(BadInput, match="differs from .* in input_size"):
        merge([parts[0], other["gem"].parent, parts[2]], data / "m5")


def test_failed_images_never_stop_the_run(data):
    (data / "gone").mkdir()
    ids, paths, widths, heights = write_images(data / "gone", 3, seed=1)
    paths[0].unlink()
    paths[2].write_bytes(b"")
    write_manifest(data / "gone.csv", ids, paths, widths, heights, [""] * 3)
    store = open_store(extract(data / "gone.csv", data / "gone-out", lite0(["gem"], **FAST))["gem"])
    assert store.ids == ["c01"]
    assert store.failed == {"c00": "file not found", "c02": "zero-byte file"}
    assert (store.path / "failed.csv").read_text() == "id,reason\nc00,file not found\nc02,zero-byte file\n"


def test_flip_averaging_makes_mirror_images_equal(data):
    (data / "mirror").mkdir()
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    paths = [data / "mirror" / "a.png", data / "mirror" / "b.png"]
    Image.fromarray(pixels).save(paths[0])
    Image.fromarray(pixels[:, ::-1]).save(paths[1])
    write_manifest(data / "mirror.csv", ["a", "b"], paths, [64, 64], [64, 64], ["", ""])
    one = open_store(extract(data / "mirror.csv", data / "m1", lite0(["gem"], dtype="float32", **FAST))["gem"])
    two = open_store(extract(data / "mirror.csv", data / "m2", lite0(["gem"], dtype="float32", flip=True,
                                                                     scales=(1.0, 0.75), **FAST))["gem"])
    f1, f2 = np.asarray(one.features), np.asarray(two.features)
    assert not np.allclose(f1[0], f1[1], atol=1e-3)  # a plain descriptor is not mirror-invariant
    assert np.allclose(f2[0], f2[1], atol=1e-5)  # the flip-summed one is
    assert np.allclose(np.linalg.norm(f2, axis=1), 1.0, atol=1e-6)
    assert two.meta["scales"] == [1.0, 0.75] and two.meta["flip"] is True


def test_vit_tokens_through_every_kind_of_pooling(data):
    with pytest.warns(UserWarning, match="random weights"):
        stores = extract(data / "db.csv", data / "vit", ExtractOptions(backbone="test_vit", weights="none",
                                                                       poolings=["mac", "rmac", "srmac"],
                                                                       **{**FAST, "size": 48}))
    store = open_store(stores["rmac"])
    assert store.features.shape == (12, 64) and store.meta["weights"]["source"] == "none"
    assert np.all(np.isfinite(np.asarray(store.features, dtype=np.float32)))


def test_pca_whitening_learned_and_applied(reference, data):
    db = extract(data / "db.csv", data / "white", lite0(["gem"], pca_whiten=True, **FAST))["gem"]
    raw = np.asarray(open_store(reference["gem"]).features, dtype=np.float32)
    store = open_store(db)
    assert store.features.shape == (12, 11)  # N - 1 components
    with np.load(db / "pca.npz", allow_pickle=False) as saved:
        assert saved["components"].shape == (11, 1280)
    from sklearn.decomposition import PCA

    expected = PCA(n_components=11, whiten=True, svd_solver="covariance_eigh").fit_transform(raw)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    # components are defined up to sign: compare up to a per-column sign
    got = np.asarray(store.features, dtype=np.float32)
    signs = np.sign(np.sum(got * expected, axis=0))
    assert np.allclose(got, expected * signs, atol=5e-3)
    assert store.meta["whitening"]["learned_on"] == "this store"

    query = extract(data / "db.csv", data / "white-q", lite0(["gem"], pca_from=data / "white", **FAST))
    q = open_store(query["gem"])
    assert (q.path / "pca.npz").read_bytes() == (db / "pca.npz").read_bytes()
    assert np.array_equal(np.asarray(q.features), np.asarray(store.features))  # same images, same whitening


def test_planning_by_hand():
    assert _shard_chunks(13, 4, None) == (0, 4)
    assert [_shard_chunks(13, 4, (i, 3)) for i in (1, 2, 3)] == [(0, 1), (1, 2), (2, 4)]
    assert [_shard_chunks(3, 4, (i, 2)) for i in (1, 2)] == [(0, 0), (0, 1)]  # more shards than chunks: some empty
    assert _target_shape(300, 200, 224, "square", 32) == (224, 224)
    assert _target_shape(300, 200, 224, "aspect", 32) == (160, 224)  # 149.3 -> 160, a multiple of 32
    assert _target_shape(100, 400, 224, "aspect", 32) == (224, 64)  # 56 -> 64
    assert _target_shape(1000, 10, 224, "aspect", 14) == (14, 224)  # never below one stride
    shapes = [(64, 64), (32, 64), (64, 64), (32, 64), (64, 64), (64, 64)]
    assert _chunk_batches(0, 6, 2, 6, shapes) == [[1, 3], [0, 2], [4, 5]]
    assert _chunk_batches(1, 4, 3, 6, shapes) == [[4, 5]]


def test_aspect_mode_runs_and_is_recorded(data):
    store = open_store(extract(data / "db.csv", data / "aspect", lite0(["gem"], resize="aspect", **FAST))["gem"])
    assert len(store) == 12 and store.meta["resize"] == "aspect"


def test_cli(data, cli):
    result = cli("extract", data / "db.csv", "--pooling", "gem", "--size", "64", "--batch-size", "4", "--workers", "0", "--threads", "1",
                 "--param", "gem.p=4", "--dtype", "float32", "--out", data / "cli")
    assert result.code == 0, result.err
    assert "wrote" in result.out and "12 x 1280 float32 (gem), 1 failed" in result.out
    meta = json.loads((data / "cli" / "gem" / "meta.json").read_text())
    assert meta["pooling_params"] == {"p": 4.0, "eps": 1e-6}
    for args, message in [
        (("--pooling", "gem,nope"), "unknown pooling 'nope'; choose from crow, gem, grmaac"),
        (("--pooling", "gem", "--backbone", "resnet_nope"), "unknown backbone 'resnet_nope'"),
        (("--pooling", "gem", "--shard", "3/2"), "--shard I/N needs 1 <= I <= N"),
        (("--pooling", "gem", "--weights", "hub", "--pca-whiten", "--pca-from", "x"), "choose one"),
        ((), "--pooling is required"),
    ]:
        result = cli("extract", data / "db.csv", "--out", data / "cli-bad", *args)
        assert result.code == 2 and message in result.err and result.err.count("\n") == 1, (args, result.err)


def test_killed_run_resumes_to_identical_bytes(reference, data):
    """A real SIGKILL (no cleanup runs) after two chunks: the re-run finishes the rest, same bytes."""
    out = data / "killed"
    kill_extraction(data / "db.csv", out, ["gem", "mac", "srmac"], after_chunks=2)
    assert not out.exists()
    assert len(list((data / ".killed.partial").glob("chunk-*"))) == 2
    again = []
    stores = extract(data / "db.csv", out, lite0(["gem", "mac", "srmac"], **FAST), on_chunk=again.append)
    assert again == [2, 3]
    for name in ("gem", "mac", "srmac"):
        assert store_bytes(stores[name]) == store_bytes(reference[name])


def _photo(path, w, h, seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=-1)
    pixels = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt, quality=90)
    return path


def test_jpeg_draft_decodes_big_jpegs_smaller_and_nothing_else(tmp_path):
    from bpcr.dataset import images
    from bpcr.features.loader import decode_resized

    big = _photo(tmp_path / "big.jpg", 1000, 800)
    image, full = images.load_rgb_draft(big, 128)
    assert image.size == (250, 200) and full == (1000, 800)  # 1/4: the largest reduction keeping 128 px
    drafted, plain = decode_resized(big, (64, 64), jpeg_draft=True), decode_resized(big, (64, 64))
    assert drafted.shape == plain.shape == (64, 64, 3) and not np.array_equal(drafted, plain)
    assert np.abs(drafted.astype(int) - plain.astype(int)).mean() < 3  # the same picture
    # within twice the asked size, and other formats: a full decode, the very same pixels
    small = _photo(tmp_path / "small.jpg", 250, 200)
    png = _photo(tmp_path / "big.png", 1000, 800, fmt="PNG")
    for path in (small, png):
        assert np.array_equal(decode_resized(path, (64, 64), jpeg_draft=True), decode_resized(path, (64, 64)))
        assert images.load_rgb_draft(path, 128)[0].size == Image.open(path).size


def test_jpeg_draft_is_recorded_and_kept_apart(tmp_path):
    from bpcr.io.store import check_same_extraction

    ids = ["a", "b", "c"]
    paths = [_photo(tmp_path / f"{i}.jpg", 600, 500, seed=k) for k, i in enumerate(ids)]
    write_manifest(tmp_path / "m.csv", ids, paths, [600] * 3, [500] * 3, [""] * 3)
    plain = open_store(extract(tmp_path / "m.csv", tmp_path / "plain", lite0(["gem"], **FAST))["gem"])
    draft = open_store(extract(tmp_path / "m.csv", tmp_path / "draft", lite0(["gem"], jpeg_draft=True, **FAST))["gem"])
    assert draft.meta["jpeg_draft"] is True and "jpeg_draft" not in plain.meta
    cos = (np.asarray(draft.features, np.float32) * np.asarray(plain.features, np.float32)).sum(1)
    assert cos.min() > 0.99 and not np.array_equal(draft.features, plain.features)  # 0.9993 when written
    check_same_extraction(plain, plain)
    with pytest.raises(BadInput, match="jpeg_draft"):
        check_same_extraction(plain, draft)


def test_a_manifest_without_images_is_refused_not_a_zero_row_store(tmp_path, cli):
    write_manifest(tmp_path / "empty.csv", [], [], [], [], [])
    assert (tmp_path / "empty.csv").read_text().count("\n") == 1  # the header alone
    result = cli("extract", tmp_path / "empty.csv", "--pooling", "gem", "--out", tmp_path / "out")
    assert result.code == 2 and "lists no image: nothing to extract" in result.err, result.err
    assert result.err.count("\n") == 1 and not (tmp_path / "out").exists()
