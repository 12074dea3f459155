"""The demo's messy files: what a careful reader must survive, always among the distractors.

Zero bytes, a truncated JPEG, a PNG behind a ``.jpg`` name, CMYK, 16-bit grey, palette, grayscale, RGBA, an
EXIF-rotated JPEG and a decompression bomb. Some decode with care; a reader must reject the others.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from bpcr.demo.drawing import product_sprite
from bpcr.demo.photo import encode_jpeg, shop_image

# name -> (extension, usable after careful decoding)
MESSY_KINDS = {
    "zero_byte": (".jpg", False),
    "truncated_jpeg": (".jpg", False),
    "png_named_jpg": (".jpg", True),
    "cmyk_jpeg": (".jpg", True),
    "gray16_png": (".png", True),
    "palette_png": (".png", True),
    "gray_jpeg": (".jpg", True),
    "rgba_png": (".png", True),
    "exif_rotated_jpeg": (".jpg", True),
    "decompression_bomb": (".png", False),
}
BOMB_SIDE = 15000  # 225 Mpx: beyond PIL's default bomb error limit (2 x 89.5 Mpx)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _bomb_png(side: int) -> bytes:
    """A valid 1-bit PNG of side x side pixels that deflates to a few tens of KB."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def messy_bytes(kind: str, spec: dict, rng: np.random.Generator) -> bytes:
    from PIL import Image

    if kind == "zero_byte":
        return b""
    if kind == "decompression_bomb":
        return _bomb_png(BOMB_SIDE)
    pixels = shop_image(spec, rng)
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if kind == "truncated_jpeg":
        full = encode_jpeg(pixels, 90)
        return full[: int(len(full) * rng.uniform(0.3, 0.6))]
    if kind == "exif_rotated_jpeg":
        return encode_jpeg(pixels, 90, 6)
    if kind == "cmyk_jpeg":
        image.convert("CMYK").save(buffer, "JPEG", quality=90)
    elif kind == "gray_jpeg":
        image.convert("L").save(buffer, "JPEG", quality=90)
    elif kind == "png_named_jpg":
        image.save(buffer, "PNG")
    elif kind == "gray16_png":
        gray = np.asarray(image.convert("L"), np.uint16) * 257
        Image.fromarray(gray).save(buffer, "PNG")
    elif kind == "palette_png":
        image.quantize(64, dither=Image.Dither.NONE).save(buffer, "PNG")
    elif kind == "rgba_png":
        rgb, alpha = product_sprite(spec)
        Image.fromarray(np.dstack([rgb, (alpha * 255).astype(np.uint8)])).save(buffer, "PNG")
    else:
        raise ValueError(f"unknown messy kind {kind!r}")
    return buffer.getvalue()
