"""The winners' preprocessing: ``--resize pad`` (a centred letterbox, then the resize) and ``--crop salient``
(the box of the salient object, or the whole image when nothing stands out)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bpcr.features import loader, preprocess
from bpcr.features.loader import PLAIN, decode_resized, decode_view
from bpcr.features.preprocess import CROP_MARGIN, CropBox, Preprocess, letterbox, salient_box

RED, WHITE = (255, 0, 0), (255, 255, 255)


def by_hand(image: Image.Image, colour, size: int) -> np.ndarray:
    """A straightforward PIL transcription of pad-then-resize: a square canvas of ``colour``, the image pasted
    centred (an odd extra row or column at the bottom or right), resized as the loader resizes."""
    w, h = image.size
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return np.asarray(canvas.resize((size, size), Image.BICUBIC, reducing_gap=3.0))


def save(tmp_path, pixels: np.ndarray, name: str = "image.png"):
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    return path


# ---------------------------------------------------------------- --resize pad


def test_pad_puts_a_4x2_image_between_white_rows_top_and_bottom():
    padded = np.asarray(letterbox(Image.new("RGB", (4, 2), RED)))
    expected = np.array([[WHITE] * 4, [RED] * 4, [RED] * 4, [WHITE] * 4], dtype=np.uint8)
    assert padded.shape == (4, 4, 3) and np.array_equal(padded, expected)


def test_pad_is_centred_with_the_odd_pixel_at_the_bottom_or_right():
    wide = np.asarray(letterbox(Image.new("RGB", (4, 1), RED)))  # 3 rows to add: 1 above, 2 below
    assert [tuple(row[0]) for row in wide] == [WHITE, RED, WHITE, WHITE]
    tall = np.asarray(letterbox(Image.new("RGB", (2, 5), RED)))  # 3 columns to add: 1 left, 2 right
    assert [tuple(px) for px in tall[0]] == [WHITE, RED, RED, WHITE, WHITE]
    square = Image.new("RGB", (3, 3), RED)
    assert letterbox(square) is square


@pytest.mark.parametrize("size", [4, 64])
def test_decoded_pad_is_the_plain_pil_transcription(tmp_path, size):
    path = save(tmp_path, np.full((2, 4, 3), RED, np.uint8))
    pixels = decode_resized(path, (size, size), preprocess=Preprocess(resize="pad"))
    assert pixels.shape == (size, size, 3)
    assert np.array_equal(pixels, by_hand(Image.new("RGB", (4, 2), RED), WHITE, size))
    if size == 4:  # no resampling at all: exactly the letterbox
        assert np.array_equal(pixels[[0, 3]], np.full((2, 4, 3), 255, np.uint8))
        assert np.array_equal(pixels[1:3], np.full((2, 4, 3), RED, np.uint8))


def test_decoded_pad_of_a_photo_like_image_with_a_colour(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (37, 90, 3), dtype=np.uint8)  # odd difference: 53 rows, 26 above, 27 below
    path = save(tmp_path, pixels)
    colour = (10, 200, 30)
    got = decode_resized(path, (48, 48), preprocess=Preprocess(resize="pad", pad_colour=colour))
    assert np.array_equal(got, by_hand(Image.fromarray(pixels), colour, 48))
    assert not np.array_equal(got, decode_resized(path, (48, 48), preprocess=Preprocess(resize="pad")))
    assert not np.array_equal(got, decode_resized(path, (48, 48)))  # square stretches instead


def test_pad_colour_fills_the_margins_exactly(tmp_path):
    path = save(tmp_path, np.full((10, 40, 3), RED, np.uint8))
    colour = (12, 34, 56)
    got = decode_resized(path, (40, 40), preprocess=Preprocess(resize="pad", pad_colour=colour))
    # 15 rows of fill above the image and 15 below; the resampling blends only the rows next to the image
    assert (got[:12] == colour).all() and (got[-12:] == colour).all()
    assert (got[17:23] == RED).all()


# ---------------------------------------------------------------- --crop salient


def object_on_plain_background(seed: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A dark textured 80 x 100 object on a plain light 400 x 300 background, and the object's box."""
    rng = np.random.default_rng(seed)
    pixels = np.full((300, 400, 3), 230, np.uint8)
    x0, y0, x1, y1 = 250, 120, 330, 220
    pixels[y0:y1, x0:x1] = rng.integers(0, 80, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    return pixels, (x0, y0, x1, y1)


def test_salient_crop_boxes_the_object_and_not_the_background():
    pixels, (ox0, oy0, ox1, oy1) = object_on_plain_background()
    box = salient_box(Image.fromarray(pixels))
    assert not box.fallback
    assert box.x0 <= ox0 and box.y0 <= oy0 and box.x1 >= ox1 and box.y1 >= oy1  # the whole object
    area = (box.x1 - box.x0) * (box.y1 - box.y0)
    assert area <= 0.35 * 400 * 300  # much smaller than the image (the object is 7% of it)
    assert box.x0 >= 150 and box.y1 <= 300  # the empty left half is left out


def test_salient_crop_is_deterministic_and_in_full_resolution_pixels():
    pixels, _ = object_on_plain_background(seed=1)
    image = Image.fromarray(pixels)
    assert salient_box(image) == salient_box(image)
    # the same image decoded at half size (a JPEG draft) gives its box in the full image's pixels
    half = image.resize((200, 150), Image.BOX)
    scaled = salient_box(half, full_size=(400, 300))
    full = salient_box(image)
    assert all(abs(a - b) <= 8 for a, b in zip(scaled.row()[:4], full.row()[:4]))


@pytest.mark.parametrize("kind", ["flat", "noisy flat", "tiny speck"])
def test_salient_crop_falls_back_to_the_whole_image_when_nothing_stands_out(kind):
    rng = np.random.default_rng(0)
    pixels = np.full((300, 400, 3), 200, np.uint8)
    if kind == "noisy flat":  # sensor noise on a blank wall: 2 grey levels of spread
        pixels = np.clip(pixels + rng.normal(0, 2, pixels.shape), 0, 255).astype(np.uint8)
    elif kind == "tiny speck":  # one 6 x 6 spot: the box would cover 0.03% of the image
        pixels[100:106, 100:106] = 0
    assert salient_box(Image.fromarray(pixels)) == CropBox(0, 0, 400, 300, True)


def test_the_box_grows_by_the_margin_within_the_image(monkeypatch):
    pixels = np.full((200, 300, 3), 230, np.uint8)
    pixels[5:105, 5:105] = np.random.default_rng(2).integers(0, 60, (100, 100, 3), dtype=np.uint8)
    box = salient_box(Image.fromarray(pixels))
    monkeypatch.setattr(preprocess, "CROP_MARGIN", 0.0)
    tight = salient_box(Image.fromarray(pixels))
    assert tight.x0 <= 5 and tight.y0 <= 5 and tight.x1 >= 105 and tight.y1 >= 105 and not tight.fallback
    assert tight.x1 < 200  # an object near one side does not light up the opposite side (mirrored borders)
    mx, my = round(CROP_MARGIN * 300), round(CROP_MARGIN * 200)  # a share of the image's width and height
    assert box == CropBox(max(0, tight.x0 - mx), max(0, tight.y0 - my), min(300, tight.x1 + mx),
                          min(200, tight.y1 + my), False)
    assert (box.x0, box.y0) == (0, 0)  # clipped to the image


def test_decode_with_crop_cuts_the_box_then_resizes(tmp_path):
    pixels, _ = object_on_plain_background()
    path = save(tmp_path, pixels)
    got, box = decode_view(path, (64, 64), preprocess=Preprocess(crop="salient"))
    assert box == salient_box(Image.fromarray(pixels)) and not box.fallback
    cut = Image.fromarray(pixels).crop((box.x0, box.y0, box.x1, box.y1))
    assert np.array_equal(got, np.asarray(cut.resize((64, 64), Image.BICUBIC, reducing_gap=3.0)))
    padded, same = decode_view(path, (64, 64), preprocess=Preprocess(resize="pad", crop="salient"))
    assert same == box and np.array_equal(padded, by_hand(cut, WHITE, 64))  # cut first, then letterboxed


def test_a_flat_image_is_decoded_whole_with_the_fallback_recorded(tmp_path):
    path = save(tmp_path, np.full((30, 50, 3), 90, np.uint8))
    got, box = decode_view(path, (32, 32), preprocess=Preprocess(crop="salient"))
    assert box == CropBox(0, 0, 50, 30, True) and box.row() == (0, 0, 50, 30, 1)
    assert np.array_equal(got, decode_resized(path, (32, 32)))


def test_without_crop_no_saliency_is_computed(tmp_path, monkeypatch):
    """--crop none (the default) decodes exactly as before the option: no saliency, no box."""
    def forbidden(*args, **kwargs):
        raise AssertionError("saliency computed without --crop salient")

    monkeypatch.setattr(preprocess, "salient_box", forbidden)
    path = save(tmp_path, object_on_plain_background()[0])
    for resize in ("square", "aspect", "pad"):
        _, box = decode_view(path, (32, 32), preprocess=Preprocess(resize=resize))
        assert box is None
    assert np.array_equal(decode_view(path, (32, 32), preprocess=PLAIN)[0],
                          np.asarray(Image.open(path).convert("RGB").resize((32, 32), Image.BICUBIC, reducing_gap=3.0)))


def test_the_loader_carries_each_rows_box_and_skips_unreadable_rows(tmp_path):
    pixels, _ = object_on_plain_background()
    blank = np.full((30, 50, 3), 9, np.uint8)
    paths = [save(tmp_path, pixels, "a.png"), tmp_path / "gone.png", save(tmp_path, blank, "c.png")]
    images = loader._Images(paths, [(32, 32)] * 3, None, preprocess=Preprocess(crop="salient"))
    batch = images.batch([0, 1, 2])
    assert batch.rows == [0, 2] and list(batch.failed) == [1]
    assert batch.crops.dtype == np.int64 and batch.crops.shape == (2, 5)
    assert tuple(batch.crops[0]) == salient_box(Image.fromarray(pixels)).row()
    assert tuple(batch.crops[1]) == (0, 0, 50, 30, 1)
    assert loader._Images(paths[:1], [(32, 32)], None).batch([0]).crops is None  # no crop, no boxes


@pytest.mark.slow
def test_decoding_processes_return_the_same_boxes(tmp_path):
    import torch

    paths = [save(tmp_path, object_on_plain_background(seed)[0], f"{seed}.png") for seed in range(3)]
    plan = dict(paths=paths, shapes=[(32, 32)] * 3, batches=[[0, 1], [2]], saliency=None,
                dev=torch.device("cpu"), preprocess=Preprocess(resize="pad", crop="salient"))
    here = [b.crops.tolist() for b in loader.batch_loader(workers=0, **plan)]
    apart = [b.crops.tolist() for b in loader.batch_loader(workers=1, **plan)]
    assert here == apart == [[list(salient_box(Image.open(p)).row()) for p in paths[:2]],
                             [list(salient_box(Image.open(paths[2])).row())]]
