"""`bpcr extract --resize pad --pad-colour R,G,B --crop salient`: what the stores record (meta.json, crops.csv),
that a resumed or sharded run records the same, that pad and square stores are never mixed, and that the
command line refuses bad values in one line."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bpcr.dataset.manifest import write_manifest
from bpcr.errors import BadInput
from bpcr.features.extract import extract, merge
from bpcr.features.preprocess import CROP_PARAMS, salient_box
from bpcr.io.store import CROPS_FILE, check_same_extraction, open_store, write_store
from tests.helpers.extraction import FAST, lite0, store_bytes

FLAT = "q2"  # a blank image: its crop falls back to the whole image


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Five non-square photos of a dark textured object on a light background (one blank), and their manifest."""
    root = tmp_path_factory.mktemp("preprocess")
    (root / "images").mkdir()
    rng = np.random.default_rng(5)
    ids, paths, widths, heights = [], [], [], []
    for k in range(5):
        w, h = int(rng.integers(70, 130)), int(rng.integers(50, 110))
        pixels = np.full((h, w, 3), 225, np.uint8)
        if f"q{k}" != FLAT:
            x0, y0 = int(rng.integers(5, w // 2)), int(rng.integers(5, h // 2))
            pixels[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 80, (h // 3, w // 3, 3), dtype=np.uint8)
        path = root / "images" / f"q{k}.png"
        Image.fromarray(pixels).save(path)
        ids.append(f"q{k}")
        paths.append(path)
        widths.append(w)
        heights.append(h)
    write_manifest(root / "m.csv", ids, paths, widths, heights, [""] * len(ids))
    return root


SETTINGS = dict(FAST, chunk_batches=1, dtype="float32")  # chunks of 2 rows: 3 chunks


@pytest.fixture(scope="module")
def cropped(photos):
    """One uninterrupted run with the 2019 winner's letterbox (black here) and the 2020 runner-up's crop."""
    return extract(photos / "m.csv", photos / "cropped",
                   lite0(["gem"], resize="pad", pad_colour=(0, 0, 0), crop="salient", **SETTINGS))["gem"]


@pytest.mark.slow
def test_the_store_records_resize_fill_and_every_box(photos, cropped):
    store = open_store(cropped)
    meta = store.meta
    assert (meta["resize"], meta["pad_colour"], meta["crop"]) == ("pad", [0, 0, 0], "salient")
    assert meta["crop_params"] == CROP_PARAMS and meta["crop_counts"] == {"cropped": 4, "fallback": 1}
    lines = (cropped / CROPS_FILE).read_text().splitlines()
    assert lines[0] == "id,x0,y0,x1,y1,fallback" and [line.split(",")[0] for line in lines[1:]] == store.ids
    for image_id, row in zip(store.ids, store.crops):
        expected = salient_box(Image.open(photos / "images" / f"{image_id}.png"))
        assert tuple(row) == expected.row()
        assert bool(row[4]) == (image_id == FLAT)
    flat = store.crops[store.ids.index(FLAT)]
    with Image.open(photos / "images" / f"{FLAT}.png") as image:
        assert tuple(flat) == (0, 0, *image.size, 1)


@pytest.mark.slow
def test_pad_and_square_stores_are_never_mixed_but_a_cropped_query_store_is_the_recipe(photos, cropped):
    square = extract(photos / "m.csv", photos / "square", lite0(["gem"], **SETTINGS))["gem"]
    meta = open_store(square).meta
    assert meta["resize"] == "square" and meta["crop"] == "none" and "pad_colour" not in meta
    assert not (square / CROPS_FILE).exists() and open_store(square).crops is None
    padded = extract(photos / "m.csv", photos / "padded", lite0(["gem"], resize="pad", pad_colour=(0, 0, 0),
                                                                **SETTINGS))["gem"]
    database = open_store(padded)
    with pytest.raises(BadInput, match="resize is 'square' but the database store .* has resize 'pad'"):
        check_same_extraction(database, open_store(square), f"the database store {padded}")
    check_same_extraction(database, open_store(cropped))  # queries cut to their object, the database whole
    assert not np.array_equal(np.load(padded / "features.npy"), np.load(cropped / "features.npy"))


def test_the_pad_fill_is_part_of_what_makes_stores_comparable(tmp_path):
    rows = np.eye(2, 4, dtype=np.float32)
    white = write_store(tmp_path / "white", ["a", "b"], rows, {"resize": "pad", "pad_colour": [255, 255, 255]})
    grey = write_store(tmp_path / "grey", ["a", "b"], rows, {"resize": "pad", "pad_colour": [128, 128, 128]})
    with pytest.raises(BadInput, match="pad_colour is \\[128, 128, 128\\]"):
        check_same_extraction(white, grey)
    square = write_store(tmp_path / "square", ["a", "b"], rows, {"resize": "square"})
    with pytest.raises(BadInput, match="resize is 'square'"):
        check_same_extraction(white, square)


@pytest.mark.slow
def test_a_resumed_or_sharded_cropped_run_records_the_same_boxes(photos, cropped):
    out = photos / "resumed"

    def stop(chunk):
        raise KeyboardInterrupt

    options = lite0(["gem"], resize="pad", pad_colour=(0, 0, 0), crop="salient", **SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        extract(photos / "m.csv", out, options, on_chunk=stop)
    resumed = extract(photos / "m.csv", out, options)["gem"]
    assert store_bytes(resumed) == store_bytes(cropped)
    assert (resumed / CROPS_FILE).read_bytes() == (cropped / CROPS_FILE).read_bytes()
    parts = []
    for i in (1, 2):
        extract(photos / "m.csv", photos / f"part{i}", lite0(["gem"], resize="pad", pad_colour=(0, 0, 0),
                                                              crop="salient", shard=(i, 2), **SETTINGS))
        parts.append(photos / f"part{i}")
    assert [open_store(p / "gem").meta["crop_counts"]["fallback"] for p in parts] == [0, 1]  # q2 is in shard 2
    merged = merge(parts, photos / "merged")["gem"]
    assert store_bytes(merged) == store_bytes(cropped)
    assert (merged / CROPS_FILE).read_bytes() == (cropped / CROPS_FILE).read_bytes()
    assert open_store(merged).meta["crop_counts"] == open_store(cropped).meta["crop_counts"]


@pytest.mark.slow
def test_the_command_line_writes_the_librarys_store(cli, photos, cropped):
    result = cli("extract", photos / "m.csv", "--pooling", "gem", "--size", "64", "--batch-size", "2",
                 "--workers", "0", "--threads", "1", "--device", "cpu", "--dtype", "float32",
                 "--resize", "pad", "--pad-colour", "0,0,0", "--crop", "salient", "--out", photos / "cli")
    assert result.code == 0, result.err
    assert store_bytes(photos / "cli" / "gem") == store_bytes(cropped)
    assert (photos / "cli" / "gem" / CROPS_FILE).read_bytes() == (cropped / CROPS_FILE).read_bytes()


@pytest.mark.parametrize("args, reason", [
    (("--resize", "pad", "--pad-colour", "1,2"), "--pad-colour must be R,G,B, three integers in [0, 255]"),
    (("--resize", "pad", "--pad-colour", "0,0,256"), "got '0,0,256'"),
    (("--resize", "pad", "--pad-colour", "-1,0,0"), "got '-1,0,0'"),
    (("--resize", "pad", "--pad-colour", "white"), "got 'white'"),
    (("--resize", "pad", "--pad-colour", "1.5,0,0"), "got '1.5,0,0'"),
    (("--pad-colour", "0,0,0"), "--pad-colour is the fill of --resize pad"),
    (("--resize", "letterbox"), "unknown resize 'letterbox'; choose from square, aspect, pad"),
    (("--crop", "yolo"), "unknown crop 'yolo'; choose from none, salient"),
    (("--crop", "salient", "--resize", "aspect"), "--crop salient needs --resize square or pad, not aspect"),
])
def test_the_command_line_refuses_bad_values_in_one_line(cli, tmp_path, args, reason):
    result = cli("extract", tmp_path / "m.csv", "--pooling", "gem", *args, "--out", tmp_path / "out")
    assert result.code == 2, result
    assert reason in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert list(tmp_path.iterdir()) == []


def test_a_config_gives_the_fill_as_an_array_and_is_checked_alike(tmp_path):
    from bpcr.pipeline.config import validate_config

    entry = {"name": "e", "backbone": "b", "poolings": ["gem"], "resize": "pad", "crop": "salient"}
    validate_config(tmp_path / "c.toml", {"prepare": {"demo": True}, "extract": [{**entry, "pad_colour": [0, 0, 0]}]})
    with pytest.raises(BadInput, match=r"\[extract e\] --pad-colour must be R,G,B.*got \[0, 0, 300\]"):
        validate_config(tmp_path / "c.toml", {"prepare": {"demo": True},
                                              "extract": [{**entry, "pad_colour": [0, 0, 300]}]})


# ---------------------------------------------------------------- crops.csv, read strictly


def stored(tmp_path, crops_text: str, meta: dict | None = None):
    store = write_store(tmp_path / "s", ["a", "b"], np.eye(2, 3, dtype=np.float32), meta or {})
    (store.path / CROPS_FILE).write_text(crops_text)
    return store.path


GOOD = "id,x0,y0,x1,y1,fallback\na,1,2,30,40,0\nb,0,0,50,60,1\n"


def test_a_stores_crops_are_read_with_it(tmp_path):
    store = open_store(stored(tmp_path, GOOD, {"crop": "salient", "crop_counts": {"cropped": 1, "fallback": 1}}))
    assert store.crops.tolist() == [[1, 2, 30, 40, 0], [0, 0, 50, 60, 1]]


@pytest.mark.parametrize("text, meta, reason", [
    ("id,x,y,w,h\na,1,2,30,40\nb,0,0,50,60\n", {}, "crops.csv:1: expected the header id,x0,y0,x1,y1,fallback"),
    ("id,x0,y0,x1,y1,fallback\na,1,2,30,40,0\n", {}, "holds 1 boxes for the store's 2 rows"),
    ("id,x0,y0,x1,y1,fallback\nb,0,0,50,60,1\na,1,2,30,40,0\n", {}, "crops.csv:2: box of 'b' where ids.txt's row 1"),
    ("id,x0,y0,x1,y1,fallback\na,1,2,30,40,0\nb,0,0,50,60\n", {}, "crops.csv:3: expected 6 cells"),
    ("id,x0,y0,x1,y1,fallback\na,30,2,1,40,0\nb,0,0,50,60,1\n", {}, "crops.csv:2: not a box"),
    ("id,x0,y0,x1,y1,fallback\na,1,2,30,40,0\nb,0,0,50,60,yes\n", {}, "crops.csv:3: x0,y0,x1,y1,fallback must be"),
    (GOOD, {"crop_counts": {"cropped": 2, "fallback": 0}}, "meta.json: crop_counts"),
])
def test_a_damaged_crops_file_is_refused_in_one_line(tmp_path, cli, text, meta, reason):
    path = stored(tmp_path, text, meta)
    with pytest.raises(BadInput) as info:
        open_store(path)
    assert reason in str(info.value) and "\n" not in str(info.value)
    result = cli("index", path, "--out", tmp_path / "index")
    assert result.code == 2 and reason in result.err and len(result.err.strip().splitlines()) == 1, result.err
