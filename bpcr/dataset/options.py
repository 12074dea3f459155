"""The options of ``bpcr prepare`` and of its ``--demo``, each declared once (:mod:`bpcr.options`): the CLI, a
config's ``[prepare]`` table and the range checks are derived from :class:`PrepareOptions` (a dataset's) and
:class:`DemoOptions` (the bundled synthetic demo's, :func:`bpcr.demo.prepare_demo`).

Nothing heavy is imported here (the CLI reads this at start-up): the decoding limit is spelled here and read back by
:mod:`bpcr.dataset.images` (``MAX_PIXELS = PrepareOptions.max_pixels``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bpcr.options import check, option
from bpcr.ranges import DEMO_QUERIES_MAX


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


def check_prepare_options(options: PrepareOptions | DemoOptions) -> None:
    """Refuse (BadInput) options out of their ranges, before any file is read or written."""
    check(options)
