"""bpcr.dataset.images: every messy image kind, generated here, with hand-checked pixels."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from bpcr.dataset.images import MAX_PIXELS, ImageError, check_image, load_rgb
from tests.helpers.images import noise, write_bomb_png


def test_plain_jpeg(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(noise(20, 30)).save(path, quality=90)
    info = check_image(path)
    assert (info.width, info.height, info.format, info.notes) == (30, 20, "JPEG", [])
    image = load_rgb(path)
    assert (image.mode, image.size) == ("RGB", (30, 20))


def test_zero_byte(tmp_path):
    path = tmp_path / "z.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="^zero-byte file$"):
        check_image(path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg_rejected(tmp_path, keep):
    whole = tmp_path / "whole.jpg"
    Image.fromarray(noise(64, 64)).save(whole, quality=95)
    data = whole.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageError, match="^truncated image data$"):
        check_image(path)
    with pytest.raises(ImageError, match="^truncated image data$"):
        load_rgb(path)


def test_png_behind_jpg_suffix_is_usable_and_noted(tmp_path):
    path = tmp_path / "p.jpg"
    pixels = noise(5, 7)
    Image.fromarray(pixels).save(path, format="PNG")
    info = check_image(path)
    assert info.format == "PNG"
    assert info.notes == ["PNG data behind .jpg suffix"]
    assert np.array_equal(np.asarray(load_rgb(path)), pixels)  # lossless: decoded by content


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "c.jpg"
    # C=0, M=255, Y=255, K=0 is pure red.
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=100)
    info = check_image(path)
    assert info.notes == ["CMYK converted"]
    image = load_rgb(path)
    assert image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r >= 250 and g <= 5 and b <= 5


def test_16bit_png_scaled_not_clipped(tmp_path):
    path = tmp_path / "g16.png"
    samples = np.array([[0, 4000, 8000, 65535]], dtype=np.uint16)
    Image.fromarray(samples).save(path)
    assert Image.open(path).mode == "I;16"
    image = load_rgb(path)
    # 4000/257 = 15.56 -> 16 and 8000/257 = 31.13 -> 31 (Pillow's convert would give 255).
    assert [image.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (16, 16, 16), (31, 31, 31), (255, 255, 255)]
    assert check_image(path).notes == ["I;16 scaled to 8-bit"]


def test_palette_with_transparency_composited_on_white(tmp_path):
    path = tmp_path / "pal.png"
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)  # red, but index 0 is fully transparent
    image.putpixel((1, 0), 1)  # opaque blue
    image.save(path, transparency=0)
    rgb = load_rgb(path)
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (0, 0, 255)
    assert check_image(path).notes == ["P transparency composited on white"]


def test_grayscale_and_gray_alpha(tmp_path):
    gray = tmp_path / "l.png"
    Image.new("L", (3, 3), 77).save(gray)
    assert load_rgb(gray).getpixel((1, 1)) == (77, 77, 77)
    assert check_image(gray).notes == []
    la = tmp_path / "la.png"
    pixels = np.array([[[100, 0], [100, 255], [0, 128]]], dtype=np.uint8)
    Image.fromarray(pixels, mode="LA").save(la)
    rgb = load_rgb(la)
    # alpha 0 -> white; 255 -> the gray; 128 over white: 255 * (1 - 128/255) = 127.
    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(255, 255, 255), (100, 100, 100), (127, 127, 127)]


def test_rgba_and_one_bit(tmp_path):
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.array([[[10, 20, 30, 0], [10, 20, 30, 255]]], dtype=np.uint8), mode="RGBA").save(rgba)
    rgb = load_rgb(rgba)
    assert [rgb.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (10, 20, 30)]
    one = tmp_path / "one.png"
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    bits.save(one)
    rgb = load_rgb(one)
    assert [rgb.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_exif_orientation_6_swaps_size_and_rotates(tmp_path):
    path = tmp_path / "phone.jpg"
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:10, :10] = (255, 0, 0)  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    info = check_image(path)
    assert (info.width, info.height) == (20, 40)
    assert info.notes == ["EXIF-rotated"]
    image = load_rgb(path)
    assert image.size == (20, 40)
    # Rotating clockwise carries the stored top-left corner to the top-right.
    assert image.getpixel((15, 4))[0] > 200 and image.getpixel((4, 4))[0] < 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.png"  # lossless, so pixels compare exactly
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(noise(3, 5, seed=orientation)).save(path, exif=exif)
    expected = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    image = load_rgb(path)
    assert image.size == ((3, 5) if orientation >= 5 else (5, 3))  # 5..8 swap width and height
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_invalid_orientation_ignored(tmp_path):
    path = tmp_path / "o9.jpg"
    exif = Image.Exif()
    exif[0x0112] = 9
    Image.fromarray(noise(3, 5)).save(path, exif=exif)
    info = check_image(path)
    assert (info.width, info.height, info.notes) == (5, 3, ["EXIF orientation 9 invalid, ignored"])


def test_decompression_bomb_rejected_from_header(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    write_bomb_png(path, 15000)
    assert path.stat().st_size < 100_000

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError) as caught:
        check_image(path)
    assert caught.value.reason == f"decompression bomb: 225000000 pixels > limit {MAX_PIXELS}"
    small = tmp_path / "small.png"
    write_bomb_png(small, 2000)
    with pytest.raises(ImageError, match=r"^decompression bomb: 4000000 pixels > limit 1000000$"):
        load_rgb(small, max_pixels=1_000_000)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match=r"^not an image"):
        check_image(path)


def test_corrupt_png_chunk(tmp_path):
    path = tmp_path / "bad.png"
    Image.fromarray(noise(16, 16)).save(path)
    data = bytearray(path.read_bytes())
    data[60:80] = b"\xff" * 20  # inside the compressed image data
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="^(corrupt image data|truncated image data)"):
        check_image(path)


def test_loaded_image_survives_file_close(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(noise(4, 4, seed=3)).save(path)
    image = load_rgb(path)
    assert np.array_equal(np.asarray(image), noise(4, 4, seed=3))


def _png(path, width: int, height: int, rows: int, interlace: int = 0) -> None:
    """An RGB PNG whose header says width x height and whose one zlib stream holds ``rows`` rows (all grey)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    data = zlib.compress((b"\x00" + b"\x80" * (3 * width)) * rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_png_with_fewer_rows_than_its_header_is_rejected(tmp_path):
    """Pillow fills the missing rows with black and raises nothing: a 9000 x 7000 header over one row."""
    _png(tmp_path / "big.png", 9000, 7000, rows=1)
    Image.open(tmp_path / "big.png").load()  # what the check exists for: no error from Pillow itself
    with pytest.raises(ImageError, match=r"truncated image data: the header says 9000x7000, the data holds about 1 rows"):
        check_image(tmp_path / "big.png")
    _png(tmp_path / "short.png", 40, 30, rows=29)
    with pytest.raises(ImageError, match="truncated image data"):
        load_rgb(tmp_path / "short.png")
    _png(tmp_path / "whole.png", 40, 30, rows=30)
    assert check_image(tmp_path / "whole.png").width == 40
    img = Image.fromarray(noise(30, 40))
    img.save(tmp_path / "adam7.png", interlace=1)  # interlaced: seven passes of rows, counted as such
    img.save(tmp_path / "plain.png")
    assert check_image(tmp_path / "adam7.png").height == 30 and check_image(tmp_path / "plain.png").height == 30
