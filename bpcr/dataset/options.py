"""The options of ``bpcr prepare`` and of its ``--demo``, each declared once (:mod:`bpcr.options`): the CLI, a
config's ``[prepare]`` table and the range checks are derived from :class:`PrepareOptions` (a dataset's),
:class:`PresizeOptions` (its opt-in pre-sized image cache, :mod:`bpcr.dataset.presize`) and :class:`DemoOptions`
(the bundled synthetic demo's, :func:`bpcr.demo.prepare_demo`).

Nothing heavy is imported here (the CLI reads this at start-up): the decoding limit is spelled here and read back by
:mod:`bpcr.dataset.images` (``MAX_PIXELS = PrepareOptions.max_pixels``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bpcr.errors import BadInput
from bpcr.options import check, comma_integers, fields_of, option
from bpcr.ranges import DEMO_QUERIES_MAX, INPUT_SIZE_MAX, INPUT_SIZE_MIN, SIFT_SIDE

# --presize sizes are network input sizes: bpcr extract's --size range (tests/dataset/test_presize.py holds them equal).
PRESIZE_MIN, PRESIZE_MAX = INPUT_SIZE_MIN, INPUT_SIZE_MAX  # extract's --size range
PRESIZE_FORMATS = ("jpeg", "png")


def _workers() -> Any:
    """The processes that check images (and, with ``--demo``, render them first): prepare's and the demo's alike."""
    return option(None, "Decoding processes (with --demo: rendering, then decoding); default: one per CPU.",
                  low=1, integer=True)


@dataclass(frozen=True)
class PrepareOptions:
    """How ``bpcr prepare`` checks a dataset's images (:func:`bpcr.dataset.prepare.prepare`, and
    :func:`~bpcr.dataset.prepare.prepare_queries` for ``bpcr predict``'s new queries): ``workers`` processes
    decode them, and an image of more than ``max_pixels`` pixels is refused (a config's option; 64 MP holds every
    phone photo while one decoded image stays under 200 MB per worker). Every field's help says the rest.
    """

    workers: int | None = _workers()
    max_pixels: int = option(64_000_000, "Refuse images of more pixels than this (decompression bombs, 108 MP "
                                         "sensor output).", low=1, integer=True, flag="max_pixels", cli=False)


@dataclass(frozen=True)
class PresizeOptions:
    """``bpcr prepare``'s pre-sized image cache (:mod:`bpcr.dataset.presize`), off unless ``presize`` names the
    network input sizes it serves: every usable image is decoded once and kept, shrunk so that its shorter side is
    the largest of them (and its longer side at least ``presize_sift_side``, SIFT's working size), as
    ``presize_format`` (JPEG at ``presize_quality``, or lossless PNG). Separate from :class:`PrepareOptions`, whose
    defaults stay what they were. Every field's help says the rest.
    """

    presize: tuple[int, ...] = option((), "Network input sizes (comma-separated, e.g. 224,240,260) a pre-sized image "
                                          "cache serves: each image is decoded once and stored with its shorter side "
                                          "shrunk to the largest of them; bpcr extract then reads the cache. Off by "
                                          "default.", cli=False, metavar="SIZE[,SIZE...]")
    presize_sift_side: int = option(SIFT_SIDE, "With --presize: keep each image's longer side at least this (SIFT "
                                         "re-ranking's working size, bpcr rerank --max-side).", low=PRESIZE_MIN,
                                    high=PRESIZE_MAX, integer=True)
    presize_format: str = option("jpeg", "With --presize: how cached images are stored: jpeg (at "
                                         "--presize-quality, 4:4:4) or png (lossless, about 5x the bytes).",
                                 choices=PRESIZE_FORMATS)
    presize_quality: int = option(95, "With --presize and jpeg: the JPEG quality.", low=1, high=100, integer=True)

    @property
    def enabled(self) -> bool:
        return bool(self.presize)


@dataclass(frozen=True)
class DemoOptions:
    """What ``bpcr prepare --demo`` generates (:func:`bpcr.demo.prepare_demo`, the model in :mod:`bpcr.demo`):
    ``n_products`` target products (1-6 shop images each), ``n_distractors`` other database images and
    ``n_queries`` query photos, every file drawn from ``seed`` and its own index; ``workers`` processes render
    and then check the images. Every field's help says the rest.
    """

    seed: int = option(0, "Seed of the demo dataset (with --demo).", low=0, integer=True)
    n_products: int = option(200, "Demo: target products (1-6 shop images each).", low=1, integer=True)
    n_distractors: int = option(2500, "Demo: distractor database images.", low=0, integer=True)
    n_queries: int = option(200, "Demo: query photos (IDs v000000-v999999).", low=1, high=DEMO_QUERIES_MAX,
                            integer=True)
    workers: int | None = _workers()


def check_prepare_options(options: PrepareOptions | DemoOptions | PresizeOptions) -> None:
    """Refuse (BadInput) options out of their ranges, before any file is read or written."""
    check(options)
    if isinstance(options, PresizeOptions):
        _check_sizes(options.presize, options.presize)


# name -> field of every presize option (the command line spells --presize itself, with this field's help).
PRESIZE_FIELDS = {f.name: f for f in fields_of(PresizeOptions)}


def parse_presize(text: str) -> tuple[int, ...]:
    """``"224,240"`` (the command line's --presize) -> (224, 240), checked as :func:`check_prepare_options` does."""
    sizes = comma_integers(text)
    _check_sizes(sizes, text)
    return sizes  # type: ignore[return-value]


def _check_sizes(sizes: object, shown: object) -> None:
    if not isinstance(sizes, (tuple, list)):
        ok = False
    else:
        ok = all(isinstance(s, int) and not isinstance(s, bool) and PRESIZE_MIN <= s <= PRESIZE_MAX for s in sizes)
    if not ok:
        raise BadInput(None, None, f"--presize must be network input sizes in pixels, integers in [{PRESIZE_MIN}, "
                                   f"{PRESIZE_MAX}] separated by commas (e.g. 224,240), got {shown!r}")
