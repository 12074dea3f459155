"""Safe image decoding shared by every stage that reads pixels.

Real product and phone photos arrive as truncated or zero-byte files, PNG bytes
behind a ``.jpg`` name, CMYK / 16-bit / palette / grayscale images, EXIF-rotated
photos and the occasional decompression bomb (DESIGN.md, "Dataset layout" and
"Safety"). :func:`load_rgb` turns every one of them into an 8-bit RGB image or
raises :class:`ImageError` with a short reason; :func:`check_image` runs the
same path and reports what it found, for ``bpcr prepare``.

Rules:

- The format is detected from the bytes, never from the suffix, and only
  formats in :data:`FORMATS` are opened (no EPS/PDF, which would start
  external interpreters, and no exotic decoders).
- The declared size is checked against ``max_pixels`` from the header, before
  any pixel is decoded.
- The whole image is decoded, so truncated data is an error (Pillow's
  ``LOAD_TRUNCATED_IMAGES`` must stay off; a truncated photo decodes to a grey
  band that silently poisons features).
- EXIF orientation is applied; width and height are reported after it.
- Transparency is composited on white, the background of e-commerce shots.
- 16-bit samples are scaled by 255/65535 with rounding (Pillow's own
  ``convert`` clips them to 255 instead).
"""
from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bpcr.dataset.options import PrepareOptions

# 64 megapixels admits full-resolution photos from 48-50 MP phone sensors
# (8000x6000, 8160x6120) and every e-commerce image, while one decoded RGB
# image stays under 200 MB per worker. 108 MP sensor output and crafted bombs
# (a few kilobytes of PNG declaring 15000x15000) are refused. Pillow's own
# hard limit (2 x Image.MAX_IMAGE_PIXELS, about 179 MP) also applies, and this
# default stays under its warning threshold (89 MP). Declared in bpcr.dataset.options (the CLI reads it there).
MAX_PIXELS = PrepareOptions.max_pixels

# Draft decoding (load_rgb_draft) stops at this many times the size a stage works at: SIFT's
# max_side, extraction's resized long side; the stage's own resize shrinks the rest of the way.
# Measured for SIFT with 40 generated 12 MP photos x top 50 (benchmarks/sift_fullsize.py data, bf,
# 384 px), mAP@7 public / private: full decode 0.561 / 0.529, margin 2 0.551 / 0.527, margin 1
# (the DCT scaling doing all of an up-to-8x reduction) 0.517 / 0.515.
DRAFT_MARGIN = 2

# Formats opened at all; anything else is "not a supported image".
FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "AVIF")

IMAGE_SUFFIXES = frozenset(
    suffix for suffix, fmt in Image.registered_extensions().items() if fmt in FORMATS
)
# registered_extensions() loaded every plugin; MPO is opened by the JPEG plugin and
# AVIF only exists where Pillow was built with it.
_OPENERS = tuple(fmt for fmt in FORMATS if fmt in Image.OPEN)

# MPO is how Pillow names multi-picture JPEGs from phones: same bytes family.
_SAME_FAMILY = {"MPO": "JPEG"}

# EXIF orientation -> the transpose that makes the image upright (as in ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error)


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is short and human-readable."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass
class ImageInfo:
    """What :func:`check_image` found: size after EXIF orientation, format, notes."""

    width: int
    height: int
    format: str
    notes: list[str] = field(default_factory=list)
    full_size: tuple[int, int] = (0, 0)  # upright (width, height) before a draft-mode reduction


def load_rgb(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an upright 8-bit RGB image, or raise :class:`ImageError`."""
    image, _ = _decode(Path(path), max_pixels)
    return image


def load_rgb_draft(path: Path, long_side: int, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`load_rgb`, with a big JPEG decoded at a reduced scale ("draft" mode).

    The decoder scales by 1/2, 1/4 or 1/8 in the DCT domain, the largest
    reduction that leaves the long side at least ``long_side``, and only when
    the stored long side is over twice ``long_side``: a 12 MP phone photo asked
    for 768 px decodes at 1000 x 750 instead of 4000 x 3000, in about a tenth
    of the time. Other formats, and smaller JPEGs, decode in full, exactly as
    :func:`load_rgb`. The pixels differ from a full decode's shrunk to the same
    size (the DCT's reduction is not the resampling filter's), so callers offer
    it as an option. The size checks are :func:`load_rgb`'s, on the stored
    size. Returns the image and the upright (width, height) a full decode has.
    """
    image, info = _decode(Path(path), max_pixels, draft=long_side)
    return image, info.full_size


def check_image(path: Path, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Fully decode ``path`` as :func:`load_rgb` would and describe it.

    Raises :class:`ImageError` for anything :func:`load_rgb` would refuse.
    """
    image, info = _decode(Path(path), max_pixels)
    info.width, info.height = image.size
    return info


def _decode(path: Path, max_pixels: int, draft: int | None = None) -> tuple[Image.Image, ImageInfo]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror}") from None
    if size == 0:
        raise ImageError("zero-byte file")
    try:
        with Image.open(path, formats=_OPENERS) as opened:
            width, height = opened.size
            if draft is not None:
                if width * height > max_pixels:  # on the stored size, before the draft shrinks it
                    raise ImageError(f"decompression bomb: {width * height} pixels > limit {max_pixels}")
                scale = draft / max(width, height, 1)
                if scale < 0.5:  # a no-op for formats without a draft mode
                    opened.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            stored = opened.size
            image, info = _decode_opened(path, opened, max_pixels)
            # EXIF orientation may have swapped the sides after decoding.
            info.full_size = (width, height) if image.size == stored else (height, width)
            # Closing the file also drops the pixels of the image it opened.
            return (opened.copy() if image is opened else image), info
    except Image.DecompressionBombError as exc:
        raise ImageError(_bomb_reason(str(exc), max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageError("not an image (or not a supported format)") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(_decode_reason(exc)) from None


def _decode_opened(path: Path, image: Image.Image, max_pixels: int) -> tuple[Image.Image, ImageInfo]:
    width, height = image.size
    pixels = width * height
    if pixels > max_pixels:
        raise ImageError(f"decompression bomb: {pixels} pixels > limit {max_pixels}")
    if pixels == 0:
        raise ImageError("image has zero width or height")
    fmt = image.format or "unknown"
    info = ImageInfo(width=width, height=height, format=fmt)
    expected = Image.registered_extensions().get(path.suffix.lower())
    if expected is not None and _SAME_FAMILY.get(fmt, fmt) != _SAME_FAMILY.get(expected, expected):
        info.notes.append(f"{fmt} data behind {path.suffix} suffix")
    if fmt in ("GIF", "PNG", "WEBP") and getattr(image, "is_animated", False):
        info.notes.append("animated, first frame used")
    image.load()
    if fmt == "PNG":
        _check_png_rows(path)
    upright = _exif_upright(image, info)
    return _to_rgb(upright, info), info


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _check_png_rows(path: Path) -> None:
    """Refuse a PNG whose image data holds fewer rows than its header claims.

    Pillow decodes such a file without an error when its zlib stream ends cleanly, and fills the missing
    rows with black: a header claiming 9000 x 7000 over one row of data would pass as a black image. The
    data of the first frame is inflated (and discarded) once more to count its bytes.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    pos, header, inflate, got = 8, None, zlib.decompressobj(), 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            got += len(inflate.decompress(body))
        elif kind in (b"fdAT", b"IEND"):  # the first frame's data is over
            break
        pos += 12 + length
    if header is None:
        return
    width, height, depth, colour, _, _, interlace = header
    bits = _PNG_CHANNELS.get(colour, 1) * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w and h:
            expected += h * (1 + (w * bits + 7) // 8)
    if got < expected:
        rows = got * height // max(expected, 1)
        raise ImageError(f"truncated image data: the header says {width}x{height}, the data holds about {rows} rows")


def _exif_upright(image: Image.Image, info: ImageInfo) -> Image.Image:
    try:
        orientation = image.getexif().get(0x0112, 1)
    except _DECODE_ERRORS + (KeyError, TypeError):
        # A damaged EXIF block is common in phone photos; the pixels are still fine.
        info.notes.append("EXIF unreadable, orientation ignored")
        return image
    if orientation in (None, 1):
        return image
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    if method is None:
        info.notes.append(f"EXIF orientation {orientation!r} invalid, ignored")
        return image
    info.notes.append("EXIF-rotated")
    # ImageOps.exif_transpose would also re-serialise the EXIF block, which
    # raises on the damaged blocks some phones write; only the pixels matter here.
    return image.transpose(method)


def _to_rgb(image: Image.Image, info: ImageInfo) -> Image.Image:
    mode = image.mode
    keyed = "transparency" in image.info and mode in ("P", "L", "RGB")
    if mode == "RGB" and not keyed:
        return image
    if mode.startswith("I;16") or mode == "I":
        # "I" comes from 16-bit PNM/TIFF files; its samples are treated as 16-bit too.
        info.notes.append(f"{mode} scaled to 8-bit")
        samples = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        gray = ((samples + 128) // 257).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        info.notes.append("F clipped to 8-bit")
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "CMYK":
        info.notes.append("CMYK converted")
        return image.convert("RGB")
    if keyed or mode in ("PA", "LA", "La", "RGBA", "RGBa"):
        info.notes.append(f"{mode} transparency composited on white")
        rgba = image.convert("RGBA") if mode != "La" else image.convert("LA").convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode not in ("L", "1", "P"):
        info.notes.append(f"{mode} converted")
    try:
        return image.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported image mode {mode}") from None


def _decode_reason(exc: BaseException) -> str:
    text = str(exc)
    if "truncated" in text.lower():
        return "truncated image data"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "cannot read: permission denied"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"corrupt image data: {first[:120]}"


def _bomb_reason(message: str, max_pixels: int) -> str:
    # Pillow's own hard limit fires inside Image.open, before we see the size.
    found = re.search(r"\((\d+) pixels\).*?limit of (\d+)", message)
    if not found:
        return "decompression bomb: declared size exceeds Pillow's limit"
    pixels, pillow_limit = int(found.group(1)), int(found.group(2))
    return f"decompression bomb: {pixels} pixels > limit {min(max_pixels, pillow_limit)}"
