"""bpcr.dataset.presize and `bpcr prepare --presize`: the working size by hand, the cache's files and provenance,
resuming, damage, hostile values; and without the option, every byte and stage key as before."""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bpcr.dataset.options import (PRESIZE_FIELDS, PRESIZE_MAX, PRESIZE_MIN, PrepareOptions, PresizeOptions,
                                  check_prepare_options, parse_presize)
from bpcr.dataset.manifest import read_manifest
from bpcr.dataset.prepare import prepare, prepare_queries
from bpcr.dataset import imagecheck
from bpcr.dataset.presize import (RESUME_NAME, SIDECAR, CachedImage, cache_spec, cached_size, load_cached,
                                  presized)
from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file
from bpcr.options import defaults, spec_of
from tests.helpers.messy_dataset import make_dataset, run

ONE = PrepareOptions(workers=1)
CACHE = PresizeOptions(presize=(64, 96))  # shorter side 96, longer at least 384 (SIFT's)
# (width, height) of the generated photos: three shrunk, one already within the working size (kept as it is).
DB_SIDES = {"n1": (1000, 800), "n2": (900, 1200), "n3": (1024, 1024), "small": (300, 200)}
Q_SIDES = {"v1": (1100, 950)}


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A product shot: a light backdrop with a soft gradient, a shaded bottle with a striped label, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    backdrop = 240 - 25 * yy / height - 10 * ((xx / width - 0.5) ** 2)
    pixels = np.repeat(backdrop[..., None], 3, axis=2) + rng.uniform(-6, 6, 3)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    x0, x1 = width * rng.uniform(0.25, 0.35), width * rng.uniform(0.65, 0.75)
    y0, y1 = height * rng.uniform(0.15, 0.25), height * rng.uniform(0.75, 0.9)
    colour = tuple(int(c) for c in rng.integers(30, 220, 3))
    draw.rounded_rectangle([x0, y0, x1, y1], radius=(x1 - x0) * 0.15, fill=colour)
    ly0 = y0 + (y1 - y0) * 0.3
    draw.rectangle([x0 + 10, ly0, x1 - 10, ly0 + (y1 - y0) * 0.35], fill=(245, 240, 230))
    for k in range(12):
        y = ly0 + 8 + k * (y1 - y0) * 0.025
        draw.line([x0 + 20, y, x0 + 20 + (x1 - x0) * rng.uniform(0.3, 0.8), y], fill=colour, width=3)
    noisy = np.asarray(image, np.float32) + rng.normal(0, 2.0, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_photos(root):
    """A dataset of :data:`DB_SIDES` and :data:`Q_SIDES` JPEGs (q90, as shops publish them) under ``root``."""
    folders = {"db": root / "db", "queries": root / "queries"}
    for name, sides in (("db", DB_SIDES), ("queries", Q_SIDES)):
        folders[name].mkdir(parents=True)
        for k, (image_id, (w, h)) in enumerate(sorted(sides.items())):
            photo(w, h, k + (100 if name == "queries" else 0)).save(folders[name] / f"{image_id}.jpg", quality=90)
    return folders


@pytest.fixture(scope="module")
def made_photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture
def photos(made_photos, tmp_path):
    """A copy of the module's photos for one test (generating 1000-px photos costs more than copying them)."""
    import shutil

    for name, folder in made_photos.items():
        shutil.copytree(folder, tmp_path / name)
    return {name: tmp_path / name for name in made_photos}


def _prepare(photos, out, presize=CACHE):
    return prepare(photos["db"], None, photos["queries"], None, out, ONE, presize=presize)


# ---------------------------------------------------------------- the working size, by hand


@pytest.mark.parametrize("size, limits, expected", [
    ((1600, 800), (240, 384), (480, 240)),     # the shorter side binds: 800 -> 240, 1600 x 240 / 800 = 480
    ((1600, 1200), (240, 384), (384, 288)),    # SIFT's longer side binds: 1600 -> 384, 1200 x 384 / 1600 = 288
    ((1000, 1000), (240, 384), (384, 384)),
    ((1000, 1500), (240, 384), (256, 384)),    # 1000 x 384 / 1500 = 256 >= 240
    ((4000, 3000), (224, 384), (384, 288)),    # a 12 MP phone photo
    ((1001, 1000), (240, 100), (241, 240)),    # 1001 x 240 / 1000 = 240.24, rounded up: never below the limit
    ((300, 500), (240, 384), (240, 400)),      # 500 x 240 / 300 = 400 >= 384
    ((250, 380), (240, 384), (250, 380)),      # within the working size (its longer side under 384): kept
    ((200, 150), (224, 384), (200, 150)),      # smaller than the working size: kept as it is
])
def test_cached_size_by_hand(size, limits, expected):
    assert cached_size(*size, *limits) == expected


def test_cached_size_keeps_both_limits_and_aspect():
    rng = np.random.default_rng(0)
    for _ in range(500):
        w, h = (int(v) for v in rng.integers(16, 5000, 2))
        short_side, long_side = int(rng.integers(16, 1000)), int(rng.integers(16, 1000))
        cw, ch = cached_size(w, h, short_side, long_side)
        assert cw <= w and ch <= h
        if (cw, ch) != (w, h):
            assert min(cw, ch) >= short_side and max(cw, ch) >= long_side
            assert min(cw, ch) == short_side or max(cw, ch) == long_side  # the binding side lands on its limit
            assert abs(cw * h - ch * w) <= max(w, h)  # the aspect, up to rounding each side up


# ---------------------------------------------------------------- options


def test_sizes_are_network_input_sizes_and_sift_side_is_rerank_s():
    from bpcr.features.options import EXTRACT_FIELDS
    from bpcr.reranking.options import RerankOptions

    size = spec_of(EXTRACT_FIELDS["size"])
    assert (PRESIZE_MIN, PRESIZE_MAX) == (size.low, size.high)
    assert PresizeOptions.presize_sift_side == RerankOptions.max_side


@pytest.mark.parametrize("text", ["0", "-1", "2.5", "abc", "224,", "", "224;240", "4097", "100000", "224,0"])
def test_parse_presize_refuses(text):
    with pytest.raises(BadInput) as info:
        parse_presize(text)
    assert "--presize must be network input sizes" in str(info.value) and "\n" not in str(info.value)


def test_parse_presize_and_spec():
    assert parse_presize("224,240, 260") == (224, 240, 260)
    spec = cache_spec(PresizeOptions(presize=(224, 260, 240)))
    assert spec == {"short_side": 260, "long_side": 384, "format": "jpeg", "resample": "bicubic", "quality": 95,
                    "subsampling": "4:4:4"}
    assert cache_spec(PresizeOptions(presize=(224,), presize_format="png"))["format"] == "png"
    for bad in (PresizeOptions(presize=(0,)), PresizeOptions(presize=(224,), presize_quality=0),
                PresizeOptions(presize=(224,), presize_format="gif"),
                PresizeOptions(presize=(224,), presize_sift_side=8)):
        with pytest.raises(BadInput):
            check_prepare_options(bad)


# ---------------------------------------------------------------- without the option: as before, byte for byte

# Recorded at the commit before the cache existed: stage_key(code_defaults(stage)) for every stage, and the sha256 of
# what prepare writes for tests/helpers/messy_dataset.py.
STAGE_DEFAULT_KEYS = {
    "rerank": "99a166c15d90ce0d", "train": "b5f0bcc0dacc0716", "extract": "60b0287c01cab2e8",
    "refine": "0bb7465f06a3471e", "whiten": "f7dfb135e7df493b", "combine": "e9d96945f2dca162",
    "dba": "1b835aadd4104c14", "index": "d5d443a4eb58b489", "search": "173f647004b414bb",
    "text-index": "05b72b2d785a986c", "ensemble": "0121dcaced60bf92",
}
MESSY_SHA256 = {
    "database.csv": "37329544d05947b3ec6227c88aa84b87226a972fe0d50ca49af083586fddaa4c",
    "queries.csv": "97d8b1841822673310384716ae581487d42907d7a78962c0fba7bee9da97efec",
    "rejected.csv": "882a60e6f370855a780e3b6f4a46d79b6327b86b6f50b1a6e82eae1799cc12da",
    "ground_truth.csv": "f062a5d316f7b821b27bf1ad2d89aa6e3f5676577d2ec80b89f4dc7b8fd1522b",
}


def test_no_option_class_feeding_a_stage_key_has_a_presize_field():
    from bpcr.features.options import ExtractOptions
    from bpcr.pipeline.stages import code_defaults, stage_key

    assert not [k for k in defaults(PrepareOptions) if "presize" in k]
    assert not [k for k in defaults(ExtractOptions) if "presize" in k]
    assert {stage: stage_key(code_defaults(stage)) for stage in STAGE_DEFAULT_KEYS} == STAGE_DEFAULT_KEYS


def test_prepare_without_presize_writes_the_same_bytes(tmp_path):
    d = make_dataset(tmp_path)
    run(d)
    out = d["out"]
    assert {name: sha256_file(out / name) for name in MESSY_SHA256} == MESSY_SHA256
    assert sorted(p.name for p in out.iterdir()) == [".check_cache.json", "database.csv", "ground_truth.csv",
                                                      "queries.csv", "rejected.csv", "summary.json"]
    assert "presize" not in json.loads((out / "summary.json").read_text())


# ---------------------------------------------------------------- the cache


def test_cache_files_sizes_and_sidecar(photos, tmp_path):
    plain = prepare(photos["db"], None, photos["queries"], None, tmp_path / "plain", ONE)
    summary = _prepare(photos, tmp_path / "pre")
    out = tmp_path / "pre"
    for name in ("database.csv", "queries.csv"):  # the manifests are the originals' either way
        assert (out / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert plain.presize is None
    assert summary.presize["cached"] == {"database": 3, "queries": 1}
    assert summary.presize["original"] == {"database": 1, "queries": 0}
    # by hand: shorter side 96, longer at least 384 -> 384 binds on every one of these
    expected = {"n1": (384, 308), "n2": (288, 384), "n3": (384, 384), "v1": (384, 332)}
    sidecar = json.loads((out / SIDECAR).read_text())
    assert sidecar["spec"] == cache_spec(CACHE) and sidecar["sizes"] == [64, 96]
    total = 0
    for manifest, set_name, ids in (("database.csv", "database", DB_SIDES), ("queries.csv", "queries", Q_SIDES)):
        served = sidecar["manifests"][manifest]
        assert served["set"] == set_name and served["sha256"] == sha256_file(out / manifest)
        assert sorted(served["entries"]) == sorted(ids)
        for image_id, entry in served["entries"].items():
            if image_id == "small":
                assert entry is None and not (out / "presize" / "database" / "small.jpg").exists()
                continue
            file, size, digest = entry
            assert file == f"presize/{set_name}/{image_id}.jpg"
            data = (out / file).read_bytes()
            assert len(data) == size and hashlib.sha256(data).hexdigest() == digest
            with Image.open(io.BytesIO(data)) as cached:
                assert cached.format == "JPEG" and cached.size == expected[image_id]
            total += size
    assert summary.presize["bytes"] == total
    assert 10_000 < total / 4 < 200_000  # a few tens of kB per 384-px JPEG at q95
    assert sorted(p.name for p in (out / "presize" / "database").iterdir()) == ["n1.jpg", "n2.jpg", "n3.jpg"]


def test_png_is_lossless(photos, tmp_path):
    _prepare(photos, tmp_path / "png", PresizeOptions(presize=(96,), presize_format="png"))
    original = Image.open(photos["db"] / "n1.jpg").convert("RGB")
    from bpcr.dataset.presize import REDUCING_GAP, RESAMPLE

    shrunk = original.resize((384, 308), RESAMPLE, reducing_gap=REDUCING_GAP)
    cached = Image.open(tmp_path / "png" / "presize" / "database" / "n1.png")
    assert cached.format == "PNG" and np.array_equal(np.asarray(cached.convert("RGB")), np.asarray(shrunk))


def test_a_rerun_resumes_and_an_interrupted_run_keeps_its_work(photos, tmp_path, monkeypatch):
    import bpcr.dataset.presize as presize

    out = tmp_path / "pre"
    real, calls = presize._presize_entry, []

    def interrupted(*item):
        calls.append(item)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*item)

    monkeypatch.setattr(imagecheck, "CHUNK", 1)  # one image per task, so the run stops after the first
    monkeypatch.setattr(presize, "_presize_entry", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _prepare(photos, out)
    assert not (out / SIDECAR).exists() and not (out / "summary.json").exists()
    resumed = json.loads((out / RESUME_NAME).read_text())["entries"]
    assert len(resumed) == 1  # the one image finished before Ctrl-C
    monkeypatch.setattr(presize, "_presize_entry", real)
    assert _prepare(photos, out).presize["encoded"] == 4  # the other four, not the first again
    first = (out / SIDECAR).read_bytes()
    assert _prepare(photos, out).presize["encoded"] == 0  # all reused
    assert (out / SIDECAR).read_bytes() == first
    # a cached file changed (its mtime) or removed is made again, to the same bytes
    (out / "presize" / "database" / "n2.jpg").unlink()
    damaged = out / "presize" / "database" / "n3.jpg"
    damaged.write_bytes(b"\x00" * damaged.stat().st_size)
    assert _prepare(photos, out).presize["encoded"] == 2
    assert (out / SIDECAR).read_bytes() == first


def test_another_format_replaces_the_files_and_a_plain_run_drops_the_sidecar(photos, tmp_path):
    out = tmp_path / "pre"
    _prepare(photos, out)
    _prepare(photos, out, PresizeOptions(presize=(96,), presize_format="png"))
    assert sorted(p.name for p in (out / "presize" / "database").iterdir()) == ["n1.png", "n2.png", "n3.png"]
    prepare(photos["db"], None, photos["queries"], None, out, ONE)
    assert not (out / SIDECAR).exists()  # the manifests no longer claim a cache
    assert (out / "presize" / "database" / "n1.png").exists()  # its files wait for a later --presize run


def test_prepare_queries_caches_new_queries(photos, tmp_path):
    query_set = prepare_queries(photos["queries"], tmp_path / "new", ONE, presize=CACHE)
    assert query_set.presize["cached"] == {"queries": 1}
    sidecar = json.loads((tmp_path / "new" / SIDECAR).read_text())
    assert list(sidecar["manifests"]) == ["queries.csv"]


# ---------------------------------------------------------------- reading it back, and refusing damage


def test_presized_reads_the_sidecar_of_its_own_manifest_only(photos, tmp_path):
    out = tmp_path / "pre"
    _prepare(photos, out)
    manifest = read_manifest(out / "database.csv")
    cache = presized(manifest, sha256_file(out / "database.csv"))
    assert cache.spec == cache_spec(CACHE)
    assert [image is None for image in cache.images] == [False, False, False, True]  # n1, n2, n3, small
    assert cache.images[0].full_size == (1000, 800)
    assert load_cached(cache.images[0]).size == (384, 308)
    other = out / "subset.csv"  # a manifest presize.json does not list: no cache
    other.write_bytes((out / "database.csv").read_bytes())
    assert presized(read_manifest(other), sha256_file(other)) is None
    with pytest.raises(BadInput, match="another version of database.csv"):
        presized(manifest, "0" * 64)


def _one_line(call, *words):
    with pytest.raises(BadInput) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and all(w in text for w in words), text
    return text


def test_damaged_entries_are_refused_with_one_line(photos, tmp_path):
    out = tmp_path / "pre"
    _prepare(photos, out)
    manifest = read_manifest(out / "database.csv")
    digest = sha256_file(out / "database.csv")
    entry = presized(manifest, digest).images[1]
    data = entry.path.read_bytes()
    entry.path.write_bytes(data[:-10])  # truncated: refused before any work, by its size
    _one_line(lambda: presized(manifest, digest), "n2.jpg", "damaged", f"{len(data) - 10} bytes")
    entry.path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])  # same size: refused when read
    cache = presized(manifest, digest)
    _one_line(lambda: load_cached(cache.images[1]), "n2.jpg", "sha256", "delete it and run bpcr prepare")
    entry.path.unlink()
    _one_line(lambda: presized(manifest, digest), "n2.jpg", "missing")
    _one_line(lambda: load_cached(CachedImage(entry.path, 1, "x", (1, 1))), "unreadable")


@pytest.mark.parametrize("edit, words", [
    (lambda s: "not json", ("unreadable presize cache index",)),
    (lambda s: json.dumps({**json.loads(s), "format": "other"}), ("not a bpcr-presize/1",)),
    (lambda s: s.replace('"presize/database/n1.jpg"', '"../../db/n1.jpg"'), ("malformed entry for 'n1'",)),
    (lambda s: s.replace('"n1":[', '"n9":['), ("no entry for 'n1'",)),
])
def test_a_malformed_sidecar_is_refused(photos, tmp_path, edit, words):
    out = tmp_path / "pre"
    _prepare(photos, out)
    (out / SIDECAR).write_text(edit((out / SIDECAR).read_text()))
    _one_line(lambda: presized(read_manifest(out / "database.csv"), sha256_file(out / "database.csv")), *words)


# ---------------------------------------------------------------- the command line and the config


@pytest.mark.parametrize("extra, named", [
    (["--presize", "0"], "--presize"), (["--presize", "-8"], "--presize"), (["--presize", "224.5"], "--presize"),
    (["--presize", "big"], "--presize"), (["--presize", "100000"], "--presize"),
    (["--presize", "224,,240"], "--presize"),
    (["--presize", "224", "--presize-quality", "0"], "--presize-quality"),
    (["--presize", "224", "--presize-format", "gif"], "presize-format"),
    (["--presize-format", "png"], "need --presize"),
])
def test_cli_refuses_a_bad_presize_before_writing(cli, tmp_path, extra, named):
    # the folders need not exist: the values are refused before anything is read
    result = cli("prepare", "--db", tmp_path / "db", "--queries", tmp_path / "q", "--out", tmp_path / "out", *extra)
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and named in lines[0], result.err
    assert not (tmp_path / "out").exists()


def test_cli_makes_the_cache(cli, photos, tmp_path):
    result = cli("prepare", "--db", photos["db"], "--queries", photos["queries"], "--out", tmp_path / "out",
                 "--presize", "64,96", "--workers", "1")
    assert result.code == 0, result.err
    assert "pre-sized cache (JPEG q95, shorter side 96, longer at least 384): 4 of 5 images shrunk" in result.out
    assert json.loads((tmp_path / "out" / SIDECAR).read_text())["spec"] == cache_spec(CACHE)


def test_help_shows_the_presize_options_as_declared(cli, monkeypatch):
    from tests.helpers.cli_help import help_as_declared

    help_as_declared(cli, monkeypatch, "prepare", PresizeOptions, own_flags={"presize": "--presize"})


@pytest.mark.parametrize("table, words", [
    ({"presize": [0]}, "[prepare] presize: --presize must be"),
    ({"presize": "224"}, "[prepare] presize must be"),
    ({"presize": [224], "presize_quality": 101}, "[prepare] presize_quality"),
    ({"presize_format": "png"}, "[prepare] presize_format needs presize"),
    ({"demo": True, "presize": [224]}, "unknown option 'presize'"),
])
def test_config_refuses_bad_presize_keys(tmp_path, table, words):
    from bpcr.pipeline.config import validate_config

    inputs = {} if table.get("demo") else {"db": "db", "queries": "q"}
    with pytest.raises(BadInput) as info:
        validate_config(tmp_path / "c.toml", {"prepare": {**inputs, **table}})
    assert words in str(info.value), str(info.value)


def test_config_accepts_presize_keys(tmp_path):
    from bpcr.pipeline.config import validate_config

    validate_config(tmp_path / "c.toml", {"prepare": {"db": "db", "queries": "q", "presize": [224, 240],
                                                      **{k: f.default for k, f in PRESIZE_FIELDS.items()
                                                         if k != "presize"}}})


def test_the_prepare_key_takes_the_sidecar_in_only_when_there_is_one(photos, tmp_path):
    from bpcr.pipeline.runner import Pipeline
    from bpcr.pipeline.stages import stage_key

    config = tmp_path / "c.toml"
    config.write_text(f'work = "{tmp_path / "work"}"\n[prepare]\ndb = "{photos["db"]}"\n'
                      f'queries = "{photos["queries"]}"\npresize = [64, 96]\n')
    pipeline = Pipeline(config, log=lambda _: None)
    assert pipeline.presize_options() == CACHE
    out = tmp_path / "work" / "prepared"
    prepare(photos["db"], None, photos["queries"], None, out, ONE)
    pipeline._use_prepared(out)
    digests = [sha256_file(out / "database.csv"), sha256_file(out / "queries.csv")]
    assert pipeline.keys["prepare"] == stage_key(*digests)  # as before the cache existed
    plain = pipeline.keys["prepare"]
    _prepare(photos, out)
    pipeline._use_prepared(out)
    assert pipeline.keys["prepare"] == stage_key(*digests, sha256_file(out / SIDECAR)) != plain
    assert pipeline.keys["database"] == digests[0]  # training reads the originals: its key stays
