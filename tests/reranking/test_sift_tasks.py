"""Decoding for SIFT (JPEG draft mode), the run's pack of descriptors and the matching task."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bpcr.reranking import sift
from bpcr.dataset.images import ImageError, load_rgb
from bpcr.reranking.sift_cache import SiftOptions
from bpcr.reranking.sift_tasks import MatchOptions, PackWriter, load_gray, match_task
from tests.helpers.label_images import keypoints_of, photo_of, textured


def _photo(path, width=1600, height=1200, exif_orientation=None, fmt="JPEG"):
    label = Image.fromarray(textured(21, 400, 300)[:, :, ::-1]).resize((width, height), Image.BICUBIC)
    kwargs = {"quality": 92} if fmt == "JPEG" else {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    label.save(path, fmt, **kwargs)
    return path


def test_draft_decoding_gives_the_full_decodes_size_and_nearly_its_pixels(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    path = _photo(tmp_path / "big.jpg")
    drafted = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = load_gray(path, SiftOptions(200, 250, jpeg_draft=True))
    assert drafted == [(400, 300)]  # 1/4 scale in the DCT domain (twice max_side), then INTER_AREA
    full = load_gray(path, SiftOptions(200, 250, jpeg_draft=False))
    assert fast.shape == full.shape == (150, 200) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3
    assert load_gray(path, SiftOptions(300, 250, jpeg_draft=True)).shape == (225, 300)  # 1/2 scale, then shrunk
    assert drafted[-1] == (800, 600)
    assert load_gray(path, SiftOptions(512, 250, jpeg_draft=True)).shape == (384, 512)
    assert len(drafted) == 2  # within four times max_side: decoded in full


def test_draft_decoding_follows_exif_orientation(tmp_path):
    path = _photo(tmp_path / "rotated.jpg", 1600, 1000, exif_orientation=6)
    fast = load_gray(path, SiftOptions(300, 250, jpeg_draft=True))
    full = load_gray(path, SiftOptions(300, 250, jpeg_draft=False))
    assert fast.shape == full.shape == (300, 188)  # upright portrait, sized from the full 1000 x 1600
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3


def test_small_images_and_other_formats_decode_exactly_as_before(tmp_path):
    for path in (_photo(tmp_path / "small.jpg", 380, 300), _photo(tmp_path / "big.png", 1200, 900, fmt="PNG")):
        for max_side in (256, 512):
            fast = load_gray(path, SiftOptions(max_side, 250, jpeg_draft=True))
            assert np.array_equal(fast, sift.to_gray(load_rgb(path), max_side))


def test_draft_decoding_refuses_what_load_rgb_refuses(tmp_path, monkeypatch):
    from bpcr.dataset import images

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    torn = tmp_path / "torn.jpg"
    torn.write_bytes(_photo(tmp_path / "whole.jpg").read_bytes()[:5000])
    for path in (junk, empty, torn, tmp_path / "missing.jpg"):
        with pytest.raises(ImageError) as expected:
            load_rgb(path)
        with pytest.raises(ImageError) as got:
            load_gray(path, SiftOptions(200, 250))
        assert got.value.reason == expected.value.reason
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)  # the full size counts, not the drafted one
    with pytest.raises(ImageError, match="decompression bomb: 1920000 pixels"):
        load_gray(tmp_path / "whole.jpg", SiftOptions(200, 250))


@pytest.mark.slow
@pytest.mark.parametrize("geometry", [False, True])
def test_match_task_is_the_same_on_numpy_and_torch_and_with_root_sift_from_the_pack(tmp_path, geometry):
    query = keypoints_of(photo_of(textured(30)))
    dbs = [keypoints_of(textured(s)) for s in (31, 30, 32)]
    results = {}
    for use_root in (False, True):
        folder = tmp_path / f"pack{use_root}"
        folder.mkdir()
        writer = PackWriter(folder, use_root)
        spans = [writer.add(kp) for kp in [query, *dbs]]
        pack = writer.close()
        back = pack.keypoints(spans)
        expected_desc = sift.root_sift(dbs[1].desc) if use_root else dbs[1].desc
        assert np.array_equal(back[2].desc, expected_desc) and np.array_equal(back[2].xy, dbs[1].xy)
        for device in (None, "cpu"):
            options = MatchOptions(ratio=0.8, matcher="bf", geometry=geometry, ransac_threshold=5.0, seed=0,
                                   device=device)
            query_id, pairs = match_task(("v0", spans[0], [spans[1], None, spans[2], spans[3]], pack, options))
            assert query_id == "v0" and pairs[1] == (0, 0.0)
            results[(use_root, device)] = pairs
    for use_root in (False, True):
        assert results[(use_root, None)] == results[(use_root, "cpu")]
        counts = [c for c, _ in results[(use_root, None)]]
        assert counts[2] == max(counts) and counts[2] > 20  # the pictured label wins, SIFT or RootSIFT
